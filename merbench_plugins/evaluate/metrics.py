"""MER metrics with MERBench's names (weighted F1, accuracy, valence MSE over known labels, emoval) and
the averaging of the folds' test predictions."""
from typing import List, Optional, Sequence

import numpy as np

from ..metrics import classification_metrics, confusion_matrix, per_class_f1, valence_mse


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
    if "emofscore" in results and "valmse" in results:     # emotion-only datasets (MER2024-2026): f1 is the metric
        out["emoval"] = emoval(results["emofscore"], results["valmse"])
    for key, name in (("emouar", "uar"), ("emowf1", "weighted_f1"), ("uar", "uar"), ("macro_f1", "macro_f1")):
        if key in results:
            out[name] = results[key]
    return out


def per_class(results: dict, classes: Optional[Sequence[str]] = None) -> Optional[dict]:
    """Confusion matrix (rows = true class, columns = predicted) and per-class F1 / support of a scored test
    set; None where it has no emotion labels. ``classes`` names the columns (else their indices)."""
    labels = np.asarray(results.get("emolabels", []))
    probs = np.asarray(results.get("emoprobs", []))
    if not len(labels) or probs.ndim != 2:
        return None
    names = [str(c) for c in classes] if classes is not None and len(classes) == probs.shape[1] else \
        [str(c) for c in range(probs.shape[1])]
    cm = confusion_matrix(labels, probs.argmax(1), probs.shape[1])
    return {"classes": names, "confusion": cm.tolist(),
            "f1": dict(zip(names, map(float, per_class_f1(cm)))), "support": dict(zip(names, map(int, cm.sum(1))))}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, C] logits (numpy)."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def fold_predictions(tests: List[dict], average: str = "probs"):
    """Fold-averaged (emotion probabilities, valence predictions) of one test set: ``probs`` averages
    softmax probabilities (ours), ``logits`` averages raw logits and takes their softmax (main-release.py)."""
    if average not in ("probs", "logits"):
        raise ValueError(f"unknown fold averaging {average!r}: use probs or logits")
    emo_probs = []
    if len(tests[0].get("emolabels", [])) and average == "logits":
        emo_probs = softmax(np.mean([t["emologits"] for t in tests], axis=0))
    elif len(tests[0].get("emolabels", [])):
        emo_probs = np.mean([t["emoprobs"] for t in tests], axis=0)
    val_preds = np.mean([t["valpreds"] for t in tests], axis=0) if len(tests[0].get("vallabels", [])) else []
    return emo_probs, val_preds


def average_folds(fold_results: list, index: int, calculate_results, average: str = "probs"):
    """Average the folds' test predictions (``fold_predictions`` of their FoldResult.test_results[index]),
    then score."""
    tests = [f.test_results[index] for f in fold_results]
    emo_probs, val_preds = fold_predictions(tests, average)
    return calculate_results(emo_probs, tests[0].get("emolabels", []), val_preds, tests[0].get("vallabels", []))
