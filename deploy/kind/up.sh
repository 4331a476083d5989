#!/usr/bin/env bash
# make kind-up: create (or reuse) a kind cluster, build and load the images,
# install the chart and smoke-test it. Run from anywhere; paths are repo-relative.
#   VERSION        image tag (make passes the package version)
#   KIND_CLUSTER   cluster name (default facepipe)
#   NAMESPACE      namespace (default facepipe)
#   SHARED_MODELS  research model pack baked into the images (default ../shared/models)
#   MONITORING=1   also install kube-prometheus-stack, Grafana on localhost:3000
#   SKIP_SMOKE=1   stop after the install
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=${VERSION:?set VERSION}
CLUSTER=${KIND_CLUSTER:-facepipe}
NAMESPACE=${NAMESPACE:-facepipe}
RELEASE=facepipe
CONTEXT="kind-$CLUSTER"
SHARED_MODELS=${SHARED_MODELS:-../shared/models}
IMAGES="crawler extractor detector embedder indexer node web"

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "kind-up needs '$1' on PATH: $2" >&2
    exit 1
  fi
}
need docker "https://docs.docker.com/get-docker/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "==> reusing kind cluster $CLUSTER"
else
  echo "==> creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml --wait 180s
fi

chart_args=(--values deploy/kind/values-kind.yaml --set "image.tag=$VERSION")
if ls "$SHARED_MODELS"/*.onnx >/dev/null 2>&1; then
  echo "==> building images with the research model pack from $SHARED_MODELS baked in"
  VERSION=$VERSION BAKE_MODELS=$SHARED_MODELS MODEL_PACK=local bash deploy/docker/images.sh
else
  echo "==> no models in $SHARED_MODELS: pods pull the opencv pack at start (the cluster needs internet)"
  VERSION=$VERSION bash deploy/docker/images.sh
  chart_args+=(--set models.source=pull --set models.pack=opencv)
fi

for image in $IMAGES; do
  kind load docker-image --name "$CLUSTER" "facepipe/$image:$VERSION"
done

if [ "${MONITORING:-0}" = 1 ]; then
  echo "==> installing kube-prometheus-stack (Grafana on http://127.0.0.1:3000)"
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
  helm repo update prometheus-community >/dev/null
  helm upgrade --install monitoring prometheus-community/kube-prometheus-stack \
    --kube-context "$CONTEXT" --namespace monitoring --create-namespace \
    --values deploy/kind/values-monitoring.yaml --wait --timeout 10m
  chart_args+=(--set metrics.serviceMonitor.enabled=true --set prometheusRule.enabled=true)
fi

echo "==> installing the chart into $NAMESPACE"
helm upgrade --install "$RELEASE" deploy/helm/facepipe \
  --kube-context "$CONTEXT" --namespace "$NAMESPACE" --create-namespace \
  "${chart_args[@]}" --wait --timeout 15m

if [ "${SKIP_SMOKE:-0}" != 1 ]; then
  KIND_CLUSTER=$CLUSTER NAMESPACE=$NAMESPACE VERSION=$VERSION bash deploy/kind/smoke.sh
fi
echo "==> facepipe is up: detector gRPC on 127.0.0.1:50051, NATS on 127.0.0.1:4222"
