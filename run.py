"""dispatch-gateway: the one entry point.

    python run.py [serve]            run the gateway (embedded PostgreSQL and Redis by default)
    python run.py token --role admin --sub alice
    python run.py console            the protocol debug console
    python run.py load               the load generator: technicians streaming positions
    python run.py migrate            apply database migrations
    python run.py keys rotate [--new-kek]  a new data key (or key-encryption key); old values stay readable
    python run.py keys encrypt-existing  seal what older versions stored in plaintext
    python run.py user create --role admin --email E --name N  a staff account (password: see --help)
    python run.py schema             write docs/asyncapi.yaml
    python run.py reset [--yes] [--keys]  wipe the embedded data (DATA_DIR) for a fresh start
"""

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

from gateway import config as configuration
from gateway.config import Config, ConfigError

COMMON = ("data_dir", "database_url", "redis_url", "secret", "log_level", "log_format")
GUIDE = Path(__file__).resolve().parent / "docs" / "protocol.md"  # its example frames go into the schema


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="run.py", description="dispatch-gateway: realtime back end of an "
                                  "on-demand home-repair service.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway (default)",
                           description="Run the websocket gateway on ws://HOST:PORT/ws. With no DATABASE_URL/"
                           "REDIS_URL it starts embedded PostgreSQL and Redis under --data-dir.")
    configuration.add_flags(serve)

    token = sub.add_parser("token", help="mint a session token", description="Print a signed session token "
                           "(its last line of output).")
    configuration.add_flags(token, ("data_dir", "secret", "token_ttl_s"))
    token.add_argument("--role", required=True, choices=["consumer", "technician", "merchant", "admin"])
    token.add_argument("--sub", required=True, help="subject: the user id")
    token.add_argument("--locale", default="en")

    console = sub.add_parser("console", help="the protocol debug console",
                             description="Connect to a gateway and send frames interactively or from a script.")
    configuration.add_flags(console, ("data_dir", "secret", "idle_timeout_s"))
    console.add_argument("--url", default=None, help="gateway URL (default ws://GATEWAY_HOST:GATEWAY_PORT/ws)")
    console.add_argument("--token", help="session token to `auth` with")
    console.add_argument("--role", choices=["consumer", "technician", "merchant", "admin"],
                         help="mint a token for this role (needs the secret)")
    console.add_argument("--sub", help="subject of the minted token", default="console")
    console.add_argument("--locale", default=None)
    console.add_argument("--msgpack", action="store_true", help="use the dispatch.v1.msgpack subprotocol")
    console.add_argument("--script", type=Path, help="run the frames in FILE, exit non-zero on an error reply")
    console.add_argument("--full", action="store_true", help="print orders with every field (:full), not one line")

    load = sub.add_parser("load", help="the load generator",
                          description="Simulated technicians go on duty and stream location updates (consumers "
                          "create orders) against a gateway; live progress, then a summary of throughput and "
                          "acknowledgement latency.")
    configuration.add_flags(load, ("data_dir", "secret"))
    load.add_argument("--url", default=None, help="gateway URL, or several separated by commas (a fleet: sessions "
                      "spread over them and reconnect to the next) (default ws://GATEWAY_HOST:GATEWAY_PORT/ws)")
    load.add_argument("--technicians", type=int, default=100, metavar="N",
                      help="sessions streaming positions (default %(default)s)")
    load.add_argument("--duration", type=float, default=60.0, metavar="SECONDS",
                      help="then a clean stop (default %(default)g)")
    load.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                      help="between a technician's updates, starts spread over it (default %(default)g)")
    load.add_argument("--max", action="store_true", help="updates as fast as acknowledged, --window in flight")
    load.add_argument("--window", type=int, default=8, help="updates in flight per session with --max (default 8)")
    load.add_argument("--ramp", type=float, default=0.0, metavar="SECONDS",
                      help="spread connection setup over this (default %(default)g)")
    load.add_argument("--city", default="40.7128,-74.0060", metavar="LAT,LNG",
                      help="centre of the walks (default %(default)s, New York)")
    load.add_argument("--spread-km", type=float, default=20.0, help="radius of the walks (default %(default)g)")
    load.add_argument("--consumers", type=int, default=0, metavar="M",
                      help="sessions creating orders (default %(default)s)")
    load.add_argument("--order-interval", type=float, default=10.0, metavar="SECONDS",
                      help="between a consumer's orders (default %(default)g)")
    load.add_argument("--processes", type=int, default=None, metavar="P",
                      help="worker processes (default: one per 5,000 sessions)")
    load.add_argument("--id-prefix", default=None, metavar="PREFIX",
                      help="user ids are PREFIX-tech-I and PREFIX-cons-I (default load-RANDOM)")
    load.add_argument("--json", type=Path, metavar="PATH", help="also write the summary as JSON")
    load.add_argument("--quiet", action="store_true", help="a progress line every few seconds, no live table")

    migrate = sub.add_parser("migrate", help="apply database migrations",
                             description="Apply pending SQL migrations (embedded PostgreSQL if no DATABASE_URL).")
    configuration.add_flags(migrate, ("data_dir", "database_url"))

    keys = sub.add_parser("keys", help="rotate encryption keys, seal old plaintext",
                          description="Key management against the database (embedded PostgreSQL if no DATABASE_URL); "
                          "safe while gateways serve.")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    rotate = key_commands.add_parser("rotate", help="a new data key: new writes use it, old values stay readable")
    rotate.add_argument("--new-kek", action="store_true",
                        help="instead: a new key-encryption key, every data key re-wrapped under it, the old one "
                        "removed")
    rotate.add_argument("--kek-out", type=Path, default=None,
                        help="with --new-kek and KEK from the environment: a new file (0600) for the new key")
    sealing = key_commands.add_parser("encrypt-existing", help="seal values stored in plaintext by older versions")
    for command in (rotate, sealing):
        configuration.add_flags(command, ("data_dir", "database_url", "key_dir", "kek"))

    user = sub.add_parser("user", help="create staff accounts",
                          description="Staff accounts (admins, merchants) against the database (embedded PostgreSQL "
                          "if no DATABASE_URL); they sign in with auth.login and are never self-registered.")
    user_commands = user.add_subparsers(dest="user_command", metavar="USER_COMMAND", required=True)
    create = user_commands.add_parser(
        "create", help="a new admin or merchant account",
        description="The password comes from --password-file, else the environment variable STAFF_PASSWORD, "
        "else a prompt (twice) on a terminal.")
    create.add_argument("--role", required=True, choices=["admin", "merchant"])
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--brand", action="append", default=[], metavar="BRAND",
                        help="merchants: a brand they are a member of (repeat for several)")
    create.add_argument("--password-file", type=Path, default=None,
                        help="a file holding the password (its first line)")
    configuration.add_flags(create, ("data_dir", "database_url", "key_dir", "kek"))

    reset = sub.add_parser("reset", help="wipe the embedded data for a fresh start",
                           description="Delete DATA_DIR: the embedded PostgreSQL and Redis data, the generated "
                           "token secret, the attachments and the console's history, after a confirmation. "
                           "KEY_DIR stays unless --keys (a kept key folder serves the new, empty database). "
                           "A DATABASE_URL or REDIS_URL server is never touched.")
    configuration.add_flags(reset, ("data_dir", "key_dir", "kek"))
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.add_argument("--keys", action="store_true", help="also delete KEY_DIR, the key-encryption keys")

    schema = sub.add_parser("schema", help="write the AsyncAPI document",
                            description="Write the AsyncAPI 3 document generated from the protocol types.")
    configuration.add_flags(schema, ("data_dir",))
    schema.add_argument("--output", type=Path, default=Path("docs/asyncapi.yaml"))
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "serve"
    try:
        config = configuration.load(flags=args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if command == "serve":
        from gateway import logs, supervisor

        logs.setup(config.log_level, config.log_format)
        return supervisor.serve(config)
    if command == "token":
        return token(config, args)
    if command == "console":
        from clients import console

        return console.main(config, args)
    if command == "load":
        from clients import load

        return load.main(config, args)
    if command == "migrate":
        return migrate(config)
    if command == "keys":
        return keys(config, args)
    if command == "user":
        return user(config, args)
    if command == "reset":
        return reset(config, args)
    if command == "schema":
        from protocol.schema import write

        write(args.output, roles(), error_codes(), GUIDE.read_text(encoding="utf-8"))
        print(f"wrote {args.output}")
        return 0
    raise AssertionError(command)


def token(config: Config, args: argparse.Namespace) -> int:
    from gateway.app import token_issuer

    try:
        value, expires_at = token_issuer(config, create_secret=False).mint(args.sub, args.role, args.locale)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"# {args.role} {args.sub}, expires {expires_at.isoformat()}", file=sys.stderr)
    print(value)
    return 0


def migrate(config: Config) -> int:
    from storage.db import connect_postgres
    from storage.embedded import EmbeddedPostgres
    from storage.migrate import migrate as apply

    embedded = EmbeddedPostgres(config.data_dir.absolute() / "postgres")
    url = config.database_url or embedded.start()

    async def go() -> list[str]:
        pool = await connect_postgres(url, 1)
        try:
            async with pool.acquire() as conn:
                return await apply(conn)
        finally:
            await pool.close()

    try:
        applied = asyncio.run(go())
    finally:
        embedded.stop()
    print("applied: " + (", ".join(applied) if applied else "nothing, up to date"))
    return 0


def keys(config: Config, args: argparse.Namespace) -> int:
    from gateway import keytool
    from gateway.app import StartupError
    from storage.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(config.data_dir.absolute() / "postgres")
    url = config.database_url or embedded.start()
    try:
        if args.keys_command == "rotate":
            print("\n".join(asyncio.run(keytool.rotate(config, url, args.new_kek, args.kek_out))))
        else:
            print(asyncio.run(keytool.seal_existing(config, url)))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        embedded.stop()
    return 0


def staff_password(args: argparse.Namespace) -> str | None:
    if args.password_file is not None:
        lines = args.password_file.read_text().splitlines()
        return lines[0] if lines else ""
    if os.environ.get("STAFF_PASSWORD"):
        return os.environ["STAFF_PASSWORD"]
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("password: ")
    return first if getpass.getpass("again: ") == first else None


def user(config: Config, args: argparse.Namespace) -> int:
    from gateway import usertool
    from gateway.app import StartupError
    from storage.embedded import EmbeddedPostgres

    password = staff_password(args)
    if password is None:
        print("error: no password: give --password-file, set STAFF_PASSWORD or type it twice on a terminal",
              file=sys.stderr)
        return 2
    embedded = EmbeddedPostgres(config.data_dir.absolute() / "postgres")
    url = config.database_url or embedded.start()
    try:
        print(asyncio.run(usertool.create(config, url, role=args.role, email=args.email, name=args.name,
                                          password=password, brands=args.brand)))
    except (StartupError, usertool.UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        embedded.stop()
    return 0


def reset(config: Config, args: argparse.Namespace) -> int:
    from gateway import resettool

    paths = resettool.targets(config, args.keys)
    if not paths:
        print(f"nothing to reset: {config.data_dir} does not exist")
        return 0
    listed = " and ".join(str(p) for p in paths)
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"error: reset deletes {listed}; confirm with --yes (no terminal to ask on)", file=sys.stderr)
            return 2
        answer = input(f"This deletes {listed}: the embedded PostgreSQL and Redis data, the token secret, the "
                       f"attachments{', the key-encryption keys' if args.keys else ''}. Type yes to go on: ")
        if answer.strip().lower() != "yes":
            print("nothing deleted")
            return 1
    try:
        deleted = resettool.reset(config, args.keys)
    except resettool.ResetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("deleted " + " and ".join(str(p) for p in deleted))
    return 0


def roles() -> dict[str, list[str] | None]:
    from handlers.registry import ROUTES

    return {route.operation: None if route.roles is None else sorted(route.roles) for route in ROUTES.values()}


def error_codes() -> list[str]:
    """Every code the gateway's error types can send (each domain's included)."""
    import handlers.registry  # noqa: F401  (loads every domain, and so every error type)
    from handlers.errors import codes

    return codes()


if __name__ == "__main__":
    sys.exit(main())
