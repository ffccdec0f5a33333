#!/usr/bin/env bash
# The main job, end to end: install, export the embedder, index a gallery, serve, search.
#
#   LOOKALIKE_GALLERY   folder of <person>/<image> photos to search, with the face network
#                       (dlib's, ported; aligned faces); unset: a sample gallery of synthetic
#                       cartoon faces that lookalike draws itself, with the ResNet101
#   LOOKALIKE_WEIGHTS   the ResNet101's: imagenet (default), none, or a weights file
#   LOOKALIKE_PORT      port to serve on (default 50051)
set -euo pipefail
cd "$(dirname "$0")/.."
work=artifacts/quickstart
port=${LOOKALIKE_PORT:-50051}

# What is needed, checked before the slow steps (install, export).
gallery=${LOOKALIKE_GALLERY:-}
if [ -n "$gallery" ]; then
  if [ -z "$(find -L "$gallery" -mindepth 2 -type f -print -quit 2>/dev/null)" ]; then
    echo "error: LOOKALIKE_GALLERY=$gallery holds no <person>/<image> files" >&2
    exit 2
  fi
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "error: port $port is in use; set LOOKALIKE_PORT to a free one" >&2
  exit 2
fi
mkdir -p "$work"

. scripts/venv.sh
echo "installing lookalike into .venv (the server and export extras)" >&2
python -m pip install --quiet --disable-pip-version-check -e '.[server,export]'

if [ -z "$gallery" ]; then
  # Cartoon drawings have no real face to align: the design's ResNet101 on whole frames.
  model=$work/model.onnx
  weights=${LOOKALIKE_WEIGHTS:-imagenet}
  if [ ! -f "$model" ]; then
    if ! lookalike export --weights "$weights" --out "$model"; then
      [ "$weights" = imagenet ] || exit 1
      echo "WARNING: no ImageNet weights (no network?): continuing with --weights none." >&2
      echo "WARNING: a random-weight model finds the same photo, not the same person." >&2
      lookalike export --weights none --out "$model"
    fi
  fi
  gallery=$work/sample-gallery
  rm -rf "$gallery"
  lookalike sample-gallery "$gallery" --people 12 --photos 5
  # One drawing of person_03 is kept out of the gallery: the query.
  query=$work/query-person_03.jpg
  mv "$gallery/person_03/person_03_0005.jpg" "$query"
  what="a drawing of person_03 that is not in the gallery"
  crop=(--crop none)
  echo "No LOOKALIKE_GALLERY given: using that sample gallery. To search real photos, run"
  echo "  LOOKALIKE_GALLERY=/path/to/photos bash scripts/quickstart.sh"
  echo "with one folder per person (photos/<person>/<image>)."
else
  # Real photos: the best face model here, dlib's face network (its published weights,
  # ported to ONNX; seconds, no download) with mirror averaging. It indexes with its own
  # crop, align, recorded in the model.
  model=$work/face.onnx
  [ -f "$model" ] || lookalike export --architecture dlib-resnet --mirror --out "$model"
  query=$(find -L "$gallery" -mindepth 2 -type f | sort | head -n 1)
  what="the first photo of the gallery (it should find itself first)"
  crop=()
fi

rm -rf "$work/index"
lookalike index "$gallery" --model "$model" --out "$work/index" "${crop[@]}"

lookalike serve --model "$model" --index "$work/index" --port "$port" \
  >"$work/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server' EXIT
echo "serving on port $port (log: $work/server.log); waiting for it to be ready" >&2
# Health turns SERVING once the model and index are loaded and warmed up.
until lookalike info --server "localhost:$port" --wait 10 >/dev/null 2>&1; do
  if ! kill -0 $server 2>/dev/null; then
    tail -n 20 "$work/server.log" >&2
    echo "error: the server exited (log above)" >&2
    exit 1
  fi
done
lookalike info --server "localhost:$port"

echo
echo "Searching for $query ($what):"
lookalike search "$query" --server "localhost:$port" -k 5
