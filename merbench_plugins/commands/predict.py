"""`python -m merbench_plugins predict CHECKPOINT...`: saved fold checkpoints -> probabilities and valence
by sample name, on a feature folder (labelled or not) or a MERBench dataset's split.

    python -m merbench_plugins predict runs/models --data NEW_FEATURES --out preds
    python -m merbench_plugins predict saved-trimodal/model --merbench . --dataset MER2025 --splits test1 --out preds

Takes the checkpoints of the standalone runner's and main-robust.py's ``--savemodel`` (the folds of one
run, or several runs of one feature set), refuses any whose features, frame type or dimensions differ
from the others' or from the data's, and averages their probabilities. Writes ``OUT/<split>.npz`` (names,
emo_probs, valpreds, classes; see evaluate/predictions.py) and ``OUT/<split>.csv``; scores the split
where it has labels. ``--pseudo_threshold P``: also ``OUT/pseudo_<split>.npz``, a MERBench label file
(``train_corpus``) of the samples predicted with confidence >= P, for semi-supervised training.
"""
import argparse
import os
import runpy
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..cli import refuse
from ..constants import MISSING_VALENCE
from ..data import checks
from ..data.merbench_layout import (MODALITY_KEYS, DataError, Split, SplitLoader, encode_labels, label_files,
                                    read_corpus, stack_features)
from ..evaluate import checkpoints, predictions
from ..evaluate.checkpoints import CheckpointError
from ..evaluate.metrics import mer_results, summarise
from ..fileio import atomic_save_npz, write_csv
from ..runtime import resolve_device


def build_parser():
    p = argparse.ArgumentParser(prog="python -m merbench_plugins predict",
                                description="Fold checkpoints -> probabilities and valence by sample name "
                                            "(npz + csv), on labelled or unlabelled features.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint files, folders (every *.pt inside) or globs")
    p.add_argument("--data", help="MERBench-layout folder: features/<feature>/<name>.npy and, optionally, a "
                                  "label npz (without one: every sample that has all three features)")
    p.add_argument("--merbench", help="MERBench checkout: with --dataset, its config.py says where the labels and "
                                      "features are; also builds checkpoints of MERBench's own models")
    p.add_argument("--dataset", help="with --merbench: a dataset name of its config.py (MER2023, MER2025, ...)")
    p.add_argument("--label_path", help="label npz (default: the data folder's *label*.npz, if any)")
    p.add_argument("--splits", help="comma-separated corpora of the label file (default: every one but train)")
    p.add_argument("--out", default="predictions", help="output folder: <split>.npz and <split>.csv")
    p.add_argument("--pseudo_threshold", type=float, default=None, metavar="P",
                   help="also write pseudo_<split>.npz/.csv: samples whose top probability is >= P, labelled with it")
    p.add_argument("--nonfinite", default="error", choices=["error", "missing"],
                   help="features with NaN/inf: refuse, naming the samples (error), or predict them with that modality "
                        "missing (all zeros)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    return p


def data_paths(data, dataset, merbench, label_path) -> Tuple[str, Optional[str]]:
    """(features root, label file or None) from --data / --label_path or from MERBench's config.py."""
    if bool(data) == bool(dataset):
        raise DataError("give the data either as --data FOLDER or as --merbench ROOT --dataset NAME")
    if data:
        if not os.path.isdir(data):
            raise DataError(f"data folder not found: {data}")
        found = label_files(data)
        return os.path.join(data, "features"), label_path or (found[0] if found else None)
    if not merbench:
        raise DataError("--dataset needs --merbench ROOT (the MERBench checkout whose config.py names its paths)")
    config_path = os.path.join(merbench, "config.py")
    if not os.path.isfile(config_path):
        raise DataError(f"{merbench} has no config.py: pass the MERBench root")
    config = runpy.run_path(config_path)
    resolve = lambda p: p if p is None or os.path.isabs(p) else os.path.join(merbench, p)  # noqa: E731
    features = resolve((config.get("PATH_TO_FEATURES") or {}).get(dataset))
    if features is None:
        have = ", ".join(sorted(config.get("PATH_TO_FEATURES") or {}))
        raise DataError(f"{config_path} has no PATH_TO_FEATURES[{dataset!r}] (has: {have})")
    return features, label_path or resolve((config.get("PATH_TO_LABEL") or {}).get(dataset))


def sample_names(features_root: str, feature_names) -> List[str]:
    """Every sample that has all three features (``<name>.npy`` or a ``<name>/`` folder of frames)."""
    sets = []
    for feature in feature_names:
        folder = os.path.join(features_root, feature)
        entries = os.listdir(folder) if os.path.isdir(folder) else []
        sets.append({e[:-4] if e.endswith(".npy") else e for e in entries
                     if e.endswith(".npy") or os.path.isdir(os.path.join(folder, e))})
    names = sorted(set.intersection(*sets))
    if not names:
        raise DataError(f"no sample has all three features {', '.join(feature_names)} under {features_root}")
    return names


def load_split(features_root: str, label_file: Optional[str], split: str, ckpt_args: dict, classes,
               nonfinite: str = "error") -> Tuple[Split, bool]:
    """The split's features as the checkpoints read them (their feature names and frame type), and whether it
    has labels; refused, with one line, where a feature is missing or its dimension is not the checkpoints'."""
    features = [ckpt_args[f"{m}_feature"] for m in ("audio", "text", "video")]
    for feature in features:
        if not os.path.isdir(os.path.join(features_root, feature)):
            have = sorted(os.listdir(features_root)) if os.path.isdir(features_root) else []
            raise DataError(f"the checkpoints were trained on feature {feature}, which {features_root} lacks"
                            + (f" (has: {', '.join(have)})" if have else ""))
    if label_file:
        corpus = read_corpus(label_file, split)
        names = list(corpus)
        emos, vals = encode_labels(corpus, classes if any(isinstance(v.get("emo"), str) for v in corpus.values()) else (),
                                   split)
    else:
        names = sample_names(features_root, features)
        emos, vals = torch.zeros(len(names), dtype=torch.long), torch.full((len(names),), MISSING_VALENCE)
    feats = {key: stack_features(os.path.join(features_root, f), names, ckpt_args["feat_type"])
             for key, f in zip(MODALITY_KEYS, features)}
    found = checks.nonfinite_samples(feats, names)
    if nonfinite == "missing" and found:
        print(f"note: {split}: non-finite features predicted as missing: {checks.zero_samples(feats, found, names)}")
    else:
        checks.refuse_nonfinite(found, split, dict(zip(MODALITY_KEYS, features)))
    for key, feature in zip(MODALITY_KEYS, features):
        want, got = ckpt_args.get(f"{key[:-1]}_dim"), feats[key].shape[-1]
        if want is not None and int(want) != got:
            raise DataError(f"{feature} has dimension {got} under {features_root}, but the checkpoints were trained "
                            f"on dimension {want}: these checkpoints do not fit this data")
    return Split(split, names, feats, emos, vals), label_file is not None


@torch.no_grad()
def predict_split(models, split: Split, batch_size: int, device, output_dim1: int, output_dim2: int):
    """Model-averaged (emo_probs [N, C] or None, valpreds [N] or None)."""
    probs, vals = [], []
    for model in models:
        p, v = [], []
        for batch, _, _, _ in SplitLoader(split, batch_size):
            _, emos_out, vals_out, _ = model({k: t.to(device) for k, t in batch.items()})
            if output_dim1:
                p.append(torch.softmax(emos_out.float(), -1).cpu().numpy())
            if output_dim2:
                v.append(vals_out.float().cpu().numpy().reshape(-1))
        probs.append(np.concatenate(p) if p else None)
        vals.append(np.concatenate(v) if v else None)
    return (np.mean(probs, axis=0) if output_dim1 else None), (np.mean(vals, axis=0) if output_dim2 else None)


def pseudo_labels(pred: predictions.Predictions, threshold: float, path: str) -> int:
    """A MERBench label file (``train_corpus``) + CSV of the samples predicted with confidence >= threshold."""
    confidence = pred.emo_probs.max(1)
    keep = np.flatnonzero(confidence >= threshold)
    labels = pred.predicted
    corpus = {}
    for i in keep:
        corpus[str(pred.names[i])] = {"emo": labels[i]}
        if pred.valpreds is not None:
            corpus[str(pred.names[i])]["val"] = float(pred.valpreds[i])
    atomic_save_npz(path, train_corpus=np.array(corpus, dtype=object))
    headers = ["name", "discrete", "confidence"] + (["valence"] if pred.valpreds is not None else [])
    write_csv(os.path.splitext(path)[0] + ".csv", headers,
              [[pred.names[i], labels[i], f"{confidence[i]:.6f}"] +
               ([f"{pred.valpreds[i]:.6f}"] if pred.valpreds is not None else []) for i in keep])
    return len(keep)


@dataclass(frozen=True)
class PredictRequest:
    """The command line resolved once: where the features and labels are, which checkpoints, what to write."""

    checkpoints: Tuple[str, ...]
    features_root: str
    label_file: Optional[str]
    merbench: Optional[str]
    splits: Optional[Tuple[str, ...]]            # None: every corpus of the label file but train
    out: str
    pseudo_threshold: Optional[float]
    nonfinite: str
    batch_size: int
    device: str

    @classmethod
    def resolve(cls, ns: argparse.Namespace) -> "PredictRequest":
        if ns.pseudo_threshold is not None and not 0 < ns.pseudo_threshold <= 1:
            raise DataError(f"--pseudo_threshold must be in (0, 1], got {ns.pseudo_threshold}")
        if ns.batch_size < 1:
            raise DataError(f"--batch_size must be >= 1, got {ns.batch_size}")
        features_root, label_file = data_paths(ns.data, ns.dataset, ns.merbench, ns.label_path)
        return cls(tuple(ns.checkpoints), features_root, label_file, ns.merbench,
                   tuple(ns.splits.split(",")) if ns.splits else None, ns.out, ns.pseudo_threshold, ns.nonfinite,
                   ns.batch_size, ns.device)


def run(req: PredictRequest) -> List[str]:
    features_root, label_file = req.features_root, req.label_file
    device = resolve_device(req.device)
    paths, ckpts, models = checkpoints.load_folds(req.checkpoints, device, req.merbench)
    first = ckpts[0]["args"]
    classes = tuple(ckpts[0].get("classes") or predictions.default_classes(first.get("output_dim1") or 0,
                                                                          first.get("dataset")))
    for path, ckpt in zip(paths, ckpts):
        if tuple(ckpt.get("classes") or classes) != classes:
            raise CheckpointError(f"{os.path.basename(path)} names its classes {list(ckpt['classes'])}, "
                                  f"{os.path.basename(paths[0])} {list(classes)}: average one label set only")
    scores = [c.get("eval_metric") for c in ckpts]
    eval_metric = float(np.mean(scores)) if all(s is not None for s in scores) else None
    if label_file:
        with np.load(label_file, allow_pickle=True) as npz:
            corpora = [k[:-len("_corpus")] for k in npz.files if k.endswith("_corpus")]
        splits = list(req.splits) if req.splits else [s for s in corpora if s != "train"] or corpora
    else:
        splits = ["unlabelled"]
    print(f"{len(models)} checkpoint(s) of {', '.join(sorted({c['model'] for c in ckpts}))} on "
          f"{first['audio_feature']}, {first['text_feature']}, {first['video_feature']} ({first['feat_type']})")
    written = []
    for split in splits:
        data, labelled = load_split(features_root, label_file, split, first, classes, req.nonfinite)
        probs, vals = predict_split(models, data, req.batch_size, device, first.get("output_dim1"), first.get("output_dim2"))
        known = labelled and bool((data.vals != MISSING_VALENCE).any())
        pred = predictions.Predictions(np.asarray(data.names, dtype=str), probs, vals, classes,
                                       data.emos.numpy() if labelled and probs is not None else None,
                                       data.vals.numpy() if known and vals is not None else None,
                                       eval_metric, ckpts[0].get("metric_name"), split)
        npz, csv_path = predictions.save(os.path.join(req.out, f"{split}.npz"), pred)
        written += [npz, csv_path]
        line = f"{split}: {len(pred)} samples -> {npz}, {csv_path}"
        if labelled and probs is not None:
            results, _ = mer_results(probs, pred.emolabels, vals if known else [], pred.vallabels if known else [])
            line += "; " + ", ".join(f"{k} {v:.4f}" for k, v in summarise(results).items())
        print(line)
        if pred.dummy_labels():
            print(f"warning: {pred.dummy_note(split)}")
        if req.pseudo_threshold is not None:
            if probs is None:
                raise DataError("pseudo-labels need emotion probabilities; these checkpoints predict none")
            path = os.path.join(req.out, f"pseudo_{split}.npz")
            n = pseudo_labels(pred, req.pseudo_threshold, path)
            written += [path, os.path.splitext(path)[0] + ".csv"]
            print(f"pseudo-labels: {n} of {len(pred)} {split} samples with confidence >= {req.pseudo_threshold} -> {path}")
    return written


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(PredictRequest.resolve(args))
    except (DataError, CheckpointError, checks.InputError, predictions.PredictionError) as exc:
        return refuse(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
