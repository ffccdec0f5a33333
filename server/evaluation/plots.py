"""The pictures of an evaluation: ROC curve and hit@k against k.

matplotlib is imported inside the functions: it comes with the ``eval`` extra
only, and the rest of the server must import without it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.common.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(title: str) -> tuple[Figure, Axes]:
    """A figure on the Agg canvas, away from pyplot's global state and any screen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(textwrap.fill(title, 60), fontsize="medium")
    axes.grid(True, alpha=0.3)
    return figure, axes


def _save(figure: Figure, path: Path) -> None:
    """Atomically, so a reader of the report folder never sees half a PNG."""
    with atomic_path(Path(path)) as staging:
        figure.savefig(staging, format="png", dpi=120)


def plot_roc(
    fpr: list[float], tpr: list[float], auc: float, path: Path, title: str = "ROC curve"
) -> None:
    figure, axes = _figure(title)
    axes.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC = 0.5)")
    axes.plot(fpr, tpr, lw=2, clip_on=False, label=f"ROC (AUC = {auc:.3f})")
    axes.set_xlabel("false match rate (different people called the same)")
    axes.set_ylabel("true match rate (same person called the same)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_aspect("equal")
    axes.legend(loc="lower right")
    _save(figure, path)


def plot_hit_curve(hit_curve: list[float], path: Path, title: str = "hit@k") -> None:
    figure, axes = _figure(title)
    ks = list(range(1, len(hit_curve) + 1))
    axes.plot(ks, hit_curve, marker="o", markersize=4, lw=2, clip_on=False, label="hit@k")
    # the headline values go in a legend under the axes: inside, a curve hugging
    # 1.0 or 0.0 leaves no corner free
    for k, marker in ((1, "s"), (5, "D"), (20, "^")):
        if k <= len(hit_curve):
            axes.plot(
                k,
                hit_curve[k - 1],
                marker=marker,
                markersize=9,
                ls="none",
                clip_on=False,
                label=f"hit@{k} = {hit_curve[k - 1]:.3f}",
            )
    axes.set_xlabel("k (results looked at)")
    axes.set_ylabel("hit@k (same person among the first k)")
    axes.set_xlim(0.5, len(hit_curve) + 0.5)
    axes.set_xticks(ks if len(hit_curve) <= 10 else [1, *range(5, len(hit_curve) + 1, 5)])
    axes.set_ylim(0, 1)
    figure.legend(loc="outside lower center", ncols=4, fontsize="small")
    _save(figure, path)
