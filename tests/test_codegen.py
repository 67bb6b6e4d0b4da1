"""Typed clients from the AsyncAPI document: TypeScript models that real frames type-check against,
and Dart models for json_serializable, generated as the README tells app teams to.

The frames are recorded from a real session (the client library's recording), replies, errors
and events alike. Node.js runs the generators (tests/codegen/, pinned, installed once into
.cache/codegen and reused); without it the test is skipped, except in CI (`CI` set), where it fails.
"""

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from gateway.app import Gateway
from protocol.auth import Auth, Ping
from protocol.chat import ChatSend
from protocol.client import Client, ErrorReply
from protocol.frames import Request
from protocol.location import Duty, LocationUpdate
from protocol.messages import EVENTS, REQUESTS
from protocol.orders import OrderAccept, OrderGet, OrderRate
from tests.conftest import ROOT, mint, ws_url
from tests.world import events, offset, order_at, spot

CODEGEN = ROOT / "tests" / "codegen"
CACHE = ROOT / ".cache" / "codegen"
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
EVENT_NAMES = {event.__struct_config__.tag: event.__name__ for event in EVENTS}

Recorded = list[tuple[str, dict[str, Any]]]  # (the frame's model name, the frame as received)


class Session:
    """A signed-in client whose every received frame is recorded, with the name of its model."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.names: dict[str, str] = {}  # request id -> its reply's model name
        client.received = []

    @classmethod
    async def open(cls, gw: Gateway, role: str) -> "Session":
        session = cls(await Client.connect(ws_url(gw)))
        _, token = mint(gw, role)
        await session.ask(Auth(token=token))
        return session

    async def ask(self, request: Request) -> Any:
        request = msgspec.structs.replace(request, id=uuid.uuid4().hex[:12])
        assert request.id is not None
        self.names[request.id] = request.reply.__name__
        return await self.client.request(request)

    async def refused(self, request: Request) -> str:
        with pytest.raises(ErrorReply) as caught:
            await self.ask(request)
        return caught.value.code

    def frames(self) -> Recorded:
        assert self.client.received is not None
        named: Recorded = []
        for frame in self.client.received:
            if frame["type"] == "error":
                named.append(("Error", frame))
            elif frame["type"] == "result":
                named.append((self.names[frame["id"]], frame))
            else:
                named.append((EVENT_NAMES[frame["type"]], frame))
        return named


@pytest.fixture(scope="module")
async def recorded(gateway: Gateway) -> AsyncIterator[Recorded]:
    """An order's story over real sessions: sign-in, duty, position, an order announced, accepted
    and chatted about, and requests refused (`not_found`, `conflict`)."""
    place = spot()
    consumer = await Session.open(gateway, "consumer")
    tech = await Session.open(gateway, "technician")
    try:
        await consumer.ask(Ping())
        await tech.ask(Duty(on_duty=True))
        await tech.ask(LocationUpdate(lat=offset(place, north_mi=2)[0], lng=place[1]))
        order = (await consumer.ask(order_at(place))).order
        await events(tech.client, "order.available")
        await tech.ask(OrderAccept(order_id=order.id))
        await events(consumer.client, "order.status")
        await consumer.ask(ChatSend(order_id=order.id, client_id="m1", text="The side door is open"))
        await events(tech.client, "chat.message")
        await consumer.ask(OrderGet(order_id=order.id))
        assert await consumer.refused(OrderGet(order_id=str(uuid.uuid4()))) == "not_found"
        assert await consumer.refused(OrderRate(order_id=order.id, stars=5)) == "conflict"  # not completed yet
        yield consumer.frames() + tech.frames()
    finally:
        await consumer.client.close()
        await tech.client.close()


def test_the_recording_holds_replies_errors_and_events(recorded: Recorded) -> None:
    names = {name for name, _ in recorded}
    assert {"AuthResult", "Pong", "DutyState", "LocationAck", "OrderCreated", "OrderReply", "ChatSent",
            "Error", "OrderAvailable", "OrderStatus", "ChatMessageEvent"} <= names, names


def test_recorded_frames_fit_their_schemas_formats_included(recorded: Recorded) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    checker = jsonschema.FormatChecker()  # every format it knows: uuid among them

    @checker.checks("date-time", raises=ValueError)
    def aware(value: object) -> bool:  # RFC 3339: a time zone offset is not optional
        return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None

    for name, frame in recorded:
        schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
        jsonschema.Draft7Validator(schema, format_checker=checker).validate(frame)
    order = next(frame for name, frame in recorded if name == "OrderCreated")["order"]
    schema = {**doc["components"]["schemas"]["Order"], "components": doc["components"]}
    validator = jsonschema.Draft7Validator(schema, format_checker=checker)
    with pytest.raises(jsonschema.ValidationError, match="uuid"):  # the formats are checked, not only named
        validator.validate({**order, "id": "order-1"})
    with pytest.raises(jsonschema.ValidationError, match="date-time"):
        validator.validate({**order, "created_at": "2026-12-02T07:10:00"})


def node_tools() -> tuple[str, Path]:
    """node, and the cache folder with the pinned generators installed (once per package-lock)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but node/npm are missing: .ci/run installs Debian's nodejs and npm")
        pytest.skip("node and npm are not installed: install Node.js 18+ to generate the typed clients")
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (CODEGEN / "package-lock.json").read_bytes()
    stamp = CACHE / "installed.lock"
    if not stamp.exists() or stamp.read_bytes() != lock or not (CACHE / "node_modules").is_dir():
        for name in ("package.json", "package-lock.json"):
            shutil.copy(CODEGEN / name, CACHE / name)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE, check=True,
                       timeout=600, capture_output=True)
        stamp.write_bytes(lock)
    shutil.copy(CODEGEN / "generate.mjs", CACHE / "generate.mjs")  # ES modules resolve packages beside them
    return node, CACHE


@pytest.mark.parametrize("ci", [None, "true"])
def test_without_node_the_test_skips_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     ci: str | None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no node and no npm
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="node and npm are not installed"):
            node_tools()
    else:
        monkeypatch.setenv("CI", ci)
        with pytest.raises(pytest.fail.Exception, match="CI is set but node/npm are missing"):
            node_tools()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    """The output folder, the TypeScript model names and node."""
    node, cache = node_tools()
    out = tmp_path_factory.mktemp("models")
    run = subprocess.run([node, str(cache / "generate.mjs"), str(DOCUMENT), str(out)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return out, run.stdout.split(), node


def _literal(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False)


def _session_union(models: str) -> set[str]:
    [line] = [line for line in models.splitlines() if line.startswith("export type Session = ")]
    return {name.strip() for name in line.removeprefix("export type Session = ").rstrip(";").split("|")}


@pytest.mark.timeout(900)
def test_typescript_models_are_named_and_type_check_real_frames(generated: tuple[Path, list[str], str],
                                                               recorded: Recorded) -> None:
    out, names, node = generated
    assert not [name for name in names if "Anonymous" in name]
    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert set(doc["components"]["schemas"]) <= set(names)  # every schema a model of its own title
    models = (out / "models.ts").read_text(encoding="utf-8")
    server = {message["$ref"].rsplit("/", 1)[1] for message in doc["operations"]["session"]["messages"]}
    assert _session_union(models) == server  # every reply, the error and every event: no collapse
    assert {request.__name__ for request in REQUESTS}.isdisjoint(server)

    # Each real frame is assigned, as an object literal, to its own model: a field the model lacks,
    # one it requires and the frame lacks, or a value outside its type fails `tsc --strict`.
    lines = ["import type * as M from './models';", ""]
    lines += [f"export const frame{i}: M.{name} = {_literal(frame)};" for i, (name, frame) in enumerate(recorded)]
    lines += ["", f"export const session: M.Session[] = [{', '.join(f'frame{i}' for i in range(len(recorded)))}];"]
    (out / "frames.ts").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # And frames one mistake away from real ones must not type-check (so the check can fail).
    first = dict(recorded)
    broken = [
        ("OrderReply", {**first["OrderReply"], "order": {**first["OrderReply"]["order"], "state": "misplaced"}}),
        ("Error", {**first["Error"], "code": "no_such_code"}),
        ("Pong", {key: value for key, value in first["Pong"].items() if key != "server_time"}),
        ("ChatMessageEvent", {**first["ChatMessageEvent"], "surprise": 1}),
        ("OrderAvailable", {**first["OrderAvailable"], "type": "order.status"}),
    ]
    bad = ["import type * as M from './models';"]
    bad += [f"export const broken{i}: M.{name} = {_literal(frame)};" for i, (name, frame) in enumerate(broken)]
    (out / "broken.ts").write_text("\n".join(bad) + "\n", encoding="utf-8")

    tsc = str(CACHE / "node_modules" / "typescript" / "bin" / "tsc")
    check = subprocess.run([node, tsc, "--strict", "--noEmit", "--target", "es2022", "--module", "esnext",
                            "--moduleResolution", "bundler", "--pretty", "false",
                            "models.ts", "frames.ts", "broken.ts"],
                           cwd=out, capture_output=True, text=True, timeout=300)
    errors = [line for line in check.stdout.splitlines() if ": error TS" in line]
    assert not [line for line in errors if not line.startswith("broken.ts(")], check.stdout
    failing = {int(line.split("(")[1].split(",")[0]) for line in errors}
    assert failing == set(range(2, 2 + len(broken))), check.stdout  # every broken frame, each on its line


@pytest.mark.timeout(900)  # whichever test comes first installs the generators and runs them
def test_dart_models_are_generated_for_json_serializable(generated: tuple[Path, list[str], str]) -> None:
    """No Dart SDK on this machine: the quicktype output is checked for what json_serializable needs."""
    out, _, _ = generated
    dart = (out / "models.dart").read_text(encoding="utf-8")
    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    for message in doc["channels"]["session"]["messages"].values():
        name = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert f"\nclass {name} {{" in dart, name
        assert f"_${name}FromJson(json)" in dart, name
    assert dart.count("@JsonSerializable()") >= len(doc["channels"]["session"]["messages"])
    assert "import 'package:json_annotation/json_annotation.dart';" in dart and "part 'models.g.dart';" in dart
    assert '@JsonKey(name: "server_time")' in dart  # wire names kept, the Dart field camelCased
    assert "enum OrderState {" in dart and '@JsonValue("en_route")' in dart
    assert "DateTime serverTime;" in dart  # `date-time` strings parse as DateTime
    assert "Object?" not in dart and "dynamic?" not in dart  # nullable fields keep their type
