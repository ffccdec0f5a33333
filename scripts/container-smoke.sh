#!/usr/bin/env bash
# Build the CPU image, start it with a model and an index mounted, and search it from the host.
#
#   ENGINE          the container command (default: podman with runc and cgroupfs, as this
#                   project's machines need; ENGINE=docker works the same way)
#   RUN_OPTIONS     extra options for `run` (default: the ulimits podman needs here)
#   BUILD_OPTIONS   extra options for `build` (default: --network=host)
#   SMOKE_MODEL, SMOKE_INDEX   an exported model and its index to mount (default: a 64 px
#                   random-weight model and the sample gallery's index, made here in .venv)
#   LOCAL_BASE=1    no registry reachable: make the base image the Dockerfile names from a
#                   Debian bookworm debootstrap (Debian's python3 3.11, not the official image's
#                   own build of Python) and the host's CA certificates, then tag it with that name
#
# Prints the image size, the server's info and a search, and checks the container exits 0 on
# SIGTERM. Needs the host's .venv (scripts/quickstart.sh or scripts/test.sh make it).
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

model=${SMOKE_MODEL:-$work/model.onnx}
index=${SMOKE_INDEX:-$work/index}
if [ ! -f "$model" ]; then
  lookalike export --weights none --image-size 64 --out "$model" >"$work/export.log" 2>&1
fi
if [ ! -d "$index" ]; then
  lookalike sample-gallery "$work/gallery" --people 6 --photos 3
  lookalike index "$work/gallery" --model "$model" --out "$index" --device cpu >/dev/null
fi
query=${SMOKE_QUERY:-$(find -L "$work/gallery" -type f -name '*.jpg' | sort | head -n 1)}

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
