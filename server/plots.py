"""The pictures of an evaluation: ROC curve and hit@k against k."""

from __future__ import annotations

from pathlib import Path

from lookalike.server.files import atomic_path


def _save(figure, path: Path) -> None:  # noqa: ANN001 (matplotlib Figure)
    with atomic_path(path) as staging:
        figure.savefig(staging, format="png", dpi=120, bbox_inches="tight")


def _figure(title: str):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(5.5, 4.5))
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    return pyplot, figure, axes


def plot_roc(fpr: list[float], tpr: list[float], auc: float, path: Path, title: str) -> None:
    pyplot, figure, axes = _figure(title)
    axes.plot(fpr, tpr, lw=2, label=f"ROC (AUC = {auc:.3f})")
    axes.plot([0, 1], [0, 1], ls="--", color="grey", label="chance")
    axes.set_xlabel("false match rate (different people called same)")
    axes.set_ylabel("true match rate (same person found)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.legend(loc="lower right")
    _save(figure, path)
    pyplot.close(figure)


def plot_hit_curve(hit_curve: list[float], path: Path, title: str) -> None:
    pyplot, figure, axes = _figure(title)
    ks = range(1, len(hit_curve) + 1)
    axes.plot(ks, hit_curve, marker="o", lw=2)
    for k in (1, 5, 20):
        if k <= len(hit_curve):
            axes.annotate(
                f"{hit_curve[k - 1]:.3f}",
                (k, hit_curve[k - 1]),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
            )
    axes.set_xlabel("k (results looked at)")
    axes.set_ylabel("hit@k (same person among the first k)")
    axes.set_xticks([1, 5, 10, 15, 20] if len(hit_curve) >= 20 else list(ks))
    axes.set_ylim(0, 1.05)
    _save(figure, path)
    pyplot.close(figure)
