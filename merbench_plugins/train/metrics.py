"""MER metrics with MERBench's names: weighted F1, accuracy, valence MSE over known labels, emoval."""
from typing import Dict, Optional

import numpy as np

from ..data.merbench_layout import MISSING_VALENCE


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted class."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                                num_classes)


def classification_metrics(labels, preds, num_classes: Optional[int] = None) -> Dict[str, float]:
    """Accuracy, macro-F1, weighted F1 and UAR (as scikit-learn: macro over the classes seen in labels or
    predictions; UAR = mean recall over the classes present in the labels)."""
    labels, preds = np.asarray(labels, dtype=np.int64).ravel(), np.asarray(preds, dtype=np.int64).ravel()
    if labels.size == 0:
        return {"acc": float("nan"), "macro_f1": float("nan"), "weighted_f1": float("nan"), "uar": float("nan")}
    c = int(max(labels.max(), preds.max()) + 1) if num_classes is None else int(num_classes)
    cm = confusion_matrix(labels, preds, c).astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
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


def emoval(f1, mse):
    """MERBench's overall metric f1 - 0.25 * mse; f1 alone when no valence is known."""
    return f1 if mse != mse else f1 - 0.25 * mse


def mer_results(emo_probs=(), emo_labels=(), val_preds=(), val_labels=()):
    """(results dict, 'f1:…_acc:…_val:…') like MERBench's MER2023.calculate_results, with -10 masked."""
    results, parts = {}, []
    if len(emo_labels):
        probs = np.asarray(emo_probs)
        m = classification_metrics(emo_labels, np.argmax(probs, 1), probs.shape[1])
        results.update(emoprobs=probs, emolabels=np.asarray(emo_labels), emoacc=m["acc"], emofscore=m["weighted_f1"])
        parts += [f"f1:{results['emofscore']:.4f}", f"acc:{results['emoacc']:.4f}"]
    if len(val_labels):
        results.update(valpreds=np.asarray(val_preds), vallabels=np.asarray(val_labels),
                       valmse=valence_mse(val_preds, val_labels))
        parts.append(f"val:{results['valmse']:.4f}")
    return results, "_".join(parts)


def metric_value(results: dict, metric_name: str = "emoval") -> float:
    """The model-selection metric (higher is better), as MERBench's gain_metric_from_results."""
    f1, mse = results.get("emofscore", float("nan")), results.get("valmse", float("nan"))
    if metric_name == "emoval":
        return emoval(f1, mse) if "emofscore" in results else -mse
    if metric_name == "emo":
        return f1
    if metric_name == "val":
        return -mse
    if metric_name == "loss":
        return -results["loss"]
    if metric_name in results:
        return results[metric_name]
    raise KeyError(f"unknown metric {metric_name!r}: use emoval, emo, val or loss")


def summarise(results: dict) -> dict:
    """The scalar metrics of a results dict, for tables and JSON."""
    out = {}
    if "emofscore" in results:
        out["f1"], out["acc"] = results["emofscore"], results["emoacc"]
    if "valmse" in results:
        out["val_mse"] = results["valmse"]
    if "emofscore" in results:
        out["emoval"] = emoval(results["emofscore"], results.get("valmse", float("nan")))
    for key, name in (("emouar", "uar"), ("emowf1", "weighted_f1"), ("uar", "uar"), ("macro_f1", "macro_f1")):
        if key in results:
            out[name] = results[key]
    return out
