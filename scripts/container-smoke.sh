#!/usr/bin/env bash
# Build the CPU image, start it with a face model and its index mounted, and search it from
# the host.
#
#   ENGINE          the container command (default: podman with runc and cgroupfs, as this
#                   project's machines need; ENGINE=docker works the same way)
#   RUN_OPTIONS     extra options for `run` (default: the ulimits podman needs here)
#   BUILD_OPTIONS   extra options for `build` (default: --network=host)
#   SMOKE_MODEL     an exported model to mount (default: dlib's face network, exported here
#                   with `lookalike export --architecture dlib-resnet`: 150 px, crop align)
#   SMOKE_INDEX     its index to mount (default: made here from SMOKE_GALLERY with
#                   SMOKE_MODEL; the crop comes from the model's metadata)
#   SMOKE_GALLERY   photos in <person>/ folders to index (default: 3 photos each of 8 LFW
#                   people from $LOOKALIKE_LFW_DIR/images, default ../shared/lfw, a 4th photo
#                   of the first one held out as the query; without LFW, `lookalike
#                   sample-gallery` drawings, which have no real face: the aligner falls back
#                   to the centre of the frame and the search says so in a note)
#   SMOKE_QUERY     the photo to search for (default: as above, or the gallery's first photo)
#   LOCAL_BASE=1    no registry reachable: make the base image the Dockerfile names from a
#                   Debian bookworm debootstrap (Debian's python3 3.11, not the official image's
#                   own build of Python) and the host's CA certificates, then tag it with that name
#
# Prints the image size, dlib aligning the query inside the image, the server's info, its
# start-up line (model and crop) and a search, and checks the container exits 0 on SIGTERM.
# Needs the host's .venv with the export and faces extras (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-podman --runtime=/usr/sbin/runc --cgroup-manager=cgroupfs}
RUN_OPTIONS=${RUN_OPTIONS:---ulimit nofile=20000:20000 --ulimit nproc=4096:4096}
BUILD_OPTIONS=${BUILD_OPTIONS:---network=host}
IMAGE=${IMAGE:-localhost/lookalike:cpu}
BASE=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' Dockerfile.cpu | head -n 1)
work=artifacts/container-smoke
mkdir -p "$work"
# shellcheck disable=SC1091
. .venv/bin/activate

if [ "${LOCAL_BASE:-0}" = 1 ] && ! $ENGINE image exists "$BASE"; then
  echo "making a local stand-in for $BASE with debootstrap (Debian bookworm, Debian's python3)"
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | $ENGINE import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    - "$BASE"
  rm -rf "$rootfs"
fi

started=$(date +%s)
# shellcheck disable=SC2086
$ENGINE build $BUILD_OPTIONS $RUN_OPTIONS -f Dockerfile.cpu -t "$IMAGE" . >"$work/build.log"
echo "built $IMAGE in $(($(date +%s) - started)) s; size: $($ENGINE image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"

model=${SMOKE_MODEL:-$work/face.onnx}
if [ ! -f "$model" ]; then
  lookalike export --architecture dlib-resnet --out "$model" >"$work/export.log" 2>&1
  tail -n 1 "$work/export.log"
fi

lfw=${LOOKALIKE_LFW_DIR:-../shared/lfw}/images
held_out=
if [ -n "${SMOKE_INDEX:-}" ]; then
  index=$SMOKE_INDEX
  gallery=${SMOKE_GALLERY:-}
else
  index=$work/face-index
  if [ -n "${SMOKE_GALLERY:-}" ]; then
    gallery=$SMOKE_GALLERY
  elif [ -d "$lfw" ]; then
    # LFW photos are only copied under artifacts/ (ignored by git), never committed.
    gallery=$work/faces
    rm -rf "$gallery" "$work/held-out"
    mkdir -p "$work/held-out"
    python - "$lfw" "$gallery" "$work/held-out" <<'PY'
import shutil
import sys
from pathlib import Path

lfw, gallery, held_out = (Path(arg) for arg in sys.argv[1:])
people = [p for p in sorted(lfw.iterdir()) if len(list(p.glob("*.jpg"))) >= 4][:8]
for person in people:
    photos = sorted(person.glob("*.jpg"))
    (gallery / person.name).mkdir(parents=True)
    for photo in photos[:3]:
        shutil.copy(photo, gallery / person.name / photo.name)
shutil.copy(sorted(people[0].glob("*.jpg"))[3], held_out)
print(f"gallery: 3 LFW photos each of {len(people)} people in {gallery}; query held out")
PY
    held_out=$(find "$work/held-out" -type f -name '*.jpg' | head -n 1)
  else
    gallery=$work/drawings
    rm -rf "$gallery"
    echo "no LFW images at $lfw: indexing drawings (no real face; align falls back, with a note)"
    lookalike sample-gallery "$gallery" --people 6 --photos 3
  fi
  rm -rf "$index"
  lookalike index "$gallery" --model "$model" --out "$index" --device cpu \
    >"$work/index.log" 2>&1 || { cat "$work/index.log" >&2; exit 1; }
  python - "$index/manifest.json" <<'PY'
import json
import sys

manifest = json.load(open(sys.argv[1]))
print(
    f"index: {len(manifest['items'])} photos, model {manifest['model']['name']}, "
    f"crop {manifest['crop']['mode']} (from the model's metadata)"
)
PY
fi
if [ -z "${SMOKE_QUERY:-}" ] && [ -z "$held_out" ] && [ -z "$gallery" ]; then
  echo "error: with SMOKE_INDEX, set SMOKE_QUERY (or SMOKE_GALLERY) to a photo to search for" >&2
  exit 2
fi
query=${SMOKE_QUERY:-${held_out:-$(find -L "$gallery" -type f -name '*.jpg' | sort | head -n 1)}}

echo "dlib in the image (read-only root, user 10001), aligning $query:"
# shellcheck disable=SC2086
$ENGINE run --rm $RUN_OPTIONS --read-only --entrypoint python \
  -v "$(realpath "$query"):/query.jpg:ro" "$IMAGE" -c '
import dlib, PIL.Image
from lookalike.server.vision.align import FIVE_POINT_MODEL, align, model_file
print("  dlib", dlib.__version__, "; model files:",
      sorted(p.name for p in model_file(FIVE_POINT_MODEL).parent.iterdir()))
chip = align(PIL.Image.open("/query.jpg").convert("RGB"), 150)
print("  align: chip", chip.pixels.shape, "from box", chip.box, "|", chip.note or "dlib found the face")'

port=$(python -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
metrics=$(python -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
name=lookalike-smoke-$$
# shellcheck disable=SC2086
$ENGINE run -d --name "$name" $RUN_OPTIONS --cpus 1 --read-only --tmpfs /tmp \
  -p "$port:50051" -p "$metrics:9464" \
  -v "$(realpath "$model"):/models/model.onnx:ro" -v "$(realpath "$index"):/index:ro" \
  "$IMAGE" --warmup-runs 1 >/dev/null
trap '$ENGINE rm -f "$name" >/dev/null 2>&1 || true' EXIT
echo "started $name: gRPC on host port $port, metrics on $metrics"

lookalike info --server "localhost:$port" --wait 180
# GetInfo has no crop field; the server's start-up line names the model and the crop it serves.
$ENGINE logs "$name" 2>&1 | grep -o '"message": "lookalike [^"]* serving [^"]*"' || true
echo
echo "Searching for $query through the container's port:"
lookalike search "$query" --server "localhost:$port" -k 3
echo
curl -fsS "http://localhost:$metrics/metrics" | grep -m 2 '^lookalike_requests_total'
echo "user in the container: $($ENGINE exec "$name" id -u)"
$ENGINE stop --time 30 "$name" >/dev/null
status=$($ENGINE inspect --format '{{.State.ExitCode}}' "$name")
echo "after SIGTERM the container exited with status $status"
$ENGINE logs "$name" 2>&1 | tail -n 2
[ "$status" = 0 ]
