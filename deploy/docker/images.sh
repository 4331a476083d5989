#!/usr/bin/env bash
# Builds facepipe/<service>:$VERSION for every service (run from the repo root;
# `make images` does). Optional environment:
#   BAKE_MODELS  a folder of .onnx files baked into detector, embedder, indexer, persons, recognizer, node
#   MODEL_PACK   which pack BAKE_MODELS holds (default local)
#   NODE_EXTRAS  pip extras for the node image, e.g. cuda (tagged $VERSION-cuda)
#   SERVICES     a subset, e.g. "detector node"
set -euo pipefail

VERSION=${VERSION:?set VERSION}
SERVICES=${SERVICES:-crawler extractor detector embedder indexer persons recognizer node web}
MODEL_PACK=${MODEL_PACK:-local}
STAGE=build/model-pack

for service in $SERVICES; do
  if [ ! -f "services/$service/Dockerfile" ]; then
    echo "unknown service '$service': no services/$service/Dockerfile" >&2
    exit 1
  fi
done
if [ -n "${BAKE_MODELS:-}" ] && ! ls "$BAKE_MODELS"/*.onnx >/dev/null 2>&1; then
  echo "BAKE_MODELS=$BAKE_MODELS holds no .onnx files" >&2
  exit 1
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "docker not found: install Docker (or another engine with a docker CLI) to build images" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "cannot reach a Docker engine: is the daemon running, and may this user use it?" >&2
  exit 1
fi

# The pack is staged inside the build context: a Dockerfile cannot read ../shared.
rm -rf "$STAGE"
mkdir -p "$STAGE"
if [ -n "${BAKE_MODELS:-}" ]; then
  # The models and their provenance/licence notes.
  find "$BAKE_MODELS" -maxdepth 1 -type f \( -name '*.onnx' -o -name '*.md' -o -name '*.txt' \) \
    -exec cp {} "$STAGE"/ \;
fi

export DOCKER_BUILDKIT=1
for service in $SERVICES; do
  tag="facepipe/$service:$VERSION"
  args=(--file "services/$service/Dockerfile")
  case $service in
  detector | embedder | indexer | persons | recognizer | node)
    if [ -n "${BAKE_MODELS:-}" ]; then
      args+=(--build-arg "MODEL_PACK_DIR=$STAGE" --build-arg "MODEL_PACK=$MODEL_PACK")
    fi
    ;;
  esac
  if [ "$service" = node ] && [ -n "${NODE_EXTRAS:-}" ]; then
    tag="$tag-${NODE_EXTRAS//,/-}"
    args+=(--build-arg "EXTRAS=$NODE_EXTRAS")
  fi
  echo "==> $tag"
  docker build "${args[@]}" --tag "$tag" .
done
