"""Dashboards and alert rules: the chart ships them, promtool accepts and
unit-tests the rules, every metric they name is exported by the running local
stack, and the pipeline overview's queries return data from a real Prometheus
scraping that stack."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml
from conftest import SHARED_FACES, free_port, run_facepipe, stack_nats_url
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "facepipe"
DASHBOARDS = CHART / "dashboards"
RULES = CHART / "rules" / "alerts.yaml"
OBSERVABILITY = ROOT / "deploy" / "observability"
RULE_TESTS = OBSERVABILITY / "alerts.test.yaml"
UIDS = {
    "pipeline-overview.json": "facepipe-pipeline",
    "detector-inference.json": "facepipe-inference",
    "crawler.json": "facepipe-crawler",
}
ALERTS = {"HighDLQRate", "QueueBacklog", "SlowProcessing", "ServiceDown", "DetectorBackoff"}
PROMETHEUS_OWN = {"up"}  # series Prometheus writes itself for every target
# Grafana's interval variables, replaced by a window that holds a few 1s scrapes.
GRAFANA_INTERVALS = re.compile(r"\$__(?:rate_interval|interval|range)\b")
RATE_WINDOW = "30s"


# -- reading dashboards and rules ---------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_NAME = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS |= {"offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names, strings, durations or Grafana variables."""
    text = GRAFANA_INTERVALS.sub("1m", expr)
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING, _OFFSET):
        text = pattern.sub(" ", text)
    return {n for n in _NAME.findall(text) if n.lower() not in _KEYWORDS}


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used (dashboard files, 'rules')."""
    used: dict[str, set[str]] = {}
    for name, board in dashboards().items():
        for expr in dashboard_exprs(board):
            for metric in metric_names(expr):
                used.setdefault(metric, set()).add(name)
    for rule in rules():
        for metric in metric_names(rule["expr"]):
            used.setdefault(metric, set()).add("rules")
    return used


def sample_names(families) -> set[str]:
    return {s.name for f in families for s in f.samples}


def declared_sample_names(families) -> set[str]:
    """Every sample name the declared families can expose, samples or not."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    return {f.name + s for f in families for s in suffixes.get(f.type, ("",))}


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is not installed (bash scripts/system-deps.sh installs Debian's prometheus)")
    return path


# -- offline ------------------------------------------------------------------


def test_metric_name_parser() -> None:
    expr = 'histogram_quantile(0.95, sum by (stage, le) (rate(facepipe_stage_seconds_bucket{a=~"x|y"}[5m])))'
    assert metric_names(expr) == {"facepipe_stage_seconds_bucket"}
    assert metric_names('up{job=~".*facepipe.*"} == 0 or facepipe_ready == 0') == {"up", "facepipe_ready"}
    assert metric_names("sum(rate(a_total[$__rate_interval])) / on (x) group_left (y) b offset 5m") == {
        "a_total",
        "b",
    }
    assert metric_names("max by (service) (facepipe_batch_limit) > 1e3 and bool_gauge") == {
        "facepipe_batch_limit",
        "bool_gauge",
    }


def test_dashboards_are_well_formed() -> None:
    boards = dashboards()
    assert set(boards) == set(UIDS), "every dashboard needs a stable uid listed here"
    for name, board in boards.items():
        assert board["uid"] == UIDS[name] and board["title"].startswith("facepipe / ")
        assert board["schemaVersion"] >= 36
        [ds] = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            where = f"{name}: panel {panel['title']!r}"
            assert panel["datasource"]["uid"] == "${datasource}", where
            assert panel["targets"], f"{where} has no query"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), where
            for target in panel["targets"]:
                assert target.get("expr", "").strip(), f"{where}: target {target['refId']} has no expr"
                assert target["datasource"]["uid"] == "${datasource}", where
                assert metric_names(target["expr"]), f"{where}: no metric in {target['expr']!r}"


def test_alert_rules_are_complete() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert set(by_name) == ALERTS
    for name, rule in by_name.items():
        assert re.fullmatch(r"\d+m", rule["for"]), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_chart_ships_dashboards_and_rules() -> None:
    def render(values: dict[str, Any]) -> list[dict[str, Any]]:
        with helm.Chart.load(CHART) as ch:
            manifests = ch.render(values, name="facepipe", namespace="facepipe")
        return [
            d
            for path, text in manifests.items()
            if path.endswith(".yaml")
            for d in yaml.safe_load_all(text)
            if d
        ]

    docs = render({"prometheusRule": {"enabled": True}})
    maps = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    shipped = {key: json.loads(text) for m in maps for key, text in m["data"].items()}
    assert shipped == dashboards()
    assert all(len(json.dumps(m["data"])) < 256 * 1024 for m in maps)  # well under the ConfigMap limit
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["name"] == "facepipe-alerts"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == ALERTS

    off = render({"dashboards": {"enabled": False}})
    assert not [
        d
        for d in off
        if d["kind"] == "PrometheusRule" or "grafana_dashboard" in d["metadata"].get("labels", {})
    ]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_fire_every_alert() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert [str((RULE_TESTS.parent / f).resolve()) for f in doc["rule_files"]] == [str(RULES)]
    fired = {c["alertname"] for t in doc["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert fired == ALERTS, "each alert needs a case where it fires"
    quiet = [
        t
        for t in doc["tests"]
        if {c["alertname"] for c in t["alert_rule_test"] if not c["exp_alerts"]} == ALERTS
    ]
    assert quiet, "one case must keep every alert silent on a healthy pipeline"

    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], capture_output=True, text=True, cwd=RULE_TESTS.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- against the real local stack ---------------------------------------------


def facepipe(*args: str, env: dict, timeout: float = 300) -> str:
    return run_facepipe(*args, env=env, timeout=timeout).stdout


def scrape(port: int) -> list:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return list(text_string_to_metric_families(text))


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict[str, Any]:
    # The crawler fetches a site on 127.0.0.1, which the shared stack allows.
    stack = shared_stack
    services = {name: c["http_port"] for name, c in stack["state"]["components"].items() if name != "nats"}
    return {**stack, "services": services}


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory) -> Iterator[str]:
    """Debian's prometheus with the example config, pointed at the stack's ports, 1s scrapes."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.fail("prometheus is not installed (bash scripts/system-deps.sh installs it)")
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    jobs = {j["job_name"].removeprefix("facepipe-"): j for j in config["scrape_configs"]}
    assert set(stack["services"]) <= set(jobs), "the example config misses a stack service"
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(CHART / "rules" / "*.yaml")]
    config["scrape_configs"] = []
    for name, port in stack["services"].items():
        jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        config["scrape_configs"].append(jobs[name])
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115 - closed after the process
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (work / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def workload(stack, prometheus) -> None:
    """Real traffic while Prometheus scrapes: a few images, a re-ingest (exact dedup
    hit), a search (gRPC) and one malformed ingest message (dead letter)."""
    photos = [
        sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[0]
        for d in sorted(SHARED_FACES.iterdir())
        if d.is_dir()
    ][:3]
    assert len(photos) == 3, "../shared/faces is missing"
    cli = ("--data-dir", str(stack["dir"]))
    summary = json.loads(
        facepipe("ingest", *map(str, photos), "--tenant", "obs", "--wait", "--json", *cli, env=stack["env"])
    )
    assert summary["images"] == 3 and summary["pending"] == 0 and not summary["errors"], summary
    again = json.loads(
        facepipe(
            "ingest",
            str(photos[0]),
            "--tenant",
            "obs",
            "--wait",
            "--json",
            "--rescan",
            *cli,
            env=stack["env"],
        )
    )
    assert again["duplicates"] == 1, again
    found = json.loads(
        facepipe("search", str(photos[1]), "--tenant", "obs", "--json", *cli, env=stack["env"])
    )
    assert found["matches"]

    async def publish_malformed() -> None:
        import nats

        nc = await nats.connect(stack_nats_url(stack))
        await nc.jetstream().publish("facepipe.ingest", b"\x00\x01 not an ingest request")
        await nc.close()

    asyncio.run(publish_malformed())
    deadline = time.monotonic() + 30
    while "facepipe_dlq_total" not in sample_names(scrape(stack["services"]["extractor"])):
        assert time.monotonic() < deadline, "the malformed message was not dead-lettered"
        time.sleep(0.3)


@pytest.mark.slow
def test_every_metric_in_dashboards_and_rules_is_exported(stack, workload) -> None:
    exported: set[str] = set()
    for port in stack["services"].values():
        exported |= sample_names(scrape(port))
    used = {m: where for m, where in used_names().items() if not m.startswith("facepipe_crawler_")}
    assert len(used) > 15  # the parser found the dashboards' metrics
    missing = {m: sorted(where) for m, where in used.items() if m not in exported | PROMETHEUS_OWN}
    assert not missing, f"used in dashboards or rules but not exported by the running stack: {missing}"


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[str]:
    """A real HTTP server for a small site: a page with a face photo, a path robots.txt
    disallows, and a broken link."""
    (root / "private").mkdir(parents=True)
    shutil.copy(sorted((SHARED_FACES / "brad_pitt").glob("*.jpg"))[0], root / "face.jpg")
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    (root / "private" / "page.html").write_text("<html><body>private</body></html>")
    (root / "index.html").write_text(
        '<html><body><img src="/face.jpg" alt="face">'
        '<a href="/private/page.html">private</a><a href="/missing.html">gone</a></body></html>'
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_crawler_dashboard_metrics_are_exported(stack, tmp_path) -> None:
    used = {m for m in used_names() if m.startswith("facepipe_crawler_")}
    assert used
    if "crawler" not in stack["services"]:
        from prometheus_client import metrics as client_metrics

        from facepipe.runtime import metrics

        defined = declared_sample_names(
            family
            for value in vars(metrics).values()
            if isinstance(value, client_metrics.MetricWrapperBase)
            for family in value.describe()
        )
        assert used <= defined, f"not defined in metrics.py: {sorted(used - defined)}"
        pytest.skip(
            "the crawler service is not in the local stack (facepipe/stack.py STACK_SERVICES); "
            "crawler dashboard metrics checked against facepipe/runtime/metrics.py only"
        )
    port = stack["services"]["crawler"]
    with static_site(tmp_path / "site") as url:
        cli = ("--tenant", "obs", "--render", "never", "--json", "--data-dir", str(stack["dir"]))
        facepipe("crawl", url, *cli, env=stack["env"])
        deadline = time.monotonic() + 60
        while missing := used - sample_names(scrape(port)):
            assert time.monotonic() < deadline, (
                f"not exported by the crawler after a crawl: {sorted(missing)}"
            )
            time.sleep(0.5)


def query(prometheus: str, expr: str) -> dict[str, Any]:
    resp = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    return resp.json()


@pytest.mark.slow
def test_prometheus_answers_every_overview_panel(stack, prometheus, workload) -> None:
    [down] = [r for r in rules() if r["alert"] == "ServiceDown"]
    up_selector = re.search(r"up\{[^}]*\}", down["expr"]).group(0)
    deadline = time.monotonic() + 30
    while len(query(prometheus, f"{up_selector} == 1")["data"]["result"]) < len(stack["services"]):
        assert time.monotonic() < deadline, query(prometheus, up_selector)
        time.sleep(0.5)

    boards = dashboards()
    for name, board in boards.items():  # every query parses and runs
        for expr in dashboard_exprs(board):
            answer = query(prometheus, GRAFANA_INTERVALS.sub(RATE_WINDOW, expr))
            assert answer["status"] == "success", (name, expr, answer)

    overview = dashboard_exprs(boards["pipeline-overview.json"])
    empty = overview
    deadline = time.monotonic() + 30
    while empty and time.monotonic() < deadline:
        empty = [
            e for e in empty if not query(prometheus, GRAFANA_INTERVALS.sub(RATE_WINDOW, e))["data"]["result"]
        ]
        time.sleep(0.5 if empty else 0)
    assert not empty, f"overview panels without data: {empty}"

    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert set(loaded) == ALERTS
    assert all(r["health"] == "ok" for r in loaded.values()), loaded
    for alert in ("ServiceDown", "QueueBacklog", "SlowProcessing", "DetectorBackoff"):
        assert loaded[alert]["state"] == "inactive", loaded[alert]
