"""Predictions by sample name: the one file format of result files, ``predict``, ``ensemble`` and ``submit``.

An npz with

    names         [N]     sample names (every prediction is paired by name, never by position)
    emo_probs     [N, C]  class probabilities (upstream's key: MER2025/2026's submission.py reads it)
    emoprobs      [N, C]  the same under MERBench's results key
    valpreds      [N]     valence (absent for emotion-only datasets: MER2024, MER2025/2026 Track 1)
    classes       [C]     class names in column order
    emolabels, vallabels  the labels where known (-10 = unknown valence)
    eval_metric, metric_name   validation score of what made them (cross-validation), for ``ensemble --top``
    split         the test set / corpus they are for (test1, ...), where known

and a CSV beside it: ``name, discrete, confidence, [valence,] p_<class>...``.
"""
import csv
import os
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..constants import MER2023_EMOTIONS, MISSING_VALENCE
from ..data import checks
from ..fileio import atomic_save_npz, write_csv


class PredictionError(ValueError):
    """A prediction file that cannot be used as asked; one line naming the file(s)."""


def default_classes(num_classes: int, dataset: Optional[str] = None, emotions: Sequence[str] = ()) -> Tuple[str, ...]:
    """Class names in output order where the data does not name them: ``emotions`` (--emotions) or the dataset's
    emotion set (MERBench's ``emos_mer`` for MER2023-2026), MER's six for a file that names no dataset, else
    the class indices."""
    known = tuple(checks.emotion_set(dataset or "", emotions))
    if len(known) == num_classes:
        return known
    if dataset is None and num_classes == len(MER2023_EMOTIONS):
        return tuple(MER2023_EMOTIONS)
    return tuple(str(c) for c in range(num_classes))


@dataclass(frozen=True)
class Predictions:
    names: np.ndarray                       # [N] str
    emo_probs: Optional[np.ndarray]         # [N, C]
    valpreds: Optional[np.ndarray]          # [N]
    classes: Tuple[str, ...]
    emolabels: Optional[np.ndarray] = None  # [N] int
    vallabels: Optional[np.ndarray] = None  # [N] float, -10 = unknown
    eval_metric: Optional[float] = None
    metric_name: Optional[str] = None
    split: Optional[str] = None
    source: str = ""

    def __len__(self):
        return len(self.names)

    @property
    def predicted(self) -> List[str]:
        """The argmax class name of every sample."""
        return [self.classes[i] for i in np.argmax(self.emo_probs, 1)] if self.emo_probs is not None else []

    def select(self, names: Sequence[str]) -> "Predictions":
        """The same predictions in the order of ``names`` (each must be present)."""
        index = {n: i for i, n in enumerate(self.names)}
        rows = np.array([index[n] for n in names], dtype=np.int64)
        take = lambda a: None if a is None else np.asarray(a)[rows]  # noqa: E731
        return replace(self, names=np.asarray(self.names)[rows], emo_probs=take(self.emo_probs),
                       valpreds=take(self.valpreds), emolabels=take(self.emolabels), vallabels=take(self.vallabels))

    def dummy_labels(self) -> bool:
        """Every label is the same class (MER2024-2026's test sets: all 'neutral', since the real ones are secret)."""
        return self.emolabels is not None and len(self.emolabels) > 1 and len(set(np.asarray(self.emolabels).tolist())) == 1

    def dummy_note(self, what: str) -> str:
        """The warning for :meth:`dummy_labels`: ``what`` (e.g. 'test1') has placeholder labels."""
        return (f"every {what} label is {self.classes[int(self.emolabels[0])]!r}: placeholders for secret test labels "
                f"(MER2024-2026), so its scores mean nothing; the challenge's server scores the predictions "
                f"(`python -m merbench_plugins submit` writes its file)")

    def arrays(self) -> dict:
        out = {"names": np.asarray(self.names, dtype=str), "classes": np.asarray(self.classes, dtype=str)}
        if self.emo_probs is not None:
            out["emo_probs"] = out["emoprobs"] = np.asarray(self.emo_probs, dtype=np.float32)
        for key in ("valpreds", "emolabels", "vallabels"):
            if getattr(self, key) is not None:
                out[key] = np.asarray(getattr(self, key))
        if self.eval_metric is not None:
            out["eval_metric"], out["metric_name"] = np.float64(self.eval_metric), np.asarray(str(self.metric_name))
        if self.split:
            out["split"] = np.asarray(self.split)
        return out


def from_results(names, results: dict, classes: Sequence[str], *, eval_metric=None, metric_name=None,
                 split=None) -> Predictions:
    """Predictions of a scored test set (``calculate_results``' dict: emoprobs, emolabels, valpreds, vallabels)."""
    arr = lambda key: np.asarray(results[key]) if len(results.get(key, [])) else None  # noqa: E731
    probs = arr("emoprobs")
    classes = tuple(classes) if probs is None or len(classes) == probs.shape[1] else default_classes(probs.shape[1])
    return Predictions(np.asarray(names, dtype=str), probs, None if arr("valpreds") is None else arr("valpreds").reshape(-1),
                       tuple(classes), arr("emolabels"), arr("vallabels"),
                       None if eval_metric is None else float(eval_metric), metric_name, split)


def save(path: str, pred: Predictions, csv_path: Optional[str] = None, **extra) -> Tuple[str, str]:
    """``path`` (npz, with ``extra`` arrays such as MERBench's ``args``) and its CSV (default: same stem)."""
    atomic_save_npz(path, **pred.arrays(), **extra)
    csv_path = csv_path or os.path.splitext(path)[0] + ".csv"
    write_csv(csv_path, *csv_rows(pred))
    return path, csv_path


def csv_rows(pred: Predictions):
    headers = ["name"]
    columns = []
    if pred.emo_probs is not None:
        headers += ["discrete", "confidence"]
        columns += [pred.predicted, [f"{p:.6f}" for p in pred.emo_probs.max(1)]]
    if pred.valpreds is not None:
        headers.append("valence")
        columns.append([f"{v:.6f}" for v in pred.valpreds])
    if pred.emo_probs is not None:
        headers += [f"p_{c}" for c in pred.classes]
        columns += [[f"{p:.6f}" for p in pred.emo_probs[:, j]] for j in range(len(pred.classes))]
    return headers, [[n] + [c[i] for c in columns] for i, n in enumerate(pred.names)]


def load(path: str) -> Predictions:
    """Any result or prediction npz with sample names (ours, main-robust.py's, predict's, ensemble's)."""
    try:
        npz = np.load(path, allow_pickle=True)
    except Exception as exc:  # noqa: BLE001
        raise PredictionError(f"{path} is not a readable npz ({type(exc).__name__}: {exc})") from None
    with npz:
        files = set(npz.files)
        if "names" not in files:
            raise PredictionError(f"{path} has no sample names (upstream main-release.py's result files store only "
                                  f"emo_probs, paired by position): retrain with main-robust.py or run `predict`")
        probs_key = "emo_probs" if "emo_probs" in files else "emoprobs" if "emoprobs" in files else None
        if probs_key is None and "valpreds" not in files:
            raise PredictionError(f"{path} holds neither emotion probabilities nor valence predictions")
        get = lambda k: np.asarray(npz[k]) if k in files and npz[k].size else None  # noqa: E731
        probs = get(probs_key) if probs_key else None
        args = npz["args"].item() if "args" in files else None
        dataset = getattr(args, "dataset", None) if args is not None and not isinstance(args, dict) else \
            (args or {}).get("dataset")
        classes = tuple(str(c) for c in npz["classes"]) if "classes" in files else \
            default_classes(probs.shape[1], dataset) if probs is not None else ()
        names = np.asarray(npz["names"]).astype(str)
        valpreds = get("valpreds")
        pred = Predictions(names, None if probs is None else probs.astype(np.float64),
                           None if valpreds is None else valpreds.reshape(-1).astype(np.float64), classes,
                           get("emolabels"), get("vallabels"),
                           float(npz["eval_metric"]) if "eval_metric" in files else None,
                           str(npz["metric_name"]) if "metric_name" in files else None,
                           str(npz["split"]) if "split" in files else _split_from_name(path), os.path.abspath(path))
    if len(set(pred.names.tolist())) != len(pred.names):
        raise PredictionError(f"{path} names a sample more than once")
    if probs is not None and probs.shape != (len(names), len(classes)):
        raise PredictionError(f"{path}: emo_probs has shape {probs.shape}, expected ({len(names)}, {len(classes)})")
    return pred


def _split_from_name(path: str) -> Optional[str]:
    """MERBench's result files start with their test set: ``test1_features:...npz``."""
    head = os.path.basename(path).split("_", 1)[0]
    return head if head.startswith("test") and head[4:].isdigit() else None


def known_valence(pred: Predictions) -> np.ndarray:
    """[N] bool: samples whose valence label is known."""
    if pred.vallabels is None:
        return np.zeros(len(pred), dtype=bool)
    return np.asarray(pred.vallabels, dtype=float) != MISSING_VALENCE


def read_names_csv(path: str, column: str = "name") -> List[str]:
    """One column of a CSV with a header row (a challenge's candidate list)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise PredictionError(f"{path} has no {column!r} column (columns: {', '.join(reader.fieldnames or [])})")
            return [row[column] for row in reader]
    except OSError as exc:
        raise PredictionError(f"cannot read {path}: {exc.strerror or exc}") from None
