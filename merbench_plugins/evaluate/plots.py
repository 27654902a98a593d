"""PNG figures of results (the ``plot`` extra: matplotlib); each returns None, with a note, without it."""
import os
from typing import Optional, Sequence

import numpy as np

from ..fileio import atomic_path

NO_MATPLOTLIB = "note: no PNG plots (pip install merbench-plugins[plot] or matplotlib); the JSON/CSV files have the data"


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (and a note) where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(NO_MATPLOTLIB)
        return None
    return plt


def confusion_png(path: str, confusion, names: Sequence[str], title: str = "confusion") -> Optional[str]:
    """Row-normalised confusion matrix with counts and rates in each cell, written atomically to ``path``."""
    plt = pyplot()
    if plt is None:
        return None
    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 1.0 * len(names) + 1.5))
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(confusion[i, j])}\n{rates[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return os.path.abspath(path)
