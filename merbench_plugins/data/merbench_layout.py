"""Reader for MERBench's on-disk feature layout, without MERBench.

    ROOT/label-6way.npz              train_corpus / test1_corpus / ... : {name: {'emo': str|int, 'val': float}}
    ROOT/features/<feature>/<name>.npy   [D] (utterance) or [T, D] (frames); or a folder of per-frame .npy

Valence that is absent or '' becomes -10 (MERBench's "unknown"), which the losses and metrics skip.
Frame sequences are zero-padded at the front to the longest in the split, as MERBench does.
"""
import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..constants import MER2023_EMOTIONS, MISSING_VALENCE  # noqa: F401  (MER2023_EMOTIONS re-exported)
from . import checks

MODALITY_KEYS = ("audios", "texts", "videos")
# the generated sets' feature folders (audio, text, video), named like MER2023's features
SYNTH_FEATURES = ("chinese-hubert-large", "Baichuan-13B-Base", "clip-vit-large-patch14")
# {split: {sample name: condition}} beside the labels of a generated benchmark set
CONDITIONS_FILE = "conditions.json"


def feature_name(modality: int, level: str = "UTT") -> str:
    """A generated set's feature folder name: 'chinese-hubert-large-UTT', ..."""
    return f"{SYNTH_FEATURES[modality]}-{level}"


def generated_corpus(split: str, emos, vals, present, valence: bool = True):
    """A generated split's sample names, its label corpus ({name: {'emo', 'val'}}; test3, and every split
    without ``valence``, emotion only, as MER2023's test3) and its description for synthetic.json."""
    names = [f"{split}_{i:05d}" for i in range(len(emos))]
    corpus = {}
    for i, name in enumerate(names):
        corpus[name] = {"emo": MER2023_EMOTIONS[emos[i]]}
        if split != "test3" and valence:
            corpus[name]["val"] = float(vals[i])
    stats = {"samples": len(names), "missing_modalities": int((~present).sum()),
             "samples_with_missing": int((~present).any(1).sum()), "valence": split != "test3"}
    return names, corpus, stats


class DataError(Exception):
    """Bad input data; the message says what and where. The CLIs print it as one line and exit 2."""


@dataclass
class Split:
    """One corpus held in memory: features per modality + labels, MERBench-style batches on demand."""

    name: str
    names: List[str]
    features: Dict[str, torch.Tensor]   # 'audios'|'texts'|'videos' -> [N, D] or [N, T, D]
    emos: torch.Tensor                  # [N] long
    vals: torch.Tensor                  # [N] float, -10 = unknown
    nonfinite: Dict[str, int] = field(default_factory=dict)   # modality -> samples zeroed (--nonfinite missing)

    def __len__(self):
        return len(self.names)

    @property
    def has_valence(self) -> bool:
        return bool((self.vals != MISSING_VALENCE).any())

    def subset(self, index) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.name, [self.names[i] for i in index.tolist()],
                     {k: v[index] for k, v in self.features.items()}, self.emos[index], self.vals[index])

    def batches(self, batch_size: int, shuffle: bool = False, generator: Optional[torch.Generator] = None,
                device=None):
        """Yields (batch, emos, vals, names) like MERBench's collater."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v[idx].to(device) for k, v in self.features.items()}
            yield batch, self.emos[idx].to(device), self.vals[idx].to(device), [self.names[i] for i in idx.tolist()]


class SplitLoader:
    """Re-iterable batches over an in-memory Split (fresh shuffle each epoch, seeded)."""

    def __init__(self, split: Split, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self.split.batches(self.batch_size, shuffle=self.shuffle, generator=self.generator)

    def __len__(self):
        return (len(self.split) + self.batch_size - 1) // self.batch_size


def find_label_file(root: str, label_path: Optional[str] = None) -> str:
    if label_path:
        if not os.path.isfile(label_path):
            raise DataError(f"label file not found: {label_path}")
        return label_path
    if not os.path.isdir(root):
        raise DataError(f"data folder not found: {root} (expected a MERBench-layout folder with label*.npz and features/)")
    found = label_files(root)
    if not found:
        raise DataError(f"no label*.npz in {root}; pass --label_path FILE "
                        f"or generate demo data with `python -m merbench_plugins synth {root}`")
    return found[0]


def label_files(root: str) -> List[str]:
    """MERBench's ``label*.npz`` first, then other ``*label*.npz`` (MER2025/2026's ``track1_label_6way.npz``)."""
    first = sorted(glob.glob(os.path.join(root, "label*.npz")))
    return first + sorted(p for p in glob.glob(os.path.join(root, "*label*.npz")) if p not in first)


def read_corpus(label_file: str, split: str):
    try:
        with np.load(label_file, allow_pickle=True) as npz:
            key = f"{split}_corpus"
            if key not in npz.files:
                raise DataError(f"{label_file} has no {key!r} (has: {', '.join(npz.files)})")
            corpus = npz[key].tolist()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read label file {label_file}: {exc}") from None
    if not isinstance(corpus, dict) or not corpus:
        raise DataError(f"{split} corpus in {label_file} is empty")
    return corpus


def emotion_vocabulary(corpus: dict, known: Sequence[str] = ()) -> Sequence[str]:
    """The class names in index order: ``known`` (the dataset's emotion set, or --emotions) when given, else
    MER2023's six when the labels are among them, else the labels sorted; () for integer labels."""
    labels = {v["emo"] for v in corpus.values()}
    if known:
        return tuple(known)
    if all(isinstance(e, str) for e in labels):
        return MER2023_EMOTIONS if labels <= set(MER2023_EMOTIONS) else tuple(sorted(labels))
    return ()  # integer labels: used as they are


def encode_labels(corpus: dict, vocab: Sequence[str], split: str, label_file: str = "the labels"):
    emos, vals = [], []
    index = {e: i for i, e in enumerate(vocab)}
    unknown = sorted({str(v.get("emo")) for v in corpus.values() if isinstance(v.get("emo"), str) and v["emo"] not in index})
    if unknown and vocab:
        names = [n for n, v in corpus.items() if str(v.get("emo")) in unknown]
        raise DataError(f"{label_file}, {split}: emotion label(s) {', '.join(map(repr, unknown))} are not in the "
                        f"dataset's emotion set ({', '.join(vocab)}): samples {checks.named(names)}; fix the labels, "
                        f"or pass --emotions with the full class list")
    for name, label in corpus.items():
        emo = label.get("emo")
        if isinstance(emo, str):
            emo = index[emo]
        emos.append(int(emo))
        val = label.get("val", "")
        vals.append(MISSING_VALENCE if val is None or val == "" else float(val))
    return torch.tensor(emos, dtype=torch.long), torch.tensor(vals, dtype=torch.float)


def load_feature(feature_dir: str, name: str, check_finite: bool = True) -> np.ndarray:
    path = os.path.join(feature_dir, name + ".npy")
    if os.path.isfile(path):
        x = np.load(path)
    elif os.path.isdir(os.path.join(feature_dir, name)):
        frames = sorted(glob.glob(os.path.join(feature_dir, name, "*.npy")))
        if not frames:
            raise DataError(f"feature folder {os.path.join(feature_dir, name)} holds no .npy frames")
        x = np.stack([np.load(f).squeeze() for f in frames])
    else:
        raise DataError(f"missing feature file {path}")
    x = np.asarray(x, dtype=np.float32).squeeze()
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise DataError(f"{path}: expected [D] or [T, D], got shape {tuple(x.shape)}")
    if check_finite and not np.isfinite(x).all():
        raise DataError(f"{path}: feature of sample {name!r} contains NaN or inf")
    return x


def stack_features(feature_dir: str, names: List[str], feat_type: str) -> torch.Tensor:
    if not os.path.isdir(feature_dir):
        raise DataError(f"feature folder not found: {feature_dir}")
    seqs = [load_feature(feature_dir, n, check_finite=False) for n in names]      # checked per split, all named
    dims = Counter(s.shape[1] for s in seqs)
    dim = dims.most_common(1)[0][0]
    for n, s in zip(names, seqs):
        if s.shape[1] != dim:
            raise DataError(f"{feature_dir}: sample {n!r} has dim {s.shape[1]}, but {dims[dim]} of {len(seqs)} samples "
                            f"have {dim}; every sample of a feature must share its dimension")
    if feat_type == "utt":
        return torch.from_numpy(np.stack([s.mean(axis=0) for s in seqs]))          # [N, D]
    t_max = max(len(s) for s in seqs)
    out = np.zeros((len(seqs), t_max, dim), dtype=np.float32)                       # front padding
    for i, s in enumerate(seqs):
        out[i, t_max - len(s):] = s
    return torch.from_numpy(out)                                                    # [N, T, D]


class FeatureDataset:
    """A MERBench-layout dataset folder: ``load('train')`` etc. return :class:`Split` objects."""

    def __init__(self, root: str, audio_feature: str, text_feature: str, video_feature: str,
                 feat_type: str = "utt", label_path: Optional[str] = None, dataset: str = "",
                 emotions: Sequence[str] = (), nonfinite: str = "error"):
        """``dataset`` / ``emotions``: the emotion set labels are checked against (:func:`checks.emotion_set`);
        ``nonfinite``: refuse non-finite features (``error``) or zero that modality (``missing``)."""
        if feat_type not in ("utt", "frm_align", "frm_unalign"):
            raise DataError(f"feat_type={feat_type!r}: expected utt, frm_align or frm_unalign")
        self.root, self.feat_type = root, feat_type
        self.label_file = find_label_file(root, label_path)
        self.feature_names = dict(zip(MODALITY_KEYS, (audio_feature, text_feature, video_feature)))
        for key, feat in self.feature_names.items():
            if not feat:
                raise DataError(f"no {key[:-1]} feature name given (--{key[:-1]}_feature)")
            path = os.path.join(root, "features", feat)
            if not os.path.isdir(path):
                have = sorted(os.listdir(os.path.join(root, "features"))) if os.path.isdir(os.path.join(root, "features")) else []
                raise DataError(f"feature folder not found: {path}" + (f" (available: {', '.join(have)})" if have else ""))
        if nonfinite not in checks.NONFINITE_POLICIES:
            raise DataError(f"--nonfinite {nonfinite!r}: use {' or '.join(checks.NONFINITE_POLICIES)}")
        self.nonfinite = nonfinite
        self.vocab = emotion_vocabulary(read_corpus(self.label_file, "train"), checks.emotion_set(dataset, emotions))

    def splits(self) -> List[str]:
        with np.load(self.label_file, allow_pickle=True) as npz:
            return [k[: -len("_corpus")] for k in npz.files if k.endswith("_corpus")]

    @property
    def num_classes(self) -> int:
        if self.vocab:
            return len(self.vocab)
        emos, _ = encode_labels(read_corpus(self.label_file, "train"), self.vocab, "train",
                                self.label_file)           # labels only, no features
        return int(emos.max()) + 1

    def load(self, split: str) -> Split:
        corpus = read_corpus(self.label_file, split)
        names = list(corpus)
        emos, vals = encode_labels(corpus, self.vocab, split, self.label_file)
        checks.check_labels(emos, vals, names, self.num_classes, split, self.vocab)
        feats = {k: stack_features(os.path.join(self.root, "features", f), names, self.feat_type)
                 for k, f in self.feature_names.items()}
        found = checks.nonfinite_samples(feats, names)
        if self.nonfinite == "error":
            checks.refuse_nonfinite(found, split, {k: os.path.join(self.root, "features", f)
                                                   for k, f in self.feature_names.items()})
        return Split(split, names, feats, emos, vals, nonfinite=checks.zero_samples(feats, found, names))

    def dims(self, split: Split):
        return tuple(split.features[k].shape[-1] for k in MODALITY_KEYS)
