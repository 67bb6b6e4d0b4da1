"""The operator's kit in docs/ops: the alert rules pass `promtool check rules` and their unit tests,
every rule carries what an on-call person needs, the Grafana dashboard is well formed on a
Prometheus datasource variable, its queries are valid PromQL, and every metric the dashboard and
the rules name is really exported by a running gateway (and every family it exports is plotted)."""

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocol.auth import Auth
from protocol.client import Client, ErrorReply
from tests.conftest import SECRET
from tests.processes import GatewayProcess
from tests.test_http import get

OPS = Path(__file__).resolve().parent.parent / "docs" / "ops"
RULES, RULE_TESTS, DASHBOARD = OPS / "alerts.yml", OPS / "alerts.test.yml", OPS / "grafana-dashboard.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}
FROM_PROMETHEUS = {"up"}  # what Prometheus itself adds for each target
NOT_PLOTTED = {  # exported, deliberately left off the dashboard
    "python_info", "python_gc_objects_collected_total", "python_gc_objects_uncollectable_total",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (Debian: apt-get install --no-install-recommends prometheus)")
    return found


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables given values, as Prometheus would receive it."""
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names, functions and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):  # not the unit of 5m, 1e3
        if text[match.end():].lstrip().startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function, or a keyword
        names.add(match.group())
    return names


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names it is matched on) for each `metric{...}` of an expression."""
    found = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        body = re.sub(r'"(?:[^"\\]|\\.)*"', '""', match.group(2))
        found.append((match.group(1), set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))))
    return found


def test_the_alert_rules_pass_promtool_and_their_unit_tests():
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = subprocess.run([tool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_says_how_bad_and_what_happened():
    found = rules()
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)), "two alerts share a name"
    for rule in found:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]) and re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    alerted = " ".join(rule["expr"] for rule in found)
    for failure in ("gateway_dependency_up", "redis_errors_total", "orders_dispatch_seconds_bucket",
                    'push_outbox{what="pending"}', 'money_jobs{state="failed"}', "gateway_event_loop_lag_seconds"):
        assert failure in alerted, f"no alert watches {failure}"


def test_the_dashboard_is_laid_out_on_a_prometheus_datasource_variable():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["instance"]["includeAll"] and "gateway_sessions" in variables["instance"]["definition"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for source in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            assert source == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_the_dashboards_queries_are_valid_promql(tmp_path):
    tool = promtool()
    exprs = panel_exprs()
    recorded = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr)} for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(recorded))
    checked = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout


def test_the_metric_name_reader_finds_names_and_only_names():
    expr = ('histogram_quantile(0.99, sum by (instance, le) (rate(orders_dispatch_seconds_bucket{type=~"a|b",'
            ' le!="x"}[5m]))) > 0.25 and on (instance) max(up) == 0 unless absent(gateway_sessions offset 5m)')
    assert metric_names(expr) == {"orders_dispatch_seconds_bucket", "up", "gateway_sessions"}
    assert selectors(expr) == [("orders_dispatch_seconds_bucket", {"type", "le"})]


async def test_every_metric_the_dashboard_and_the_alerts_name_is_exported(gateway):
    status, _, body = await asyncio.to_thread(get, gateway.port, "/metrics")
    assert status == 200
    check_exported(body)


async def test_workers_export_them_too_added_up_once(servers, tmp_path_factory):
    """With GATEWAY_WORKERS=2 one scrape adds the processes up (the process and GC collectors aside:
    the client cannot add processes' CPU and memory up), a fleet-wide gauge appears once, and every
    family is there before its first event (with several workers, one with no series is not)."""
    args = ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET, "--data-dir",
            str(tmp_path_factory.mktemp("workers")), "--workers", "2", "--metrics-db-interval-s", "0.5")
    served = await GatewayProcess(*args).start()
    try:
        for _ in range(4):  # over both workers, most likely: each connection lands on either
            async with await Client.connect(served.url) as client:
                with pytest.raises(ErrorReply):
                    await asyncio.wait_for(client.request(Auth(token="not.a.token")), 10)
        async with asyncio.timeout(20):
            while 'money_jobs{kind="capture",state="failed"}' not in (
                    body := (await asyncio.to_thread(get, served.port, "/metrics"))[2]):
                await asyncio.sleep(0.2)
        lines = body.splitlines()
        assert 'auth_failures_total{reason="token_invalid"} 4.0' in lines
        assert len([line for line in lines if line.startswith('money_jobs{kind="capture",state="failed"}')]) == 1
        assert len([line for line in lines if line.startswith('gateway_dependency_up{dependency="redis"} 1.0')]) == 1
        check_exported(body, absent_ok=lambda name: name.startswith(("process_", "python_gc_")))
    finally:
        assert await served.terminate() == 0  # the workers with it (a kill would leave them running)


def check_exported(body: str, absent_ok: Callable[[str], bool] = lambda name: False) -> None:
    families: dict[str, str] = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
    # a counter's TYPE line names it with its _total; a histogram's names the family of its series
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
    exported = {family + suffix for family, kind in families.items() for suffix in suffixes.get(kind, ("",))}
    labels: dict[str, set[str]] = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and "{" in line:
            name, rest = line.split("{", 1)
            labels.setdefault(name, set()).update(re.findall(r'([a-z_]+)="', rest.rsplit("}", 1)[0]))
    queries = {f"alert {rule['alert']}": rule["expr"] for rule in rules()} | {
        f"dashboard query {expr[:60]}": expr for expr in panel_exprs()}
    missing = {where: names for where, expr in queries.items()
               if (names := {n for n in metric_names(expr) - exported - FROM_PROMETHEUS if not absent_ok(n)})}
    assert not missing, f"these read metrics /metrics does not export: {missing}"
    for where, expr in queries.items():
        for metric, matched in selectors(expr):
            if metric in labels:  # a family with series now: its labels are known
                unknown = matched - labels[metric] - {"instance", "job"}
                assert not unknown, f"{where} matches {metric} on {unknown}, labels it does not have"
    plotted = set().union(*(metric_names(expr) for expr in panel_exprs()))
    unplotted = {family for family, kind in families.items() if not family.endswith("_created")  # counters' starts
                 and not any(family + suffix in plotted for suffix in suffixes.get(kind, ("",)))} - NOT_PLOTTED
    assert not unplotted, f"exported but on no panel of {DASHBOARD.name}: {sorted(unplotted)}"
