#!/usr/bin/env bash
# make run: start the local stack on the embedded defaults (or reuse a running
# one), ingest the sample faces minus one photo per person, then search with
# each held-out photo and show the best match. Safe to run again: re-ingesting
# is deduplicated.
#   SAMPLES=DIR              one folder of photos per person (default ../shared/faces)
#   TENANT=NAME              the tenant to ingest into (default demo)
#   FACEPIPE_DATA_DIR=DIR    the stack's directory (default $FACEPIPE_HOME/stack)
set -euo pipefail
cd "$(dirname "$0")/.."
FP=.venv/bin/facepipe
SAMPLES=${SAMPLES:-../shared/faces}
TENANT=${TENANT:-demo}
[ -d "$SAMPLES" ] || { echo "no sample faces at $SAMPLES (set SAMPLES=DIR)"; exit 1; }
stack_args=()
[ -z "${FACEPIPE_DATA_DIR:-}" ] || stack_args=(--data-dir "$FACEPIPE_DATA_DIR")

if ! $FP status "${stack_args[@]}" >/dev/null 2>&1; then
  echo "== starting the local stack"
  $FP up --detach "${stack_args[@]}"
else
  echo "== the local stack is already running"
fi
$FP status "${stack_args[@]}"

library=$(mktemp -d -t facepipe-demo.XXXX)
trap 'rm -rf "$library"' EXIT
held_out=()
for person in "$SAMPLES"/*/; do
  mapfile -t photos < <(find "$person" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort)
  [ ${#photos[@]} -ge 2 ] || continue
  held_out+=("${photos[0]}")
  mkdir -p "$library/$(basename "$person")"
  for photo in "${photos[@]:1}"; do ln -s "$(realpath "$photo")" "$library/$(basename "$person")/"; done
done

echo "== ingesting $(find "$library" -type l | wc -l) photos for tenant '$TENANT'"
$FP ingest "$library" --tenant "$TENANT" --wait "${stack_args[@]}"

echo "== searching with ${#held_out[@]} held-out photos"
for photo in "${held_out[@]}"; do
  $FP search "$photo" --tenant "$TENANT" --top-k 1 --json "${stack_args[@]}" | python3 -c '
import json, os, sys
query, matches = sys.argv[1], json.load(sys.stdin)["matches"]
person = os.path.basename(os.path.dirname(query))
if not matches:
    print(f"{person:>16} -> no match")
else:
    best = matches[0]
    found, score, thumb = best["url"].split("/")[-2], best["score"], best["thumb"]
    print(f"{person:>16} -> {found:<16} score {score:.3f}  thumbnail {thumb}")
' "$photo"
done
echo "== the stack keeps running; 'facepipe status' shows it and 'facepipe down' stops it"
web_url=$($FP status --json "${stack_args[@]}" | python3 -c '
import json, sys
rows = json.load(sys.stdin)
print(next(("http://%s/" % r["address"] for r in rows if r["name"] == "web"), ""))
' || true)
key_file="${FACEPIPE_DATA_DIR:-${FACEPIPE_HOME:-$HOME/.facepipe}/stack}/admin.key"
echo "== web UI: $web_url (tenant '$TENANT'; log in with the key in $key_file)"
