"""Staff accounts made with `run.py user create` (a process against the test servers and the tests'
keys) sign in with `auth.login` like everyone else; the protocol never creates them."""

import os
import uuid

from protocol.admin import LogList
from protocol.auth import Auth, Login, Register
from protocol.orders import Customer
from tests.processes import run_command
from tests.world import order_at, refused, spot

PASSWORD = "staff password 123"


def email() -> str:
    return f"Staff.{uuid.uuid4().hex[:10]}@Example.com"


async def create(servers, key_dir, *args: str, password: str | None = PASSWORD) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "STAFF_PASSWORD"}
    env |= {"DATABASE_URL": servers[0], "KEY_DIR": str(key_dir)}
    if password is not None:
        env["STAFF_PASSWORD"] = password
    return await run_command("user", "create", *args, env=env)


async def test_an_admin_created_on_the_command_line_logs_in_as_admin(gateway, servers, key_dir, connect):
    address = email()
    status, output = await create(servers, key_dir, "--role", "admin", "--email", address, "--name", "Ada Admin")
    assert status == 0, output
    client = await connect()
    tokens = await client.request(Login(email=address.lower(), password=PASSWORD))
    assert tokens.role == "admin" and tokens.user_id in output
    session = await client.request(Auth(token=tokens.token))
    assert session.role == "admin"
    entries = (await client.request(LogList(actor_id=tokens.user_id))).entries  # admins only
    assert [e.action for e in entries][-1:] == ["auth"]  # its own sign-in, logged as staff
    assert (await refused(client, Login(email=address, password="wrong password"))).code == "unauthorized"


async def test_the_same_e_mail_twice_is_refused(gateway, servers, key_dir, connect):
    address = email()
    assert (await create(servers, key_dir, "--role", "admin", "--email", address, "--name", "First"))[0] == 0
    status, output = await create(servers, key_dir, "--role", "merchant", "--email", address.upper(),
                                  "--name", "Second")
    assert status == 1 and "already exists" in output
    client = await connect()
    assert (await client.request(Login(email=address, password=PASSWORD))).role == "admin"
    # nor can anyone register it, or register as staff at all
    taken = await refused(client, Register(email=address, password=PASSWORD, role="consumer", name="X"))
    assert taken.code == "conflict"
    reply, _ = await client.call("auth.register", {"email": email(), "password": PASSWORD, "role": "admin",
                                                   "name": "Mallory"})
    assert reply["code"] == "bad_request"


async def test_a_merchant_with_brands_orders_for_a_customer_after_logging_in(gateway, servers, key_dir, connect,
                                                                              tmp_path):
    address = email()
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    status, output = await create(servers, key_dir, "--role", "merchant", "--email", address, "--name", "Mo",
                                  "--brand", "whirlpool", "--brand", "lg", "--password-file", str(secret),
                                  password=None)
    assert status == 0 and "whirlpool" in output, output
    client = await connect()
    tokens = await client.request(Login(email=address, password=PASSWORD))
    await client.request(Auth(token=tokens.token))
    created = await client.request(order_at(spot(), customer=Customer(name="Cy", phone="+1 555 0100",
                                                                      email=f"c-{uuid.uuid4().hex[:8]}@example.com")))
    assert created.order.brand == "whirlpool" and created.claim_code


async def test_bad_input_is_refused_and_creates_nothing(gateway, servers, key_dir, connect):
    address = email()
    for args, words in [(("--role", "merchant", "--brand", "no-such-brand"), "unknown brand"),
                        (("--role", "admin", "--brand", "whirlpool"), "merchants only"),
                        (("--role", "admin", "--email", "not-an-email"), "e-mail is not valid")]:
        status, output = await create(servers, key_dir, "--email", address, "--name", "N", *args)
        assert status == 1 and words in output, output
    status, output = await create(servers, key_dir, "--role", "admin", "--email", address, "--name", "N",
                                  password="short")
    assert status == 1 and "password" in output
    status, output = await create(servers, key_dir, "--role", "admin", "--email", address, "--name", "N",
                                  password=None)
    assert status == 2 and "STAFF_PASSWORD" in output
    client = await connect()
    assert (await refused(client, Login(email=address, password=PASSWORD))).code == "unauthorized"
