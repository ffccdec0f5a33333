#!/usr/bin/env bash
# The main job, end to end: install, export the embedder, index a gallery, serve, search.
#
#   LOOKALIKE_GALLERY   folder of <label>/<image> files (default: a slice of ../shared/lfw)
#   LOOKALIKE_WEIGHTS   imagenet (default), none, or a weights file
#   LOOKALIKE_PEOPLE    how many people of LFW to index (default 80)
set -euo pipefail
cd "$(dirname "$0")/.."
work=artifacts/quickstart
mkdir -p "$work"

python3 -m pip install --quiet --disable-pip-version-check -e '.[server,export]'

weights=${LOOKALIKE_WEIGHTS:-imagenet}
if [ ! -f "$work/model.onnx" ]; then
  if ! lookalike export --weights "$weights" --out "$work/model.onnx"; then
    [ "$weights" = imagenet ] || exit 1
    echo "WARNING: no ImageNet weights (no network?): continuing with --weights none." >&2
    echo "WARNING: a random-weight model finds the same photo, not the same person." >&2
    lookalike export --weights none --out "$work/model.onnx"
  fi
fi

gallery=${LOOKALIKE_GALLERY:-}
if [ -z "$gallery" ]; then
  lfw=${LOOKALIKE_LFW_DIR:-../shared/lfw}
  if [ ! -d "$lfw/images" ]; then
    echo "error: set LOOKALIKE_GALLERY to a folder of <person>/<image> files" >&2
    exit 2
  fi
  # A slice of LFW: the first people (alphabetically) with at least two photos.
  gallery=$work/gallery
  rm -rf "$gallery" && mkdir -p "$gallery"
  awk 'NR > 1 && $2 >= 2 {print $1}' "$lfw/peopleDevTrain.txt" | sort \
    | head -n "${LOOKALIKE_PEOPLE:-80}" \
    | while read -r person; do ln -s "$(realpath "$lfw/images/$person")" "$gallery/$person"; done
fi

lookalike index "$gallery" --model "$work/model.onnx" --out "$work/index" --crop center

port=${LOOKALIKE_PORT:-50051}
lookalike serve --model "$work/model.onnx" --index "$work/index" --port "$port" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server' EXIT
query=$(find -L "$gallery" -type f | sort | head -n 1)
for _ in $(seq 120); do  # until warm-up is over and Search answers
  lookalike search "$query" --server "localhost:$port" -k 1 --log-level ERROR >/dev/null 2>&1 && break
  sleep 1
done
lookalike info --server "localhost:$port"

echo
echo "Searching for $query:"
lookalike search "$query" --server "localhost:$port" -k 10
