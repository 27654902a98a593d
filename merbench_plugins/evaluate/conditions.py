"""Per-condition scores: F1 (and emoval where valence exists) per condition group of a test set.

Groups come from a recorded ``conditions.json`` beside the labels ({split: {name: condition}}, as
``synth --preset validation|test`` writes), else from the missing pattern of each sample (which modalities
are all-zero): ``A+T+V``, ``T+V``, ..., ``V``.
"""
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch

from ..data.merbench_layout import CONDITIONS_FILE
from ..modules.masking import presence_mask
from .metrics import fold_predictions, summarise

LETTERS = ("A", "T", "V")


def pattern_names(present: np.ndarray) -> List[str]:
    """[N, 3] bool presence -> 'A+T+V', 'T+V', ..., 'none'."""
    return ["+".join(l for l, p in zip(LETTERS, row) if p) or "none" for row in np.asarray(present, dtype=bool)]


def missing_patterns(loader) -> Dict[str, str]:
    """name -> missing pattern, from one pass over a loader of MERBench batches (batch, emos, vals, names)."""
    out = {}
    for batch, _, _, names in loader:
        present = presence_mask({k: v for k, v in batch.items() if torch.is_tensor(v)}).cpu().numpy()
        out.update(zip(names, pattern_names(present)))
    return out


def recorded_conditions(data_dir: Optional[str], split: str) -> Optional[Dict[str, str]]:
    """name -> condition from DATA_DIR/conditions.json, or None when there is no record for this split."""
    path = os.path.join(data_dir, CONDITIONS_FILE) if data_dir else None
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get(split)


def sample_groups(loader, data_dir: Optional[str], split: str) -> Dict[str, str]:
    """Recorded conditions when there are any, else missing patterns (as 'present:T+V', ...)."""
    recorded = recorded_conditions(data_dir, split)
    if recorded:
        return recorded
    return {n: f"present:{p}" for n, p in missing_patterns(loader).items()}


def per_condition(names, emo_probs, emo_labels, val_preds, val_labels, groups: Dict[str, str],
                  calculate_results) -> "OrderedDict[str, dict]":
    """{group: metrics + n} over the samples of each group (groups in first-seen order, 'all' first)."""
    names = list(names)
    labels = np.asarray([groups.get(n, "unknown") for n in names], dtype=object)
    out = OrderedDict()
    for g in ["all"] + sorted(set(labels)):
        idx = np.arange(len(names)) if g == "all" else np.flatnonzero(labels == g)
        take = lambda a: np.asarray(a)[idx] if len(a) else []              # noqa: E731
        results, _ = calculate_results(take(emo_probs), take(emo_labels), take(val_preds), take(val_labels))
        out[g] = dict(summarise(results), n=int(len(idx)))
    return out


def fold_average(tests: List[dict], average: str = "probs") -> dict:
    """Fold-averaged predictions of one test set (names, emoprobs, emolabels, valpreds, vallabels), averaged
    as the headline score is (``engine.fold_predictions``), so the per-condition rows add up to it."""
    first = tests[0]
    emo_probs, val_preds = fold_predictions(tests, average)
    out = {"names": np.asarray(first["names"])}
    for key, value in (("emoprobs", emo_probs), ("valpreds", val_preds)):
        if len(value):
            out[key] = np.asarray(value)
    for key in ("emolabels", "vallabels"):
        if len(first.get(key, [])):
            out[key] = np.asarray(first[key])
    return out


def condition_table(by_model: Dict[str, Dict[str, dict]], metric: str = "f1") -> str:
    """Markdown: one row per condition group, one column per model."""
    from .report import markdown_table
    models = list(by_model)
    groups = list(dict.fromkeys(g for m in models for g in by_model[m]))
    rows = [[f"{g} (n={next(by_model[m][g]['n'] for m in models if g in by_model[m])})"]
            + [by_model[m].get(g, {}).get(metric) for m in models] for g in groups]
    return markdown_table(["condition"] + models, rows)
