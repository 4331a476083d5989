#!/usr/bin/env bash
# make run: start a detector on the embedded defaults, detect the sample faces
# through it with the CLI and with grpcurl, then stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SAMPLES=${SAMPLES:-../shared/faces}
PORT=${FACEPIPE_DEMO_PORT:-50051}
LOG=$(mktemp -t facepipe-detector.XXXX.log)

"$BIN/facepipe" serve detector --port "$PORT" >"$LOG" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$BIN/grpcurl" -plaintext "127.0.0.1:$PORT" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then break; fi
  kill -0 $pid 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.2
done

echo "== services on 127.0.0.1:$PORT (reflection)"
"$BIN/grpcurl" -plaintext "127.0.0.1:$PORT" list
mapfile -t images < <(find "$SAMPLES" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort)
if [ ${#images[@]} -eq 0 ]; then echo "no sample images under $SAMPLES"; exit 1; fi
echo "== facepipe detect --addr 127.0.0.1:$PORT (${#images[@]} images)"
"$BIN/facepipe" detect --addr "127.0.0.1:$PORT" "${images[@]}"
echo "== grpcurl facepipe.v1.Detector/DetectBatch"
printf '{"images":[{"id":"%s","data":"%s"}]}' "$(basename "${images[0]}")" "$(base64 -w0 "${images[0]}")" \
  | "$BIN/grpcurl" -plaintext -d @ "127.0.0.1:$PORT" facepipe.v1.Detector/DetectBatch | head -40
