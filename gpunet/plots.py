"""Training curves and confusion matrices as PNG files (matplotlib, the optional ``plot`` extra)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("plots need matplotlib: pip install 'gpunet[plot]'") from exc
    return plt


MARKED_EPOCHS = 50  # a marker on every epoch up to this many; beyond, the line alone
MAX_EPOCH_TICKS = 10


def supported_formats() -> dict:
    """The file formats matplotlib writes: extension -> description."""
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    return FigureCanvasBase.get_supported_filetypes()


def curves_figure(history: list[dict]):
    """The figure of :func:`plot_curves`: one line per curve (a single artist however many epochs) and at most
    ``MAX_EPOCH_TICKS`` whole-epoch ticks, so that a 10,000-epoch run draws as fast and as legibly as a short one."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    marker = "o" if len(epochs) <= MARKED_EPOCHS else None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker=marker)
    ax_loss.set(xlabel="epoch", ylabel="train loss (cross-entropy)", title="Training loss", yscale="log")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], marker=marker, color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=MAX_EPOCH_TICKS, integer=True))
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict], path) -> Path:
    """Train loss and test accuracy per epoch, side by side."""
    return _save(curves_figure(history), _pyplot(), path)


def plot_confusion(matrix, path, class_names=None) -> Path:
    """A confusion matrix (rows: true class, columns: predicted), counts written in each cell."""
    plt = _pyplot()
    n = len(matrix)
    names = class_names or [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i][j])), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i][j] > top / 2 else "black")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=names, yticklabels=names, xlabel="predicted",
           ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_boundary(predict, x_train, y_train, x_test, y_test, path, resolution: int = 300) -> Path:
    """The decision regions of a classifier of 2-D points (``predict``: rows -> class indices) over the data's
    extent, the training points as dots and the held-out ones as crosses: the picture cs231n draws."""
    import numpy as np

    plt = _pyplot()
    both = np.concatenate([x_train, x_test])
    low, high = both.min(axis=0), both.max(axis=0)
    margin = 0.1 * (high - low)
    gx, gy = np.meshgrid(np.linspace(low[0] - margin[0], high[0] + margin[0], resolution),
                         np.linspace(low[1] - margin[1], high[1] + margin[1], resolution))
    regions = predict(np.c_[gx.ravel(), gy.ravel()].astype(x_train.dtype)).reshape(gx.shape)
    n = int(max(y_train.max(), y_test.max())) + 1
    cmap = plt.get_cmap("tab10", 10)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.contourf(gx, gy, regions, levels=np.arange(-0.5, n), colors=[cmap(k) for k in range(n)], alpha=0.3)
    ax.scatter(x_train[:, 0], x_train[:, 1], c=[cmap(int(k)) for k in y_train], s=14, edgecolors="k",
               linewidths=0.3, label="training points")
    ax.scatter(x_test[:, 0], x_test[:, 1], c=[cmap(int(k)) for k in y_test], s=24, marker="x",
               label="held-out points")
    ax.set(xlabel="x1", ylabel="x2", title="Decision regions", aspect="equal")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
