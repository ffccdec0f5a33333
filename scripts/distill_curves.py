"""Validation hit@1 against training minutes, one line per `lookalike train` run.

    python scripts/distill_curves.py OUT.png [--title=T] LABEL=RUN.keras.checkpoints/history.jsonl

Reads each run's history.jsonl (written at every evaluation) and draws the curves
that docs/RESULTS.md shows, so each ablation is seen over time, not at one point.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_TITLE = "Distilling dlib's descriptor into a random-weight ResNet101 (64 px, align)"


def main(out: Path, runs: list[str]) -> None:
    title = next((r.split("=", 1)[1] for r in runs if r.startswith("--title=")), DEFAULT_TITLE)
    runs = [r for r in runs if not r.startswith("--title=")]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for run in runs:
        label, _, path = run.partition("=")
        history = [json.loads(line) for line in Path(path).read_text().splitlines()]
        axes.plot(
            [h.get("minutes", 0.0) if h.get("stage") == "start" else h["minutes"] for h in history],
            [h["val_hit_at_1"] for h in history],
            marker="o",
            markersize=3,
            label=label,
        )
    axes.set_xlabel("training minutes (2 CPU cores, shared)")
    axes.set_ylabel("hit@1, held-out training-split people")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
