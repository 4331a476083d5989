#!/usr/bin/env bash
# Smoke test of facepipe on kind (make kind-up runs it):
#   1. DetectBatch through the detector NodePort (localhost:50051) with grpcurl;
#   2. an ingest message on NATS (localhost:4222) for an image served in-cluster;
#   3. `facepipe search` against the indexer until that image is found.
#   SMOKE_IMAGE     a photo with one face (default ../shared/faces/barack_obama/obama1.jpg)
#   SEARCH_SERVICE  the service `facepipe search --addr` talks to (default indexer)
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=${VERSION:?set VERSION}
CLUSTER=${KIND_CLUSTER:-facepipe}
NAMESPACE=${NAMESPACE:-facepipe}
CONTEXT="kind-$CLUSTER"
SMOKE_IMAGE=${SMOKE_IMAGE:-../shared/faces/barack_obama/obama1.jpg}
SEARCH_SERVICE=${SEARCH_SERVICE:-indexer}
TENANT=smoke
# The project venv has grpcurl, nats-py and the facepipe CLI.
PATH="$PWD/.venv/bin:$PATH"
PYTHON=$(command -v python || command -v python3)
kube=(kubectl --context "$CONTEXT" --namespace "$NAMESPACE")

fail() {
  echo "smoke: FAILED: $*" >&2
  exit 1
}
[ -f "$SMOKE_IMAGE" ] || fail "no image at $SMOKE_IMAGE (set SMOKE_IMAGE to a photo with a face)"
command -v grpcurl >/dev/null || fail "grpcurl not found (make setup installs it into .venv)"
command -v facepipe >/dev/null || fail "facepipe CLI not found (make setup)"

work=$(mktemp -d)
forward_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; fi
  "${kube[@]}" delete pod,service,configmap facepipe-smoke-web --ignore-not-found >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# NATS refuses anonymous connections: the admin (keys) and the trusted producer (ingest)
# connect with their passwords from the chart's Secret.
nats_password() {
  "${kube[@]}" get secret facepipe-nats-auth --output "jsonpath={.data.$1}" | base64 -d
}
ADMIN_URL="nats://admin:$(nats_password admin)@127.0.0.1:4222"
PRODUCER_URL="nats://producer:$(nats_password producer)@127.0.0.1:4222"

# Every gRPC call needs an API key: one for the smoke tenant, from the key store in NATS.
KEY=$(FACEPIPE_NATS_URL=$ADMIN_URL facepipe keys create --tenant "$TENANT" --role writer --json |
  "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["key"])')

echo "==> 1/3 DetectBatch on 127.0.0.1:50051"
printf '{"images":[{"id":"smoke","data":"%s"}]}' "$(base64 <"$SMOKE_IMAGE" | tr -d '\n')" >"$work/request.json"
grpcurl -plaintext -max-time 60 -H "authorization: Bearer $KEY" -d @ 127.0.0.1:50051 facepipe.v1.Detector/DetectBatch \
  <"$work/request.json" >"$work/response.json"
faces=$("$PYTHON" -c 'import json, sys; print(len(json.load(sys.stdin)["results"][0].get("faces", [])))' \
  <"$work/response.json")
[ "$faces" -ge 1 ] || fail "DetectBatch found no face in $SMOKE_IMAGE: $(cat "$work/response.json")"
echo "    $faces face(s)"

echo "==> 2/3 ingest through NATS on 127.0.0.1:4222"
name="face.${SMOKE_IMAGE##*.}"
"${kube[@]}" create configmap facepipe-smoke-web --from-file="$name=$SMOKE_IMAGE" \
  --dry-run=client --output yaml | "${kube[@]}" apply --filename - >/dev/null
"${kube[@]}" apply --filename - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: facepipe-smoke-web
  labels: {app: facepipe-smoke-web}
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: web
      image: facepipe/crawler:$VERSION
      imagePullPolicy: Never
      command: [python, -m, http.server, "8080", --directory, /srv]
      ports: [{containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /$name, port: 8080}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts: [{name: files, mountPath: /srv}]
  volumes:
    - name: files
      configMap: {name: facepipe-smoke-web}
---
apiVersion: v1
kind: Service
metadata:
  name: facepipe-smoke-web
spec:
  selector: {app: facepipe-smoke-web}
  ports: [{port: 8080, targetPort: 8080}]
YAML
"${kube[@]}" wait --for=condition=Ready pod/facepipe-smoke-web --timeout=120s >/dev/null
url="http://facepipe-smoke-web.$NAMESPACE.svc:8080/$name"
message="{\"tenant_id\":\"$TENANT\",\"url\":\"$url\"}"
if command -v nats >/dev/null; then
  nats --server "$PRODUCER_URL" pub facepipe.ingest "$message"
else
  "$PYTHON" - "$message" "$PRODUCER_URL" <<'PY'
import asyncio
import sys

import nats


async def main() -> None:
    nc = await nats.connect(sys.argv[2], connect_timeout=10)
    await nc.publish("facepipe.ingest", sys.argv[1].encode())
    await nc.flush()
    await nc.close()


asyncio.run(main())
PY
fi
echo "    published $message"

echo "==> 3/3 facepipe search via $SEARCH_SERVICE"
port=$("${kube[@]}" get service "facepipe-$SEARCH_SERVICE" --output jsonpath='{.spec.ports[?(@.name=="grpc")].port}')
"${kube[@]}" port-forward "service/facepipe-$SEARCH_SERVICE" "$port:$port" >"$work/port-forward.log" 2>&1 &
forward_pid=$!
for _ in $(seq 60); do
  if facepipe search --addr "127.0.0.1:$port" --key "$KEY" --tenant "$TENANT" "$SMOKE_IMAGE" >"$work/search.txt" 2>&1 &&
    grep -qF "$url" "$work/search.txt"; then
    cat "$work/search.txt"
    echo "==> smoke test passed"
    exit 0
  fi
  sleep 3
done
cat "$work/search.txt" >&2
fail "the ingested image did not show up in search within 3 minutes"
