"""Classification and regression metrics, plain numpy (used by the data sets and the trainers alike)."""
from typing import Dict, Optional

import numpy as np

from .constants import MISSING_VALENCE


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted class."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                                num_classes)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """[C] F1 of each class from a [C, C] confusion matrix (0 where a class is neither true nor predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)


def classification_metrics(labels, preds, num_classes: Optional[int] = None) -> Dict[str, float]:
    """Accuracy, macro-F1, weighted F1 and UAR (as scikit-learn: macro over the classes seen in labels or
    predictions; UAR = mean recall over the classes present in the labels)."""
    labels, preds = np.asarray(labels, dtype=np.int64).ravel(), np.asarray(preds, dtype=np.int64).ravel()
    if labels.size == 0:
        return {"acc": float("nan"), "macro_f1": float("nan"), "weighted_f1": float("nan"), "uar": float("nan")}
    c = int(max(labels.max(), preds.max()) + 1) if num_classes is None else int(num_classes)
    cm = confusion_matrix(labels, preds, c).astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    f1 = per_class_f1(cm)
    recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
    seen = (support + predicted) > 0
    return {"acc": float(tp.sum() / labels.size),
            "macro_f1": float(f1[seen].mean()),
            "weighted_f1": float((f1 * support).sum() / support.sum()),
            "uar": float(recall[support > 0].mean())}


def valence_mse(preds, labels):
    """MSE over samples with a known valence; NaN when there is none (MERBench's test3)."""
    preds, labels = np.asarray(preds, dtype=float).reshape(-1), np.asarray(labels, dtype=float).reshape(-1)
    known = labels != MISSING_VALENCE
    return float(np.mean((preds[known] - labels[known]) ** 2)) if known.any() else float("nan")
