"""Deployment artefacts, checked offline: the Helm chart renders, lints and
validates against the Kubernetes API schemas for its default, production and
kind values; every service is fully wired; the Dockerfiles match the services;
the image and kind scripts are sound."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from facepipe.config import DEFAULT_PORTS, HTTP_PORT_OFFSET

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "facepipe"
KIND = ROOT / "deploy" / "kind"
SERVICES = ["crawler", "extractor", "detector", "embedder", "indexer", "persons", "recognizer"]
CONSUMERS = ["extractor", "detector", "embedder", "indexer"]
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native gRPC probes).
KUBE_VERSION = "1.27.0"
RELEASE = "facepipe"
# Custom resources: no upstream JSON schema in kubernetes-validate, checked structurally.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def values_file(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


VALUE_SETS = {
    "default": {},
    "production": values_file(CHART / "values-production.yaml"),
    "kind": values_file(KIND / "values-kind.yaml"),
}


def render(values: dict[str, Any], chart: Path = CHART) -> list[dict[str, Any]]:
    # A fresh load each time: rendering drops disabled subcharts from the loaded chart.
    with helm.Chart.load(chart) as ch:
        manifests = ch.render(values, name=RELEASE, namespace="facepipe")
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as ch:
        manifests = ch.render(values, name=RELEASE, namespace="facepipe")
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


# -- schema and lint ----------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_values_pass_the_chart_schema_and_lint(name: str) -> None:
    values = VALUE_SETS[name]
    with helm.Chart.load(CHART) as ch:
        ch.validate_schema(values)
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"services": {"detector": {"replicas": "two"}}}, "/services/detector/replicas"),
        ({"services": {"detectr": {"replicas": 2}}}, "detectr"),
        ({"serviceDefaults": {"resource": {"limits": {"cpu": 1}}}}, "/serviceDefaults/resource"),
        ({"services": {"embedder": {"resources": {"limits": {"memory": "lots"}}}}}, "limits/memory"),
        ({"inferenceNodes": {"clients": ["detectr"]}}, "/inferenceNodes/clients/0"),
        ({"vectorStore": "edg"}, "/vectorStore"),
        ({"external": {"s3": {"endpoint": "http://minio:9000"}}}, "/external/s3/endpoint"),
        ({"tls": {"clientAuth": "maybe"}}, "/tls/clientAuth"),
        ({"tls": {"secretname": "x"}}, "secretname"),
        ({"networkPolicy": {"clients": [{}]}}, "/networkPolicy/clients/0"),
        ({"networkPolicy": {"clients": [{"podSelector": {"app": "x"}}]}}, "/networkPolicy/clients/0"),
        ({"serviceKey": {"existingSecret": "Not_A_Name"}}, "/serviceKey/existingSecret"),
    ],
)
def test_schema_rejects_bad_values(bad: dict[str, Any], where: str) -> None:
    with helm.Chart.load(CHART) as ch, pytest.raises(helm.HelmValuesError) as err:
        ch.validate_schema(bad)
    assert where in str(err.value)


# -- Kubernetes API validation --------------------------------------------------


def assert_valid_kubernetes(docs: list[dict[str, Any]]) -> None:
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            assert doc["metadata"]["name"] and doc["spec"], doc
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_objects_are_valid_kubernetes(rendered, name: str) -> None:
    assert_valid_kubernetes(rendered[name])


# -- every service is fully wired -------------------------------------------------


def check_workload(docs: list[dict[str, Any]], name: str, port: int, hpa: bool, tls: bool = False) -> None:
    full = f"{RELEASE}-{name}"
    dep = find(docs, "Deployment", full)
    assert dep, f"no Deployment for {name}"
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()

    svc = find(docs, "Service", full)
    assert svc and svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == port
    assert ports["metrics"]["port"] == port + HTTP_PORT_OFFSET

    spec = pod["spec"]
    assert spec["serviceAccountName"] == full and find(docs, "ServiceAccount", full)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"

    [container] = [c for c in spec["containers"] if c["name"] == name]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": port,
        "metrics": port + HTTP_PORT_OFFSET,
    }
    if tls:  # kubelet's gRPC probes cannot talk TLS: the plain HTTP port answers
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    else:
        assert container["livenessProbe"]["grpc"]["port"] == port
        assert container["startupProbe"]["grpc"]["port"] == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    for c in [container, *spec.get("initContainers", [])]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp"}

    config = find(docs, "ConfigMap", full)
    assert container["envFrom"] == [{"configMapRef": {"name": full}}]
    assert config["data"]["FACEPIPE_HTTP_PORT"] == str(port + HTTP_PORT_OFFSET)
    assert container["args"] == ["--port", str(port)]

    pdb = find(docs, "PodDisruptionBudget", full)
    assert pdb and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscaler = find(docs, "HorizontalPodAutoscaler", full)
    if hpa:
        assert autoscaler and autoscaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": full,
        }
        assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    else:
        assert autoscaler is None


@pytest.mark.parametrize("name", ["default", "kind"])
def test_every_service_has_its_objects(rendered, name: str) -> None:
    for service in SERVICES:
        check_workload(rendered[name], service, DEFAULT_PORTS[service], hpa=True)
    assert find(rendered[name], "Deployment", f"{RELEASE}-node") is None


def test_production_scales_stages_on_jetstream_lag(rendered) -> None:
    docs = rendered["production"]
    check_workload(docs, "crawler", DEFAULT_PORTS["crawler"], hpa=True, tls=True)
    for service in CONSUMERS:
        check_workload(docs, service, DEFAULT_PORTS[service], hpa=False, tls=True)
        scaled = find(docs, "ScaledObject", f"{RELEASE}-{service}")
        assert scaled["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-{service}"
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        assert trigger["metadata"]["stream"] == "FACEPIPE"
        assert trigger["metadata"]["consumer"] == service
        assert trigger["metadata"]["natsServerMonitoringEndpoint"] == "nats.messaging.svc:8222"
    assert find(docs, "ScaledObject", f"{RELEASE}-crawler") is None


def test_production_uses_external_backends_and_gpu_nodes(rendered) -> None:
    docs = rendered["production"]
    assert not [d for d in docs if d["kind"] == "StatefulSet"], "bundled backends are off"
    check_workload(docs, "node", DEFAULT_PORTS["node"], hpa=False, tls=True)
    node_svc = find(docs, "Service", f"{RELEASE}-node")
    assert node_svc["spec"]["clusterIP"] == "None"

    node = find(docs, "Deployment", f"{RELEASE}-node")["spec"]["template"]["spec"]
    assert node["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert node["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert node["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert node["containers"][0]["image"] == "ghcr.io/acme/facepipe/node:0.1.0-cuda"
    node_env = find(docs, "ConfigMap", f"{RELEASE}-node")["data"]
    assert node_env["FACEPIPE_PROVIDERS"] == "CUDAExecutionProvider,CPUExecutionProvider"

    detector = find(docs, "ConfigMap", f"{RELEASE}-detector")["data"]
    assert detector["FACEPIPE_INFERENCE_NODES"] == f"{RELEASE}-node:{DEFAULT_PORTS['node']}"
    assert "FACEPIPE_NATS_URL" not in detector  # it carries credentials: from a Secret
    assert detector["FACEPIPE_QDRANT_URL"] == "http://qdrant.vectors.svc:6333"
    assert detector["FACEPIPE_S3_ENDPOINT"] == "minio.storage.svc:9000"
    assert detector["FACEPIPE_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4317"
    assert "FACEPIPE_INFERENCE_NODES" not in find(docs, "ConfigMap", f"{RELEASE}-indexer")["data"]

    env = {
        e["name"]: e
        for e in find(docs, "Deployment", f"{RELEASE}-indexer")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["FACEPIPE_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "facepipe-s3",
        "key": "secret-key",
    }
    assert env["FACEPIPE_QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "facepipe-qdrant",
        "key": "api-key",
    }


def test_default_install_wires_the_bundled_backends(rendered) -> None:
    docs = rendered["default"]
    for backend in ("nats", "qdrant", "minio"):
        sts = find(docs, "StatefulSet", f"{RELEASE}-{backend}")
        assert sts["spec"]["volumeClaimTemplates"], backend
        container = sts["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"] and container["readinessProbe"], backend
        assert find(docs, "Service", f"{RELEASE}-{backend}"), backend
    nats_conf = find(docs, "ConfigMap", f"{RELEASE}-nats")["data"]["nats.conf"]
    assert "jetstream {" in nats_conf

    env = find(docs, "ConfigMap", f"{RELEASE}-indexer")["data"]
    assert env["FACEPIPE_GRPC_HOST"] == "0.0.0.0"  # services bind loopback unless told otherwise
    assert env["FACEPIPE_NATS_URL"] == f"nats://{RELEASE}-nats:4222"
    assert env["FACEPIPE_VECTOR_STORE"] == "qdrant"
    assert env["FACEPIPE_QDRANT_URL"] == f"http://{RELEASE}-qdrant:6333"
    assert env["FACEPIPE_S3_ENDPOINT"] == f"{RELEASE}-minio:9000"
    secret = find(docs, "Secret", f"{RELEASE}-minio")
    crawler = find(docs, "Deployment", f"{RELEASE}-crawler")["spec"]["template"]["spec"]["containers"][0]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in crawler["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs["FACEPIPE_S3_ACCESS_KEY"]["key"] in secret["data"]
    assert refs["FACEPIPE_S3_SECRET_KEY"]["key"] in secret["data"]

    # Models are pulled by an init container into the volume the detector reads.
    detector = find(docs, "Deployment", f"{RELEASE}-detector")["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in detector["initContainers"]}
    assert inits["models"]["command"] == ["facepipe", "models", "pull", "opencv"]
    assert (
        find(docs, "ConfigMap", f"{RELEASE}-detector")["data"]["FACEPIPE_MODELS_DIR"]
        == "/opt/facepipe/models"
    )
    extractor = find(docs, "Deployment", f"{RELEASE}-extractor")["spec"]["template"]["spec"]
    assert [c["name"] for c in extractor["initContainers"]] == ["topology"]

    text = notes({})
    assert (
        'grpcurl -plaintext -H "authorization: Bearer $KEY" -d @ 127.0.0.1:50051 '
        "facepipe.v1.Detector/DetectBatch" in text
    )
    assert "facepipe keys create --tenant t1" in text
    assert (
        'nats --server "nats://producer:$PRODUCER@127.0.0.1:4222" pub facepipe.ingest \'{"tenant_id":"t1"'
        in text
    )
    assert f"get secret {RELEASE}-nats-auth -o jsonpath='{{.data.admin}}'" in text


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }


def test_nats_runs_with_a_user_per_service_from_a_secret(rendered) -> None:
    """The bundled NATS includes its users and permissions from a Secret; each service
    connects as its own user with its password from that Secret, and an init container
    makes the topology as the supervisor."""
    import base64

    from facepipe import natsauth

    docs = rendered["default"]
    secret = find(docs, "Secret", f"{RELEASE}-nats-auth")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {*natsauth.fixed_users(), "auth.conf"}
    assert all(len(data[u]) == 32 for u in natsauth.fixed_users())
    conf = data["auth.conf"]
    assert conf.startswith("authorization: ")
    users = {u["user"]: u for u in json.loads(conf.removeprefix("authorization: "))["users"]}
    assert set(users) == set(natsauth.fixed_users())
    for user in natsauth.fixed_users():
        assert users[user]["password"] == data[user]
        expected = natsauth.permissions(user)
        assert users[user].get("permissions") == (expected.as_dict() if expected else None), user
    # Only the embedder (and the indexer, requeueing its own orphans) publishes embedded faces.
    publishers = {
        u for u, e in users.items() if "permissions" not in e or "facepipe.faces.embedded" in str(e)
    }
    assert publishers == {"admin", "embedder", "indexer"}

    nats_conf = find(docs, "ConfigMap", f"{RELEASE}-nats")["data"]["nats.conf"]
    assert "include auth.conf" in nats_conf
    sts = find(docs, "StatefulSet", f"{RELEASE}-nats")["spec"]["template"]["spec"]
    sources = next(v for v in sts["volumes"] if v["name"] == "config")["projected"]["sources"]
    assert {"key": "auth.conf", "path": "auth.conf"} in sources[1]["secret"]["items"]
    assert sources[1]["secret"]["name"] == secret["metadata"]["name"]

    for service in natsauth.SERVICE_USERS:
        pod = find(docs, "Deployment", f"{RELEASE}-{service}")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        plain = {e["name"]: e.get("value") for e in container["env"]}
        assert plain["FACEPIPE_NATS_USER"] == service
        assert secret_refs(container)["FACEPIPE_NATS_PASSWORD"] == {
            "name": secret["metadata"]["name"],
            "key": service,
        }
        topology = next(c for c in pod["initContainers"] if c["name"] == "topology")
        assert topology["command"] == ["facepipe", "provision"]
        assert secret_refs(topology)["FACEPIPE_NATS_PASSWORD"]["key"] == "supervisor"
        # The service's own container never holds the supervisor's password.
        assert all(ref["key"] == service for ref in secret_refs(container).values() if "nats" in ref["name"])


def test_nats_producer_tenants_and_no_auth() -> None:
    import base64

    docs = render({"nats": {"enabled": True, "auth": {"producerTenants": ["acme"]}}})
    conf = base64.b64decode(find(docs, "Secret", f"{RELEASE}-nats-auth")["data"]["auth.conf"]).decode()
    users = {u["user"]: u for u in json.loads(conf.removeprefix("authorization: "))["users"]}
    assert users["producer-acme"]["permissions"]["publish"]["allow"] == ["facepipe.ingest.acme"]

    open_docs = render({"nats": {"enabled": True, "auth": {"enabled": False}}})
    assert find(open_docs, "Secret", f"{RELEASE}-nats-auth") is None
    assert "include" not in find(open_docs, "ConfigMap", f"{RELEASE}-nats")["data"]["nats.conf"]
    pod = find(open_docs, "Deployment", f"{RELEASE}-extractor")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert "FACEPIPE_NATS_USER" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_edge_vector_store_keeps_one_indexer_on_a_volume() -> None:
    """And one recognizer on a volume of its own: each owns its Edge shards."""
    docs = render({"vectorStore": "edge", "qdrant": {"enabled": False}})
    for owner in ("indexer", "recognizer"):
        deployment = find(docs, "Deployment", f"{RELEASE}-{owner}")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert find(docs, "HorizontalPodAutoscaler", f"{RELEASE}-{owner}") is None
        claim = find(docs, "PersistentVolumeClaim", f"{RELEASE}-{owner}-data")
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        env = find(docs, "ConfigMap", f"{RELEASE}-{owner}")["data"]
        assert env["FACEPIPE_VECTOR_STORE"] == "edge" and "FACEPIPE_QDRANT_URL" not in env
    assert find(docs, "StatefulSet", f"{RELEASE}-qdrant") is None
    assert find(docs, "HorizontalPodAutoscaler", f"{RELEASE}-detector")
    assert_valid_kubernetes(docs)


def test_kind_values_expose_the_mapped_node_ports(rendered) -> None:
    cluster = yaml.safe_load((KIND / "cluster.yaml").read_text())
    mappings = {m["containerPort"]: m["hostPort"] for m in cluster["nodes"][0]["extraPortMappings"]}
    docs = rendered["kind"]
    detector = {p["name"]: p for p in find(docs, "Service", f"{RELEASE}-detector")["spec"]["ports"]}
    assert mappings[detector["grpc"]["nodePort"]] == DEFAULT_PORTS["detector"]
    nats = {p["name"]: p for p in find(docs, "Service", f"{RELEASE}-nats")["spec"]["ports"]}
    assert mappings[nats["client"]["nodePort"]] == 4222
    grafana = values_file(KIND / "values-monitoring.yaml")["grafana"]["service"]["nodePort"]
    assert mappings[grafana] == 3000
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    assert {c["imagePullPolicy"] for p in pods for c in p["containers"]} == {"Never"}
    assert find(docs, "ConfigMap", f"{RELEASE}-embedder")["data"]["FACEPIPE_MODEL_PACK"] == "local"
    # kind runs on baked models: every service that reads models must get them baked in.
    readers = {
        d["metadata"]["name"].removeprefix(f"{RELEASE}-")
        for d in docs
        if d["kind"] == "ConfigMap" and "FACEPIPE_MODELS_DIR" in d.get("data", {})
    }
    baked = re.search(
        r"^\s*([a-z| ]+)\)\n\s*if \[ -n \"\$\{BAKE_MODELS",
        (ROOT / "deploy/docker/images.sh").read_text(),
        re.M,
    )
    assert readers and readers <= {s.strip() for s in baked.group(1).split("|")}


# -- secrets, TLS and network policies ---------------------------------------------

KEY_MOUNT = "/etc/facepipe/keys"
TLS_MOUNT = "/etc/facepipe/tls"
COMPONENTS = [*SERVICES, "node"]


def pod_of(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(docs, "Deployment", f"{RELEASE}-{name}")["spec"]["template"]["spec"]


def mounts(pod: dict[str, Any]) -> dict[str, str]:
    """mount path -> the Secret behind it, for the service container's Secret volumes."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    container = pod["containers"][0]
    return {m["mountPath"]: secrets[m["name"]] for m in container["volumeMounts"] if m["name"] in secrets}


def test_every_service_mounts_the_service_credential(rendered) -> None:
    for name in ("default", "production"):
        docs = rendered[name]
        running = [c for c in COMPONENTS if find(docs, "Deployment", f"{RELEASE}-{c}")]
        expected = "facepipe-service-key" if name == "production" else f"{RELEASE}-service-key"
        for component in running:
            pod = pod_of(docs, component)
            assert mounts(pod)[KEY_MOUNT] == expected, (name, component)
            [volume] = [v for v in pod["volumes"] if v["name"] == "service-key"]
            assert volume["secret"]["items"] == [{"key": "service-key", "path": "service.key"}]
            assert volume["secret"]["defaultMode"] == 0o440
            env = find(docs, "ConfigMap", f"{RELEASE}-{component}")["data"]
            assert env["FACEPIPE_SERVICE_KEY_FILE"] == f"{KEY_MOUNT}/service.key"
    # Without an existing Secret the chart makes one, kept across upgrades and uninstalls.
    secret = find(rendered["default"], "Secret", f"{RELEASE}-service-key")
    assert len(secret["data"]["service-key"]) >= 40
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert find(rendered["production"], "Secret", f"{RELEASE}-service-key") is None


def test_default_install_serves_plain_grpc(rendered) -> None:
    for component in SERVICES:
        env = find(rendered["default"], "ConfigMap", f"{RELEASE}-{component}")["data"]
        assert not [k for k in env if k.startswith(("FACEPIPE_TLS", "FACEPIPE_NATS_TLS"))]
        assert TLS_MOUNT not in mounts(pod_of(rendered["default"], component))
        assert env["FACEPIPE_NATS_URL"] == f"nats://{RELEASE}-nats:4222"


def test_production_turns_tls_on_from_secrets(rendered) -> None:
    docs = rendered["production"]
    for component in COMPONENTS:
        env = find(docs, "ConfigMap", f"{RELEASE}-{component}")["data"]
        assert env["FACEPIPE_TLS_CERT"] == f"{TLS_MOUNT}/tls.crt"
        assert env["FACEPIPE_TLS_KEY"] == f"{TLS_MOUNT}/tls.key"
        assert env["FACEPIPE_TLS_CA"] == f"{TLS_MOUNT}/ca.crt"
        assert env["FACEPIPE_TLS_CLIENT_AUTH"] == "require"
        assert env["FACEPIPE_NATS_TLS_CA"] == f"{TLS_MOUNT}/ca.crt"
        assert env["FACEPIPE_NATS_TLS_CERT"] == f"{TLS_MOUNT}/tls.crt"
        pod = pod_of(docs, component)
        assert mounts(pod)[TLS_MOUNT] == "facepipe-tls"
        container = pod["containers"][0]
        nats_url = next(e for e in container["env"] if e["name"] == "FACEPIPE_NATS_URL")
        assert nats_url["valueFrom"]["secretKeyRef"] == {"name": "facepipe-nats", "key": component}
        assert "appProtocol" not in find(docs, "Service", f"{RELEASE}-{component}")["spec"]["ports"][0]
    # The settings the chart sets are the ones the code reads.
    from facepipe.config import Settings

    settings = Settings.from_env("detector", find(docs, "ConfigMap", f"{RELEASE}-detector")["data"])
    assert settings.tls.serves_tls and settings.tls.client_tls and settings.tls.client_auth == "require"
    assert settings.nats_tls.client_tls
    assert settings.auth.service_key_file == Path(KEY_MOUNT) / "service.key"
    text = notes(VALUE_SETS["production"])
    assert "-plaintext" not in text and "grpcurl -cacert ca.crt -cert client.crt -key client.key" in text


def test_tls_needs_a_secret() -> None:
    with pytest.raises(helm.HelmError, match="tls: set tls.secretName"):
        render({"tls": {"enabled": True}})
    docs = render(
        {"tls": {"enabled": True, "secretName": "all"}, "services": {"indexer": {"tlsSecret": "own"}}}
    )
    assert mounts(pod_of(docs, "indexer"))[TLS_MOUNT] == "own"
    assert mounts(pod_of(docs, "detector"))[TLS_MOUNT] == "all"
    assert_valid_kubernetes(docs)


def test_bundled_nats_serves_tls_from_a_secret() -> None:
    values = {
        "tls": {"enabled": True, "secretName": "facepipe-tls", "nats": {"enabled": True}},
        "nats": {"enabled": True, "tls": {"secretName": "facepipe-tls", "verify": True}},
    }
    docs = render(values)
    assert_valid_kubernetes(docs)
    conf = find(docs, "ConfigMap", f"{RELEASE}-nats")["data"]["nats.conf"]
    assert "cert_file: /etc/nats-tls/tls.crt" in conf and "verify: true" in conf
    nats_pod = find(docs, "StatefulSet", f"{RELEASE}-nats")["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "facepipe-tls"}} in nats_pod["volumes"]
    assert "/etc/nats-tls" in {m["mountPath"] for m in nats_pod["containers"][0]["volumeMounts"]}
    env = find(docs, "ConfigMap", f"{RELEASE}-extractor")["data"]
    assert env["FACEPIPE_NATS_URL"] == f"tls://{RELEASE}-nats:4222"
    assert env["FACEPIPE_NATS_TLS_CA"] == f"{TLS_MOUNT}/ca.crt"
    # Half of it fails the install, naming the other half.
    with pytest.raises(helm.HelmError, match="set tls.nats.enabled"):
        render({"nats": {"enabled": True, "tls": {"secretName": "facepipe-tls"}}})
    with pytest.raises(helm.HelmError, match="set nats.tls.secretName"):
        render({"tls": {"enabled": True, "secretName": "facepipe-tls", "nats": {"enabled": True}}})
    assert "tls {" not in find(render({}), "ConfigMap", f"{RELEASE}-nats")["data"]["nats.conf"]


def policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


def allowed(policy: dict[str, Any], port: int | str) -> list[dict[str, Any]]:
    """The peers a policy admits on ``port``."""
    return [
        peer
        for rule in policy.get("ingress", [])
        if any(p["port"] == port for p in rule.get("ports", [{"port": port}]))
        for peer in rule["from"]
    ]


def components_of(peer: dict[str, Any]) -> set[str]:
    selector = peer["podSelector"]
    assert selector["matchLabels"] == {
        "app.kubernetes.io/name": "facepipe",
        "app.kubernetes.io/instance": RELEASE,
    }
    [expression] = selector["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/component" and expression["operator"] == "In"
    return set(expression["values"])


CLIENT_PEER = {"podSelector": {"matchLabels": {"facepipe.io/client": "true"}}}
MONITORING_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def test_network_policies_allow_only_the_designed_flows() -> None:
    docs = render({"inferenceNodes": {"enabled": True}, "otelCollector": {"enabled": True}})
    assert_valid_kubernetes(docs)
    found = policies(docs)
    deny = found[f"{RELEASE}-default-deny"]
    assert deny == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}},
        "policyTypes": ["Ingress"],
    }
    # Every allow rule names its sources: a rule without `from` would admit everyone.
    for name, policy in found.items():
        assert policy["policyTypes"] == ["Ingress"], name
        for rule in policy.get("ingress", []):
            assert rule.get("from"), name

    for service in SERVICES:
        policy = found[f"{RELEASE}-{service}"]
        assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == service
        client, *internal = allowed(policy, "grpc")
        assert client == CLIENT_PEER
        # The web service calls every service; the persons service reaches the faces through the
        # indexer, and the recognizer a person's faces through the persons service.
        callers = {"indexer": [{"persons"}, {"web"}], "persons": [{"recognizer"}, {"web"}]}
        assert [components_of(peer) for peer in internal] == callers.get(service, [{"web"}])
        monitoring, web = allowed(policy, "metrics")
        assert monitoring == MONITORING_PEER and components_of(web) == {"web"}
    [node_callers] = allowed(found[f"{RELEASE}-node"], "grpc")
    assert components_of(node_callers) == {"detector"}  # inferenceNodes.clients, nobody else

    running = {*SERVICES, "node"}
    nats = found[f"{RELEASE}-nats"]
    assert nats["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "nats",
        "app.kubernetes.io/instance": RELEASE,
    }
    services_peer, producers = allowed(nats, 4222)
    assert components_of(services_peer) == running
    assert producers == {"podSelector": {"matchLabels": {"facepipe.io/nats-client": "true"}}}
    assert allowed(nats, 8222) == [MONITORING_PEER]  # KEDA's namespace only with keda.enabled
    # The indexer and the recognizer (its gallery), and the Qdrant servers among themselves
    # (cluster traffic, any port).
    qdrant_peer, qdrant_servers = allowed(found[f"{RELEASE}-qdrant"], 6333)
    assert components_of(qdrant_peer) == {"indexer", "recognizer"}
    assert qdrant_servers == {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "qdrant", "app.kubernetes.io/instance": RELEASE}
        }
    }
    [minio_peer] = allowed(found[f"{RELEASE}-minio"], 9000)
    assert components_of(minio_peer) == {"extractor", "detector", "embedder", "indexer", "recognizer", "web"}
    assert allowed(found[f"{RELEASE}-minio"], 9001) == []  # the console: port-forward only
    [otel_peer] = allowed(found[f"{RELEASE}-otel-collector"], 4317)
    assert components_of(otel_peer) == running

    keda = render({"keda": {"enabled": True}})
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in allowed(
        policies(keda)[f"{RELEASE}-nats"], 8222
    )
    # A disabled service is no peer; no clients configured: nobody outside may call.
    closed = policies(render({"services": {"crawler": {"enabled": False}}, "networkPolicy": {"clients": []}}))
    assert f"{RELEASE}-crawler" not in closed
    # Only the release's own persons and web services call the indexer, only the web service the others.
    persons_peer, web_peer = allowed(closed[f"{RELEASE}-indexer"], "grpc")
    assert components_of(persons_peer) == {"persons"} and components_of(web_peer) == {"web"}
    [web_peer] = allowed(closed[f"{RELEASE}-extractor"], "grpc")
    assert components_of(web_peer) == {"web"}
    assert components_of(allowed(closed[f"{RELEASE}-nats"], 4222)[0]) == {
        "extractor",
        "detector",
        "embedder",
        "indexer",
        "persons",
        "recognizer",
    }


def test_production_and_kind_network_policies(rendered) -> None:
    production = policies(rendered["production"])
    # External backends: only the services' own policies, clients from labelled namespaces.
    assert set(production) == {f"{RELEASE}-default-deny", *(f"{RELEASE}-{c}" for c in [*COMPONENTS, "web"])}
    clients, persons_peer, web_peer = allowed(production[f"{RELEASE}-indexer"], "grpc")
    assert clients == {"namespaceSelector": {"matchLabels": {"facepipe.io/client": "true"}}}
    assert components_of(persons_peer) == {"persons"} and components_of(web_peer) == {"web"}
    assert components_of(allowed(production[f"{RELEASE}-node"], "grpc")[0]) == {"detector", "embedder"}
    assert policies(rendered["kind"]) == {}  # the host calls kind's NodePorts


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nats": {"enabled": False}}, "external.nats.url"),
        ({"minio": {"enabled": False}}, "external.s3.endpoint"),
        ({"qdrant": {"enabled": False}}, "external.qdrant.url"),
        ({"models": {"source": "volume"}}, "models.existingClaim"),
        (
            {
                "keda": {"enabled": True},
                "nats": {"enabled": False},
                "external": {"nats": {"url": "nats://n:4222"}},
            },
            "monitoringEndpoint",
        ),
    ],
)
def test_missing_backend_fails_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_windows_inference_node_uses_windows_security_settings() -> None:
    docs = render(
        {
            "inferenceNodes": {
                "enabled": True,
                "os": "windows",
                "providers": "DmlExecutionProvider,CPUExecutionProvider",
            }
        }
    )
    spec = find(docs, "Deployment", f"{RELEASE}-node")["spec"]["template"]["spec"]
    assert spec["os"] == {"name": "windows"}
    assert spec["securityContext"]["windowsOptions"]["runAsUserName"] == "ContainerUser"
    assert "seccompProfile" not in spec["securityContext"]
    assert_valid_kubernetes(docs)


def test_dashboard_and_rule_folders_ship_when_filled(tmp_path: Path) -> None:
    # The chart ships its own dashboards and alerts.
    shipped = render({"prometheusRule": {"enabled": True}})
    boards = [d for d in shipped if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    names = {name for b in boards for name in b["data"]}
    assert {"pipeline-overview.json", "detector-inference.json", "crawler.json"} <= names
    [shipped_rule] = [d for d in shipped if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"] for g in shipped_rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"HighDLQRate", "QueueBacklog", "SlowProcessing", "ServiceDown", "DetectorBackoff"} <= alerts

    # Empty folders render nothing; whatever is dropped into them is shipped as is.
    chart = tmp_path / "facepipe"
    shutil.copytree(CHART, chart)
    for f in [*(chart / "dashboards").glob("*.json"), *(chart / "rules").glob("*.yaml")]:
        f.unlink()
    empty = render({"prometheusRule": {"enabled": True}}, chart)
    assert not [d for d in empty if d["kind"] == "PrometheusRule"]
    assert not [d for d in empty if "grafana_dashboard" in d["metadata"].get("labels", {})]

    dashboard = {
        "title": "facepipe pipeline",
        "panels": [{"type": "timeseries", "targets": [{"expr": "facepipe_ready"}]}],
    }
    (chart / "dashboards" / "pipeline.json").write_text(json.dumps(dashboard))
    rules = {
        "groups": [
            {
                "name": "facepipe",
                "rules": [{"alert": "FacepipeNotReady", "expr": "facepipe_ready == 0", "for": "5m"}],
            }
        ]
    }
    (chart / "rules" / "availability.yaml").write_text(yaml.safe_dump(rules))

    docs = render({"prometheusRule": {"enabled": True}}, chart)
    [board] = [d for d in docs if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert json.loads(board["data"]["pipeline.json"]) == dashboard
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == rules
    assert_valid_kubernetes(docs)
    off = render({"dashboards": {"enabled": False}}, chart)
    assert not [
        d
        for d in off
        if d["kind"] == "PrometheusRule" or "grafana_dashboard" in d["metadata"].get("labels", {})
    ]

    (chart / "rules" / "broken.yaml").write_text("alert: NotAGroupList\n")
    with pytest.raises(helm.HelmRenderError, match="groups"):
        render({"prometheusRule": {"enabled": True}}, chart)


def test_otel_collector_is_optional_and_wired() -> None:
    docs = render({"otelCollector": {"enabled": True}})
    collector = find(docs, "Deployment", f"{RELEASE}-otel-collector")
    assert collector and find(docs, "Service", f"{RELEASE}-otel-collector")
    config = yaml.safe_load(find(docs, "ConfigMap", f"{RELEASE}-otel-collector")["data"]["config.yaml"])
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    env = find(docs, "ConfigMap", f"{RELEASE}-embedder")["data"]
    assert env["FACEPIPE_OTLP_ENDPOINT"] == f"http://{RELEASE}-otel-collector:4317"
    assert_valid_kubernetes(docs)


def test_chart_packages_with_its_subcharts(tmp_path: Path) -> None:
    archive = Path(helm.package(CHART, destination=tmp_path))
    assert archive.name == "facepipe-0.1.0.tgz" and archive.is_file()
    with helm.Chart.load(archive) as ch:
        assert {d["name"] for d in ch.dependencies} == {"nats", "qdrant", "minio"}
        ch.validate_schema({})


# -- images -------------------------------------------------------------------


def dockerfile(service: str) -> tuple[str, list[tuple[str, str]]]:
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return text, instructions


@pytest.mark.parametrize("service", [*SERVICES, "node"])
def test_dockerfile_matches_its_service(service: str) -> None:
    _, instructions = dockerfile(service)
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith("AS builder"), "multi-stage with a builder"
    assert any(word == "COPY" and rest.startswith("--from=builder") for word, rest in instructions)
    args = [rest for word, rest in instructions if word == "ARG"]
    assert args[0] == "PYTHON_IMAGE=python:3.11-slim"
    assert set(froms) == {"${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"}
    [user] = [rest for word, rest in instructions if word == "USER"]
    assert user.split(":")[0] not in ("0", "root") and user.startswith("10001")
    [entrypoint] = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["facepipe", "serve", service]
    [env] = [rest for word, rest in instructions if word == "ENV"]
    assert "FACEPIPE_GRPC_HOST=0.0.0.0" in env, "a container must listen beyond its loopback"
    [expose] = [rest for word, rest in instructions if word == "EXPOSE"]
    port = DEFAULT_PORTS[service]
    assert expose.split() == [str(port), str(port + HTTP_PORT_OFFSET)]
    assert word_after(instructions, "USER") in ("EXPOSE", "HEALTHCHECK", "ENTRYPOINT"), (
        "nothing runs as root after USER"
    )
    for shared in re.findall(r"deploy/docker/[\w.-]+", " ".join(rest for _, rest in instructions)):
        assert (ROOT / shared).is_file(), shared


def word_after(instructions: list[tuple[str, str]], word: str) -> str:
    words = [w for w, _ in instructions]
    return words[words.index(word) + 1]


def test_dockerfiles_share_one_shape() -> None:
    def shape(service: str) -> str:
        text, _ = dockerfile(service)
        port = DEFAULT_PORTS[service]
        text = text.replace(str(port + HTTP_PORT_OFFSET), "HTTP_PORT").replace(str(port), "PORT")
        text = re.sub(r'ARG APT_PACKAGES="[^"]*"', 'ARG APT_PACKAGES=""', text)
        return "\n".join(
            line for line in text.replace(service, "SERVICE").splitlines() if not line.startswith("#")
        )

    shapes = {service: shape(service) for service in [*SERVICES, "node"]}
    assert len(set(shapes.values())) == 1, "Dockerfiles drifted apart"


def test_dockerignore_keeps_the_build_inputs() -> None:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"
    kept = {p[1:] for p in patterns if p.startswith("!")}
    assert {
        "pyproject.toml",
        "README.md",
        "facepipe",
        "services",
        "deploy/docker",
        "build/model-pack",
    } <= kept


def run_script(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash"), str(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_images_script_explains_missing_docker(tmp_path: Path) -> None:
    # A PATH with the basic tools but no docker.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ls", "rm", "mkdir", "cp"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir), "VERSION": "test", "HOME": str(tmp_path)}
    result = run_script(ROOT / "deploy" / "docker" / "images.sh", env)
    assert result.returncode != 0
    assert "docker not found" in result.stderr

    bad = run_script(ROOT / "deploy" / "docker" / "images.sh", {**env, "SERVICES": "detectr"})
    assert bad.returncode != 0 and "unknown service 'detectr'" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nomodels = run_script(ROOT / "deploy" / "docker" / "images.sh", {**env, "BAKE_MODELS": str(empty)})
    assert nomodels.returncode != 0 and "holds no .onnx files" in nomodels.stderr


SCRIPTS = sorted(
    [*(ROOT / "deploy" / "docker").glob("*.sh"), *KIND.glob("*.sh"), *(ROOT / "scripts").glob("*.sh")]
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if not shutil.which("shellcheck"):
        pytest.fail("shellcheck is not installed (bash scripts/system-deps.sh installs Debian's shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_make_targets_call_the_scripts() -> None:
    out = subprocess.run(
        ["make", "-n", "images", "kind-down"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert f"VERSION={version} bash deploy/docker/images.sh" in out.stdout
    assert "bash deploy/kind/down.sh" in out.stdout


# -- the web service ----------------------------------------------------------------


def test_web_service_has_its_objects(rendered) -> None:
    """HTTP on one port with HTTP probes, a client of the services (their gRPC policy
    admits it), every service's address, a session secret, an autoscaler."""
    docs = rendered["default"]
    full = f"{RELEASE}-web"
    dep = find(docs, "Deployment", full)
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["facepipe.io/client"] == "true"
    [container] = pod["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["args"] == ["--port", "8080"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secret_env["FACEPIPE_WEB_SESSION_SECRET"] == f"{RELEASE}-web-session"
    assert find(docs, "Secret", f"{RELEASE}-web-session")
    config = find(docs, "ConfigMap", full)["data"]
    backends = dict(pair.split("=") for pair in config["FACEPIPE_WEB_BACKENDS"].split(","))
    assert backends == {s: f"{RELEASE}-{s}:{DEFAULT_PORTS[s]}" for s in SERVICES}
    assert config["FACEPIPE_WEB_SECURE_COOKIES"] == "false"
    svc = find(docs, "Service", full)
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert find(docs, "HorizontalPodAutoscaler", full)["spec"]["scaleTargetRef"]["name"] == full
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    assert find(docs, "Ingress", full) is None, "no Ingress unless asked"


def test_web_ingress_with_tls_marks_cookies_secure() -> None:
    docs = render(
        {
            "web": {
                "ingress": {
                    "enabled": True,
                    "className": "nginx",
                    "host": "faces.example.org",
                    "tls": {"enabled": True, "secretName": "faces-tls"},
                }
            }
        }
    )
    assert_valid_kubernetes(docs)
    ingress = find(docs, "Ingress", f"{RELEASE}-web")
    assert ingress["spec"]["tls"] == [{"secretName": "faces-tls", "hosts": ["faces.example.org"]}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "faces.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": f"{RELEASE}-web",
        "port": {"name": "http"},
    }
    assert find(docs, "ConfigMap", f"{RELEASE}-web")["data"]["FACEPIPE_WEB_SECURE_COOKIES"] == "true"
    with pytest.raises(Exception, match="secretName"):
        render({"web": {"ingress": {"enabled": True, "tls": {"enabled": True}}}})


def test_web_can_be_turned_off() -> None:
    docs = render({"web": {"enabled": False}})
    assert not [d for d in docs if d["metadata"]["name"].startswith(f"{RELEASE}-web")]
    [minio_peer] = allowed(policies(docs)[f"{RELEASE}-minio"], 9000)
    assert "web" not in components_of(minio_peer)


def test_web_probes_talk_tls_when_the_port_serves_it() -> None:
    docs = render({"tls": {"enabled": True, "secretName": "facepipe-tls"}})
    assert_valid_kubernetes(docs)
    [container] = find(docs, "Deployment", f"{RELEASE}-web")["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    config = find(docs, "ConfigMap", f"{RELEASE}-web")["data"]
    assert config["FACEPIPE_TLS_CERT"] == "/etc/facepipe/tls/tls.crt"
