#!/usr/bin/env bash
# The ResNet101 student's GPU recipe, about 10 minutes on one GPU: gradient steps on fresh
# samples with the teacher in the graph (every step augments the aligned faces anew and
# dlib's ported network describes them), every layer up to the end of the conv3 stage
# training with a 128-d head on its flattened map, float16 compute; then export and
# evaluate on the test people. Not yet run on a GPU (no GPU was lent to the session that
# wrote it; see docs/RESULTS.md). Nothing else in lookalike needs a GPU; this runs on a CPU
# too, slowly (MINUTES=0.5 tries it).
#
#   LFW         the LFW folder (images/, pairsDevTrain.txt); default ../shared/lfw
#   OUT         where the run's files go (default artifacts/distill-gpu)
#   MINUTES     gradient-step budget (default 7: with the ridge fit and the evaluation, ~10)
#   BATCH       images per step (default 256)
#   WEIGHTS     the student's starting weights: none (default here), imagenet, or a file
set -euo pipefail
cd "$(dirname "$0")/.."
LFW=${LFW:-../shared/lfw}
OUT=${OUT:-artifacts/distill-gpu}
MINUTES=${MINUTES:-7}
BATCH=${BATCH:-256}
WEIGHTS=${WEIGHTS:-none}
mkdir -p "$OUT"
# shellcheck disable=SC1091
. .venv/bin/activate
precision=()
if python -c 'import sys, tensorflow as tf; sys.exit(not tf.config.list_physical_devices("GPU"))' \
  2>/dev/null; then
  precision=(--mixed-precision)
else
  echo "no GPU visible to TensorFlow: float32 on the CPU (slow)" >&2
fi
started=$(date +%s)
lookalike train "$LFW/images" --teacher dlib --weights "$WEIGHTS" --fit gradient --fresh \
  "${precision[@]}" --trainable-from conv1_conv --features-from conv3_block4_out \
  --batch-size "$BATCH" --learning-rate 3e-4 --minutes "$MINUTES" --eval-every-minutes 1 \
  --out "$OUT/student.keras"
lookalike export --checkpoint "$OUT/student.keras" --out "$OUT/student.onnx"
lookalike eval "$LFW/images" --model "$OUT/student.onnx" --split test \
  --pairs "$LFW/pairsDevTrain.txt" --out "$OUT/report" --index "$OUT/index"
echo "done in $(($(date +%s) - started)) s; curve: $OUT/student.keras.checkpoints/history.jsonl"
