"""Input checks before training: non-finite features and labels outside the dataset's emotion set.

Both runners call these on the tensors they are about to train on (the standalone runner's splits,
MERBench's own datasets under main-robust.py), so bad input ends in one line naming the samples,
before any training. ``--nonfinite missing`` instead zeroes a sample's non-finite modality (MERBench's
"missing") and the run's summary counts them.
"""
import os
from typing import Dict, List, Sequence

import numpy as np
import torch

from ..constants import MER2023_EMOTIONS, MISSING_VALENCE

MODALITY_KEYS = ("audios", "texts", "videos")
NONFINITE_POLICIES = ("error", "missing")
# MERBench's emotion sets by dataset name: the MER challenges' six discrete emotions
DATASET_EMOTIONS = {name: MER2023_EMOTIONS for name in ("MER2023", "MER2024", "MER2025", "MER2025Raw", "MER2026",
                                                         "MER2026Raw")}


class InputError(ValueError):
    """Input that must not be trained on; the message names the samples and what to do."""


def named(names: Sequence[str], limit: int = 5) -> str:
    """'a, b, c' or 'a, b, c, ... (+7 more)'."""
    names = list(names)
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def nonfinite_samples(features: Dict[str, torch.Tensor], names: Sequence[str]) -> Dict[str, List[str]]:
    """modality key -> names of the samples whose features hold NaN or inf (modalities without any left out)."""
    out = {}
    for key in MODALITY_KEYS:
        x = features.get(key)
        if x is None:
            continue
        bad = ~torch.isfinite(torch.as_tensor(x)).flatten(1).all(1)                    # [N]
        if bad.any():
            out[key] = [names[i] for i in bad.nonzero().flatten().tolist()]
    return out


def refuse_nonfinite(found: Dict[str, List[str]], split: str, feature_names: Dict[str, str]):
    """One line naming every modality's bad samples (``<feature folder>/<name>.npy``), or nothing when clean."""
    if not found:
        return
    parts = [f"{k[:-1]} {len(v)} file(s) {named([os.path.join(feature_names.get(k, k), n + '.npy') for n in v])}"
             for k, v in found.items()]
    raise InputError(f"non-finite values (NaN/inf) in the {split} features: {'; '.join(parts)}. Fix or remove those "
                     f"files, or pass --nonfinite missing to treat them as a missing modality (counted in the summary)")


def zero_samples(features: Dict[str, torch.Tensor], found: Dict[str, List[str]], names: Sequence[str]) -> dict:
    """``--nonfinite missing``: the non-finite samples' modality becomes all zeros (in place); returns the counts."""
    index = {n: i for i, n in enumerate(names)}
    for key, bad in found.items():
        rows = torch.tensor([index[n] for n in bad], dtype=torch.long)
        features[key][rows] = 0
    return {k: len(v) for k, v in found.items()}


def emotion_set(dataset: str, explicit: Sequence[str] = ()) -> Sequence[str]:
    """The emotion classes of a dataset, in class-index order: ``--emotions`` when given, else MERBench's set
    for the datasets it defines (MER2023 ... MER2026), else () (taken from the data)."""
    return tuple(explicit) if explicit else DATASET_EMOTIONS.get(dataset, ())


def check_labels(emos: torch.Tensor, vals: torch.Tensor, names: Sequence[str], num_classes: int, split: str,
                 classes: Sequence[str] = ()):
    """Emotion indices in [0, num_classes) and valence finite (or MERBench's -10, unknown)."""
    emos, vals = torch.as_tensor(emos), torch.as_tensor(vals, dtype=torch.float64)
    if num_classes:
        bad = ((emos < 0) | (emos >= num_classes)).nonzero().flatten().tolist()
        if bad:
            what = f" ({', '.join(classes)})" if classes else ""
            raise InputError(f"{split}: {len(bad)} sample(s) have an emotion label outside the {num_classes} classes"
                             f"{what}: {named([f'{names[i]}={int(emos[i])}' for i in bad])}")
    bad = (~torch.isfinite(vals)).nonzero().flatten().tolist()
    if bad:
        raise InputError(f"{split}: {len(bad)} sample(s) have a non-finite valence label: {named([names[i] for i in bad])}"
                         f" (write {MISSING_VALENCE} for an unknown valence)")


def check_dataset(dataset, split: str, num_classes: int, policy: str, feature_names: Dict[str, str]) -> dict:
    """MERBench's own dataset (under main-robust.py), read through its collater as training reads it: labels in
    range; non-finite features refused, or (``policy='missing'``) zeroed where the dataset keeps them
    (``.audios``/``.texts``/``.videos``, as MERBench's Data_Feat does). Returns the zeroed counts."""
    batch, emos, vals, names = dataset.collater([dataset[i] for i in range(len(dataset))])
    check_labels(emos, vals, names, num_classes, split)
    found = nonfinite_samples(batch, names)
    if not found or policy == "error":
        refuse_nonfinite(found, split, feature_names)
        return {}
    index = {n: i for i, n in enumerate(names)}
    inner = getattr(dataset, "dataset", dataset)         # MERBench's get_datasets wraps the dataset class
    for key, bad in found.items():
        store = getattr(inner, key, None)
        if store is None:
            raise InputError(f"--nonfinite missing: {type(inner).__name__} keeps no .{key} to zero; fix the "
                             f"non-finite {split} samples {named(bad)} instead")
        for n in bad:
            store[index[n]] = np.zeros_like(np.asarray(store[index[n]]))
    return {k: len(v) for k, v in found.items()}
