"""Settings: every variable parsed in facepipe/config.py, bad values named, FACEPIPE_HOME
resolved in one place, and the README's settings table generated from the declarations."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe import config
from facepipe.config import (
    ClientSettings,
    CrawlConfig,
    CrawlerSettings,
    IndexerSettings,
    NetGuardSettings,
    ObjectStoreSettings,
    Settings,
    VectorStoreSettings,
)
from facepipe.stack import default_data_dir

REPO = Path(__file__).resolve().parents[2]
SETTINGS_CLASSES = (
    Settings,
    ObjectStoreSettings,
    VectorStoreSettings,
    NetGuardSettings,
    IndexerSettings,
    CrawlerSettings,
    CrawlConfig,
    ClientSettings,
)
# Every group of Settings, the listed ones and any added since.
SETTINGS_CLASSES += tuple(
    f.metadata["group"]
    for f in dataclasses.fields(Settings)
    if f.metadata.get("group") and f.metadata["group"] not in SETTINGS_CLASSES
)


def declared_variables() -> set[str]:
    names: set[str] = set()
    for cls in SETTINGS_CLASSES:
        for f in dataclasses.fields(cls):
            name = config.env_name(cls, f)
            if name:
                names.update((name, *f.metadata.get("aliases", ())))
    return names


def test_every_group_is_parsed_from_one_mapping(tmp_path: Path) -> None:
    env = {
        "FACEPIPE_HOME": str(tmp_path),
        "FACEPIPE_OBJECT_STORE": "S3",
        "FACEPIPE_S3_ENDPOINT": "minio:9000",
        "FACEPIPE_S3_SECURE": "yes",
        "FACEPIPE_VECTOR_STORE": "qdrant",
        "FACEPIPE_QDRANT_URL": "http://qdrant:6333",
        "FACEPIPE_QDRANT_COLLECTION": "faces_v2",
        "FACEPIPE_OPTIMIZE_EVERY": "10",
        "FACEPIPE_ALLOW_PRIVATE_NETWORKS": "on",
        "FACEPIPE_CRAWL_MAX_JOBS": "2",
        "FACEPIPE_CRAWL_PER_DOMAIN_DELAY": "0.25",
        "FACEPIPE_CRAWL_RENDER_MODE": "Never",
        "FACEPIPE_CRAWL_SITEMAPS": "off",
        "FACEPIPE_INDEXER_ADDR": "indexer:50053",
        "FACEPIPE_TRACE_FILE": str(tmp_path / "spans.jsonl"),
        "FACEPIPE_MAX_BATCH": " 4 ",
        "FACEPIPE_DET_THRESHOLD": "",
    }
    s = Settings.from_env("indexer", env)
    assert (s.service, s.grpc_port, s.http_port) == ("indexer", 50053, 51053)
    assert s.max_batch == 4 and s.det_threshold == 0.5
    assert s.trace_file == tmp_path / "spans.jsonl"
    assert s.objects == ObjectStoreSettings(
        kind="s3", dir=tmp_path / "objects", s3_endpoint="minio:9000", s3_secure=True
    )
    assert (s.vectors.kind, s.vectors.qdrant_url, s.vectors.qdrant_collection) == (
        "qdrant",
        "http://qdrant:6333",
        "faces_v2",
    )
    assert s.indexer.optimize_every == 10
    assert s.netguard.allow_private_networks is True
    assert s.crawler.max_jobs == 2 and s.crawler.ack_wait == CrawlerSettings().ack_wait
    assert s.crawl.per_domain_delay == 0.25 and s.crawl.render_mode == "never" and not s.crawl.sitemaps
    # The crawl follows the network guard's switch, under the guard's variable.
    assert s.crawl.allow_private_networks is True
    assert s.clients.address("indexer") == "indexer:50053"
    assert s.clients.address("crawler") == "127.0.0.1:50055"
    # Each group reads the same variables on its own, as the command line does.
    assert ObjectStoreSettings.from_env(env) == s.objects
    assert CrawlConfig.from_env(env) == s.crawl
    assert CrawlConfig.from_env(env, max_pages=3).max_pages == 3


def test_object_store_kind_accepts_minio_as_s3() -> None:
    assert ObjectStoreSettings.from_env({"FACEPIPE_OBJECT_STORE": "minio"}).kind == "s3"


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("FACEPIPE_GRPC_PORT", "abc", "is not a valid int"),
        ("FACEPIPE_DRAIN_SECONDS", "soon", "is not a valid float"),
        ("FACEPIPE_DRAIN_SECONDS", "-1", "must not be negative"),
        ("FACEPIPE_ENABLE_GLOBAL_DEDUP", "maybe", "is not a valid bool"),
        ("FACEPIPE_S3_SECURE", "perhaps", "is not a valid bool"),
        ("FACEPIPE_OBJECT_STORE", "ftp", "expected 'local' or 's3'"),
        ("FACEPIPE_VECTOR_STORE", "milvus", "expected 'edge' or 'qdrant'"),
        ("FACEPIPE_OPTIMIZE_EVERY", "0", "must be at least 1"),
        ("FACEPIPE_ALLOW_PRIVATE_NETWORKS", "sure", "is not a valid bool"),
        ("FACEPIPE_CRAWL_MAX_JOBS", "many", "is not a valid int"),
        ("FACEPIPE_CRAWL_MAX_PAGES", "0", "must be at least 1"),
        ("FACEPIPE_CRAWL_RENDER_MODE", "sometimes", "expected 'auto', 'never' or 'always'"),
        ("DEDUP_MAX_HAMMING", "close", "is not a valid int"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{variable}={raw!r}") + ".*" + re.escape(message)):
        Settings.from_env("detector", {variable: raw})


@pytest.mark.parametrize("word", [*config.TRUE_WORDS, "TRUE", " Yes ", "On"])
def test_true_forms(word: str) -> None:
    env = {"FACEPIPE_S3_SECURE": word, "FACEPIPE_CRAWL_SAME_SITE": word, "ENABLE_GLOBAL_DEDUP": word}
    s = Settings.from_env("detector", {**env, "FACEPIPE_ENABLE_GLOBAL_DEDUP": ""})
    assert (s.objects.s3_secure, s.crawl.same_site, s.enable_global_dedup) == (True, True, True)
    assert config.parse_bool(word) is True


@pytest.mark.parametrize("word", [*config.FALSE_WORDS, "FALSE", " No ", "Off"])
def test_false_forms(word: str) -> None:
    env = {"FACEPIPE_S3_SECURE": word, "FACEPIPE_CRAWL_SAME_SITE": word, "FACEPIPE_ENABLE_GLOBAL_DEDUP": word}
    s = Settings.from_env("detector", env)
    assert (s.objects.s3_secure, s.crawl.same_site, s.enable_global_dedup) == (False, False, False)
    assert config.parse_bool(word) is False


def test_prefixed_variable_wins_over_its_alias() -> None:
    env = {"DEDUP_MAX_HAMMING": "3", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}
    s = Settings.from_env("embedder", env)
    assert (s.dedup_max_hamming, s.otlp_endpoint) == (3, "http://otel:4317")
    env |= {"FACEPIPE_DEDUP_MAX_HAMMING": "5", "FACEPIPE_OTLP_ENDPOINT": "http://collector:4317"}
    s = Settings.from_env("embedder", env)
    assert (s.dedup_max_hamming, s.otlp_endpoint) == (5, "http://collector:4317")


def test_home_is_resolved_once_and_everything_follows_it(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    s = Settings.from_env("indexer", {"FACEPIPE_HOME": str(home)})
    assert s.home == home
    assert s.resolved_models_dir == home / "models" / "opencv"
    assert (s.objects.dir, s.vectors.dir) == (home / "objects", home / "vectors")
    assert config.default_stack_dir({"FACEPIPE_HOME": str(home)}) == home / "stack"
    monkeypatch.setenv("FACEPIPE_HOME", str(home))
    assert default_data_dir() == home / "stack"

    # An overridden home moves every folder that was not set on its own.
    other = tmp_path / "other"
    env = {"FACEPIPE_HOME": str(home), "FACEPIPE_VECTOR_DIR": str(tmp_path / "v")}
    s = Settings.from_env("indexer", env, home=other)
    assert (s.home, s.objects.dir, s.vectors.dir) == (other, other / "objects", tmp_path / "v")

    # Unset or empty: the default home, with "~" expanded.
    assert config.resolve_home({}) == Path.home() / ".facepipe"
    assert config.resolve_home({"FACEPIPE_HOME": ""}) == Path.home() / ".facepipe"
    assert config.resolve_home({"FACEPIPE_HOME": "~/fp"}) == Path.home() / "fp"


def test_only_config_reads_the_environment() -> None:
    """FACEPIPE_HOME and every other variable are read in facepipe/config.py alone."""
    readers = []
    for path in sorted([*(REPO / "facepipe").rglob("*.py"), *(REPO / "services").rglob("*.py")]):
        rel = path.relative_to(REPO).as_posix()
        if rel == "facepipe/config.py" or rel.startswith("facepipe/v1/"):
            continue
        text = path.read_text()
        if re.search(r"os\.environ|getenv\(|[\"']FACEPIPE_HOME[\"']", text):
            readers.append(rel)
    assert readers == []


def test_chart_variables_are_all_declared() -> None:
    """Every variable the Helm chart sets is a setting some process reads."""
    chart = "\n".join(p.read_text() for p in (REPO / "deploy" / "helm").rglob("*.tpl"))
    used = set(re.findall(r'"((?:FACEPIPE|DEDUP|ENABLE)_[A-Z0-9_]+)"', chart))
    assert used, "the chart sets no variables: the pattern no longer matches it"
    assert used - declared_variables() == set()


def test_every_setting_has_help_and_one_variable() -> None:
    seen: dict[str, str] = {}
    for cls in SETTINGS_CLASSES:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            name = config.env_name(cls, f)
            if name and name in seen:
                # Only the network guard's switch is shared, by the crawl defaults.
                assert name == config.ALLOW_PRIVATE_NETWORKS_ENV, (name, seen[name], cls.__name__)
            if name:
                seen[name] = cls.__name__


def test_readme_settings_table_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert config.readme_block() in readme, (
        "README.md's settings table is stale: run python -m facepipe.config --write-readme README.md"
    )
    table = config.settings_markdown()
    for name in declared_variables():
        assert f"`{name}`" in table


def test_readme_writer_replaces_only_its_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{config.README_BEGIN}\nold table\n{config.README_END}\n\nrest\n")
    assert config.update_readme(readme) is True
    assert readme.read_text() == f"# x\n\n{config.readme_block()}\n\nrest\n"
    assert config.update_readme(readme) is False


def test_module_command_prints_the_table_and_refuses_a_readme_without_markers(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "facepipe.config"]
    out = subprocess.run([*run, "--markdown"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == config.settings_markdown()
    plain = tmp_path / "README.md"
    plain.write_text("# no table here\n")
    out = subprocess.run([*run, "--write-readme", str(plain)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("error:") and "Traceback" not in out.stderr
    assert plain.read_text() == "# no table here\n"
