#!/usr/bin/env bash
# make kind-down: delete the kind cluster (volumes and all).
set -euo pipefail
CLUSTER=${KIND_CLUSTER:-facepipe}
if ! command -v kind >/dev/null 2>&1; then
  echo "kind-down needs 'kind' on PATH" >&2
  exit 1
fi
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER"
fi
