"""Configuration: environment and flags, and one clear line for anything invalid."""

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as configuration
from gateway.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_flags_override_environment_override_defaults():
    args = configuration.argparse.Namespace(port="9001", database_url=None)
    config = configuration.load({"GATEWAY_PORT": "9000", "REDIS_URL": "redis://r:6379/0", "LOG_FORMAT": "json"},
                                args)
    assert (config.port, config.redis_url, config.log_format, config.database_url) == (
        9001, "redis://r:6379/0", "json", None)
    assert configuration.load({}).data_dir == Path("var")


@pytest.mark.parametrize("env, words", [
    ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT='eighty' is not a number"),
    ({"GATEWAY_PORT": "70000"}, "out of range"),
    ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must start with postgresql://"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL must start with"),
    ({"REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2"}, "REDIS_SENTINELS='10.0.0.1:26379,10.0.0.2' is not a list"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD'"),
    ({"DELIVERY_ROUTING": "broadcast"}, "DELIVERY_ROUTING='broadcast' is not one of nodes, multicast"),
    ({"GATEWAY_SECRET": "short"}, "at least 32 characters"),
    ({"RATE_PER_S": "0"}, "RATE_PER_S must be positive"),
    ({"AI_PRICE_OUT_PER_MTOK_USD": "-1"}, "AI_PRICE_.*_PER_MTOK_USD not negative"),
    ({"MAP_TILES_URL": "tiles.example.org/{z}/{x}/{y}.png"}, "MAP_TILES_URL=.* is not an http"),
    ({"MAP_TILES_URL": "https://tiles.example.org/tile.png"}, r"with \{z\}, \{x\} and \{y\}"),
])
def test_invalid_settings_are_named(env, words):
    with pytest.raises(ConfigError, match=words):
        configuration.load(env)


def test_serve_with_bad_configuration_prints_one_line_and_exits_2():
    result = subprocess.run([sys.executable, "run.py", "serve", "--port", "-3"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "x://"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error:"), result.stderr


@pytest.mark.parametrize("command", ["serve", "token", "console", "migrate", "schema"])
def test_every_subcommand_has_help_and_takes_data_dir(command):
    result = subprocess.run([sys.executable, "run.py", command, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--data-dir" in result.stdout


def test_token_prints_a_token_that_the_gateway_accepts_as_its_last_line(tmp_path):
    (tmp_path / "secret").write_text("s" * 48)  # as the gateway's first start leaves it
    result = subprocess.run([sys.executable, "run.py", "token", "--role", "admin", "--sub", "alice",
                             "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    token = result.stdout.strip().splitlines()[-1]
    from gateway.app import token_issuer
    identity = token_issuer(configuration.Config(data_dir=tmp_path)).verify(token)
    assert (identity.user_id, identity.role) == ("alice", "admin")


def test_token_without_any_secret_says_where_to_get_one(tmp_path):
    result = subprocess.run([sys.executable, "run.py", "token", "--role", "admin", "--sub", "alice",
                             "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"configuration error: no secret: set GATEWAY_SECRET, or start the gateway once with --data-dir "
        f"{tmp_path} so that it generates {tmp_path / 'secret'}"]
