"""Sign-up, log-in, refresh rotation and session authentication, over real websockets."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from handlers.accounts.tokens import TokenIssuer
from protocol.auth import Auth, Login, Logout, Ping, Refresh, Register
from protocol.client import ErrorReply
from tests.conftest import SECRET, mint


def email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def test_register_then_login_then_auth(connect):
    client = await connect()
    address = email()
    registered = await client.request(Register(email=address, password="correct horse", role="technician",
                                               name="Tess", phone="+1 555 010 2000", locale="es-MX"))
    assert registered.role == "technician"
    logged_in = await client.request(Login(email=address.upper(), password="correct horse"))
    assert logged_in.user_id == registered.user_id
    session = await client.request(Auth(token=logged_in.token))
    assert (session.user_id, session.role, session.locale) == (registered.user_id, "technician", "es")


async def test_duplicate_email_is_a_conflict(connect):
    client = await connect()
    address = email()
    await client.request(Register(email=address, password="password1", role="consumer", name="A"))
    with pytest.raises(ErrorReply) as caught:
        await client.request(Register(email=address.upper(), password="password2", role="consumer", name="B"))
    assert caught.value.code == "conflict"


async def test_wrong_password_and_unknown_email_get_the_same_answer(connect):
    client = await connect()
    address = email()
    await client.request(Register(email=address, password="password1", role="consumer", name="A"))
    answers = []
    for attempt in (Login(email=address, password="password2"), Login(email=email(), password="password1")):
        with pytest.raises(ErrorReply) as caught:
            await client.request(attempt)
        answers.append((caught.value.code, caught.value.error.message))
    assert answers[0] == answers[1] == ("unauthorized", "Wrong e-mail or password.")


async def test_register_refuses_staff_roles_and_bad_fields(connect):
    client = await connect()
    for frame in ({"email": email(), "password": "password1", "role": "admin", "name": "Eve"},
                  {"email": "not-an-email", "password": "password1", "role": "consumer", "name": "Eve"},
                  {"email": email(), "password": "short", "role": "consumer", "name": "Eve"}):
        reply, _ = await client.call("auth.register", frame)
        assert reply["code"] == "bad_request"


async def test_refresh_rotates_and_reuse_revokes_the_family(connect):
    client = await connect()
    first = await client.request(Register(email=email(), password="password1", role="consumer", name="R"))
    second = await client.request(Refresh(refresh_token=first.refresh_token))
    assert second.user_id == first.user_id and second.refresh_token != first.refresh_token
    await client.request(Auth(token=second.token))
    # The spent token again: a thief or a replay. Both it and its successor stop working.
    with pytest.raises(ErrorReply) as caught:
        await client.request(Refresh(refresh_token=first.refresh_token))
    assert caught.value.code == "unauthorized"
    with pytest.raises(ErrorReply):
        await client.request(Refresh(refresh_token=second.refresh_token))


async def test_logout_revokes_the_refresh_token(connect):
    client = await connect()
    tokens = await client.request(Register(email=email(), password="password1", role="consumer", name="L"))
    await client.request(Logout(refresh_token=tokens.refresh_token))
    with pytest.raises(ErrorReply) as caught:
        await client.request(Refresh(refresh_token=tokens.refresh_token))
    assert caught.value.code == "unauthorized"


async def test_forged_expired_and_garbage_tokens_are_refused(gateway, connect):
    client = await connect()
    forged, _ = TokenIssuer("another-secret-" * 4, timedelta(hours=1), timedelta(days=1)).mint("mallory", "admin")
    expired, _ = TokenIssuer(SECRET, timedelta(hours=1), timedelta(days=1)).mint(
        "alice", "admin", ttl=timedelta(seconds=-5))
    for token in (forged, expired, "garbage", ""):
        with pytest.raises(ErrorReply) as caught:
            await client.request(Auth(token=token))
        assert caught.value.code == "unauthorized"
    # Still not signed in: a protected operation is refused, ping is not.
    reply, _ = await client.call("admin.notify", {"user_id": "x", "text": "hi"})
    assert reply["code"] == "unauthorized"
    assert (await client.request(Ping())).server_time <= datetime.now(UTC)


async def test_a_connection_cannot_switch_users(gateway, connect):
    client = await connect()
    _, first = mint(gateway, "consumer")
    _, second = mint(gateway, "consumer")
    await client.request(Auth(token=first))
    with pytest.raises(ErrorReply) as caught:
        await client.request(Auth(token=second))
    assert caught.value.code == "forbidden"
