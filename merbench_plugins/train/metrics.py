"""MER metrics with MERBench's names: weighted F1, accuracy, valence MSE over known labels, emoval."""
import numpy as np

from ..metrics import classification_metrics, valence_mse


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
