"""RAVDESS speech set: file names, discovery and pairing, label sets, actor folds, metrics, cached dataset.

File names are seven two-digit fields, ``modality-channel-emotion-intensity-statement-repetition-actor``
(``01-01-05-02-01-01-12.mp4``: audio-video, speech, angry, strong, "Kids ...", 1st take, actor 12).
Each audio-visual clip (modality 01, .mp4) is paired with its audio-only twin (modality 03, .wav);
the video-only copies (modality 02) carry the same pixels without sound and are ignored.

``python -m merbench_plugins ravdess-prep ROOT OUT`` (:mod:`merbench_plugins.data.ravdess_prep`) turns
each pair into ``OUT/<AV stem>.npz``; everything here reads that cache. Inside MERBench the cache dir
comes from ``--ravdess_cache DIR`` or the environment variable ``RAVDESS_CACHE``.
"""
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SubsetRandomSampler

from ..registry import register_dataset
from ..metrics import classification_metrics, confusion_matrix  # noqa: F401  (one metrics helper, re-exported)

FIELDS = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful", 7: "disgust", 8: "surprised"}
FIELD_VALUES = {
    "modality": {1: "audio-video", 2: "video-only", 3: "audio-only"},
    "channel": {1: "speech", 2: "song"},
    "emotion": EMOTIONS,
    "intensity": {1: "normal", 2: "strong"},
    "statement": {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"},
    "repetition": {1: "1st repetition", 2: "2nd repetition"},
    "actor": {a: f"Actor_{a:02d}" for a in range(1, 25)},
}
# class index -> RAVDESS emotion code. 4-class: the IEMOCAP-style four (neutral, happy, sad, angry);
# calm is *not* merged into neutral, its clips are left out like the other four emotions.
LABEL_SETS = {4: (1, 3, 4, 5), 8: (1, 2, 3, 4, 5, 6, 7, 8)}
CACHE_ENV = "RAVDESS_CACHE"
_TWO_DIGITS = re.compile(r"[0-9]{2}")


# ---------------------------------------------------------------------------------------------------
# file names


@dataclass(frozen=True)
class RavdessName:
    modality: int
    channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def key(self) -> str:
        """The six fields after the modality: identical for an AV clip and its audio-only twin."""
        return "-".join(f"{getattr(self, f):02d}" for f in FIELDS[1:])

    @property
    def stem(self) -> str:
        return f"{self.modality:02d}-{self.key}"

    @property
    def emotion_name(self) -> str:
        return EMOTIONS[self.emotion]

    @property
    def gender(self) -> str:
        return "male" if self.actor % 2 else "female"      # RAVDESS: odd actors male, even female


def parse_name(name: str, speech_only: bool = False) -> RavdessName:
    """Parse a RAVDESS file name (path and extension allowed); ``ValueError`` names the field that does not fit."""
    stem = os.path.splitext(os.path.basename(str(name)))[0]
    parts = stem.split("-")
    if len(parts) != len(FIELDS):
        raise ValueError(f"{name!r} is not a RAVDESS file name: expected 7 two-digit fields "
                         f"{'-'.join(FIELDS)} such as 01-01-05-02-01-01-12.mp4, got {len(parts)} field(s)")
    values = {}
    for fname, part in zip(FIELDS, parts):
        if not _TWO_DIGITS.fullmatch(part):
            raise ValueError(f"{name!r}: field '{fname}' is {part!r}, expected two digits")
        value = int(part)
        allowed = FIELD_VALUES[fname]
        if value not in allowed:
            raise ValueError(f"{name!r}: field '{fname}' = {part} is out of range; expected "
                             f"{min(allowed):02d}-{max(allowed):02d}")
        values[fname] = value
    if values["emotion"] == 1 and values["intensity"] == 2:
        raise ValueError(f"{name!r}: field 'intensity' = 02 (strong) does not exist for emotion 01 (neutral)")
    if speech_only and values["channel"] != 1:
        raise ValueError(f"{name!r}: field 'channel' = {values['channel']:02d} (song); this pipeline uses the "
                         f"speech set, channel 01")
    return RavdessName(**values)


# ---------------------------------------------------------------------------------------------------
# discovery and pairing


@dataclass(frozen=True)
class RavdessClip:
    """One audio-visual clip: its mp4 (modality 01) and the paired audio-only wav (modality 03)."""
    name: RavdessName
    video: str
    audio: str

    @property
    def stem(self) -> str:
        return self.name.stem


@dataclass
class Discovery:
    clips: List[RavdessClip] = field(default_factory=list)
    video_only: int = 0                  # modality-02 copies, ignored
    song: int = 0                        # channel-02 files, not part of the speech set
    problems: List[Tuple[str, str]] = field(default_factory=list)   # (path, reason)


def discover(root) -> Discovery:
    """Walk ``root`` (a folder or a list of folders; any nesting: ``Actor_XX/``,
    ``Video_Speech_Actor_XX/Actor_XX/``, separate video and audio roots, ...) and pair the clips.

    Every AV mp4 is paired with the wav of the same six trailing fields exactly once; names that do
    not parse, duplicates and unpaired files are reported in ``problems`` and left out.
    """
    roots = [root] if isinstance(root, str) else list(root)
    for folder in roots:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"RAVDESS root {folder!r} is not a directory")
    where = " or ".join(roots)
    found = Discovery()
    av: Dict[str, List[Tuple[RavdessName, str]]] = {}
    wav: Dict[str, List[Tuple[RavdessName, str]]] = {}
    walk = ((d, sub, files) for folder in roots for d, sub, files in os.walk(folder))
    for dirpath, dirnames, filenames in walk:
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for fname in sorted(filenames):
            ext = os.path.splitext(fname)[1].lower()
            if ext not in (".mp4", ".wav") or fname.startswith("."):
                continue
            path = os.path.join(dirpath, fname)
            try:
                parsed = parse_name(fname)
            except ValueError as err:
                found.problems.append((path, str(err)))
                continue
            if parsed.channel != 1:
                found.song += 1
            elif parsed.modality == 2 and ext == ".mp4":
                found.video_only += 1
            elif parsed.modality == 1 and ext == ".mp4":
                av.setdefault(parsed.key, []).append((parsed, path))
            elif parsed.modality == 3 and ext == ".wav":
                wav.setdefault(parsed.key, []).append((parsed, path))
            else:
                kind = FIELD_VALUES["modality"][parsed.modality]
                found.problems.append((path, f"modality {parsed.modality:02d} ({kind}) with extension {ext}: "
                                             f"expected 01/02 as .mp4 and 03 as .wav"))
    for table in (av, wav):
        for entries in table.values():
            for _, dup in entries[1:]:
                found.problems.append((dup, f"duplicate of {entries[0][1]}; ignored"))
    for key in sorted(av):
        parsed, video = av[key][0]
        if key not in wav:
            found.problems.append((video, f"no audio-only wav 03-{key}.wav under {where}; clip skipped"))
            continue
        found.clips.append(RavdessClip(name=parsed, video=video, audio=wav[key][0][1]))
    for key in sorted(set(wav) - set(av)):
        found.problems.append((wav[key][0][1], f"no audio-visual mp4 01-{key}.mp4 under {where}; wav skipped"))
    return found


# ---------------------------------------------------------------------------------------------------
# label sets and actor folds


def label_set(num_classes: int) -> Tuple[int, ...]:
    """RAVDESS emotion codes in class-index order for the 4- or 8-class task."""
    if int(num_classes) not in LABEL_SETS:
        raise ValueError(f"RAVDESS has a 4-class (neutral/happy/sad/angry) and an 8-class task, not {num_classes}")
    return LABEL_SETS[int(num_classes)]


def class_names(num_classes: int) -> List[str]:
    return [EMOTIONS[code] for code in label_set(num_classes)]


@dataclass(frozen=True)
class ActorFold:
    index: int
    test: Tuple[int, ...]
    val: Tuple[int, ...]
    train: Tuple[int, ...]


def actor_folds(actors: Sequence[int], n_folds: int = 6, n_val: Optional[int] = None) -> List[ActorFold]:
    """Actor-independent folds: sorted actors cut into ``n_folds`` consecutive groups.

    Fold k tests group k, validates on the next ``n_val`` actors after it (wrapping; default one
    group's worth) and trains on the rest, so no actor is in two splits of a fold and every actor
    is tested exactly once. Consecutive RAVDESS actors alternate male/female: groups of 4 are
    gender-balanced.
    """
    actors = sorted({int(a) for a in actors})
    if not 2 <= n_folds <= len(actors):
        raise ValueError(f"need 2 <= folds <= number of actors ({len(actors)}), got folds={n_folds}")
    groups = [list(map(int, g)) for g in np.array_split(np.array(actors), n_folds)]
    n_val = len(actors) // n_folds if n_val is None else int(n_val)
    folds = []
    for k in range(n_folds):
        rest = [a for g in groups[k + 1:] + groups[:k] for a in g]      # starts with the next group
        if not 1 <= n_val < len(rest):
            raise ValueError(f"fold {k}: {len(rest)} actors remain besides the {len(groups[k])} test actors; "
                             f"{n_val} validation actors would leave {len(rest) - n_val} for training. "
                             f"Use more folds or fewer validation actors (--val_actors).")
        folds.append(ActorFold(index=k, test=tuple(groups[k]), val=tuple(rest[:n_val]), train=tuple(rest[n_val:])))
    return folds


# ---------------------------------------------------------------------------------------------------
# metrics


# ---------------------------------------------------------------------------------------------------
# the cache as a dataset


def resolve_cache_dir(args=None) -> str:
    """``args.ravdess_cache``, else ``$RAVDESS_CACHE``; a clear error when neither names a cache."""
    value = getattr(args, "ravdess_cache", None) if args is not None else None
    value = value or os.environ.get(CACHE_ENV)
    hint = ("make it with `python -m merbench_plugins ravdess-prep RAVDESS_ROOT CACHE_DIR`, then pass "
            f"--ravdess_cache CACHE_DIR or set {CACHE_ENV}=CACHE_DIR")
    if not value:
        raise ValueError(f"RAVDESS needs its preprocessed cache and none was given: {hint}")
    if not os.path.isdir(value):
        raise FileNotFoundError(f"RAVDESS cache {value!r} is not a directory: {hint}")
    return value


@dataclass(frozen=True)
class CachedClip:
    stem: str
    name: RavdessName
    label: int                      # class index in the chosen label set


def index_cache(cache_dir: str, num_classes: int = 4) -> List[CachedClip]:
    """The cached clips of the chosen label set, sorted by name (file names only; nothing is opened)."""
    codes = label_set(num_classes)
    items = []
    for fname in sorted(os.listdir(cache_dir)):
        if not fname.endswith(".npz") or fname.startswith("."):
            continue
        try:
            parsed = parse_name(fname[:-4])
        except ValueError:
            continue                # not ours (e.g. a user's file next to the cache)
        if parsed.emotion in codes:
            items.append(CachedClip(stem=fname[:-4], name=parsed, label=codes.index(parsed.emotion)))
    if not items:
        raise FileNotFoundError(f"no RAVDESS clips of the {num_classes}-class set cached in {cache_dir!r}; "
                                f"run `python -m merbench_plugins ravdess-prep RAVDESS_ROOT {cache_dir}` first")
    return items


def _even_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n), centre of each of k equal segments."""
    return np.minimum(((np.arange(k) + 0.5) * n / k).astype(np.int64), n - 1)


class RavdessClips(Dataset):
    """The NPZ cache in MERBench's dataset-class shape: ``RavdessClips(args, names, labels)``.

    ``names``: cache stems; ``labels``: class indices or MERBench dicts ``{'emo': i, 'val': v}``.
    ``collater`` returns ``(batch, emos, vals, names)`` with ``batch['audios']`` [B, 1, 64, 188]
    log-mel, ``batch['videos']`` [B, T, 3, 112, 112] in [0, 1] and ``batch['texts']`` [B, 0].
    """

    def __init__(self, args, names: Sequence[str], labels: Sequence):
        self.cache_dir = resolve_cache_dir(args)
        self.names = list(names)
        self.labels = [lab if isinstance(lab, dict) else {"emo": int(lab), "val": 0.0} for lab in labels]
        if len(self.names) != len(self.labels):
            raise ValueError(f"{len(self.names)} names but {len(self.labels)} labels")
        self.num_frames = getattr(args, "num_frames", None)

    def __len__(self):
        return len(self.names)

    def _load(self, index: int):
        path = os.path.join(self.cache_dir, self.names[index] + ".npz")
        try:
            with np.load(path) as npz:
                return npz["frames"], npz["logmel"]
        except (OSError, KeyError, ValueError) as err:
            raise RuntimeError(f"cannot read RAVDESS cache file {path}: {err}; delete it and re-run "
                               f"`python -m merbench_plugins ravdess-prep` to rebuild it") from None

    def __getitem__(self, index: int):
        frames, logmel = self._load(index)                    # [T, H, W, 3] uint8, [F, T'] float32
        if self.num_frames and frames.shape[0] > int(self.num_frames):
            frames = frames[_even_indices(frames.shape[0], int(self.num_frames))]
        label = self.labels[index]
        return dict(audio=logmel, video=frames, emo=int(label["emo"]), val=float(label.get("val", 0.0)),
                    name=self.names[index])

    def collater(self, instances):
        audios = torch.from_numpy(np.stack([x["audio"] for x in instances])).float().unsqueeze(1)  # [B, 1, F, T]
        frames = torch.from_numpy(np.stack([x["video"] for x in instances]))                        # [B, T, H, W, 3]
        videos = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)                                # [B, T, 3, H, W]
        batch = dict(audios=audios, videos=videos, texts=torch.zeros(len(instances), 0))
        emos = torch.LongTensor([x["emo"] for x in instances])
        vals = torch.FloatTensor([x["val"] for x in instances])
        return batch, emos, vals, [x["name"] for x in instances]

    def get_featdim(self):
        """MERBench asks for (audio, text, video) dims: mel bins, 0 (no text), frame channels."""
        frames, logmel = self._load(0)
        return int(logmel.shape[0]), 0, int(frames.shape[-1])


class IndexSampler(Sampler):
    """Yields the given indices in order (deterministic evaluation over a subset)."""

    def __init__(self, indices: Sequence[int]):
        self.indices = list(indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def fold_indices(items: Sequence[CachedClip], fold: ActorFold) -> Tuple[List[int], List[int], List[int]]:
    actor = [c.name.actor for c in items]
    pick = lambda group: [i for i, a in enumerate(actor) if a in set(group)]  # noqa: E731
    return pick(fold.train), pick(fold.val), pick(fold.test)


class RAVDESS:
    """MERBench dataloader for dataset ``RAVDESS`` (actor-independent folds over the NPZ cache).

    Options read from ``args`` (all optional): ``ravdess_cache`` (else ``$RAVDESS_CACHE``),
    ``ravdess_classes`` 4|8, ``ravdess_folds`` (6), ``ravdess_val_actors`` (one group),
    ``batch_size``, ``num_workers``, ``debug``.

    ``get_loaders()`` returns one (train, eval) pair per fold, where eval holds the fold's
    *validation* actors, and no shared test loaders: every fold has its own test actors, which
    MERBench's fold-averaged test sets cannot express. After ``get_loaders()``,
    ``fold_test_loaders[k]`` is fold k's test loader and ``folds[k]`` its actors; our runners
    evaluate the best checkpoint of fold k on it. ``emofscore`` is the **macro**-F1 (MERBench's
    IEMOCAP loader reports weighted F1; the weighted F1 is in ``emowf1``).
    """

    dataset_class = RavdessClips

    def __init__(self, args):
        self.args = args
        self.cache_dir = resolve_cache_dir(args)
        self.num_classes = int(getattr(args, "ravdess_classes", None) or 4)
        self.class_names = class_names(self.num_classes)
        self.n_folds = int(getattr(args, "ravdess_folds", None) or 6)
        self.n_val = getattr(args, "ravdess_val_actors", None) or None        # 0 = a fold's worth
        self.batch_size = int(getattr(args, "batch_size", None) or 16)
        self.num_workers = int(getattr(args, "num_workers", None) or 0)
        self.debug = bool(getattr(args, "debug", False))
        self.folds: List[ActorFold] = []
        self.fold_test_loaders: List[DataLoader] = []
        args.output_dim1 = self.num_classes
        args.output_dim2 = 0
        args.metric_name = "emo"

    def items(self) -> List[CachedClip]:
        items = index_cache(self.cache_dir, self.num_classes)
        if self.debug:                                   # a few clips per actor keeps every fold non-empty
            per_actor: Dict[int, int] = {}
            kept = []
            for item in items:
                per_actor[item.name.actor] = per_actor.get(item.name.actor, 0) + 1
                if per_actor[item.name.actor] <= 5:
                    kept.append(item)
            items = kept
        return items

    def get_loaders(self):
        items = self.items()
        self.folds = actor_folds([c.name.actor for c in items], self.n_folds, self.n_val)
        dataset = self.dataset_class(self.args, [c.stem for c in items], [c.label for c in items])
        print(f"RAVDESS: {len(items)} clips, {self.num_classes} classes, {len(self.folds)} actor folds")
        loader = lambda sampler: DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,  # noqa: E731
                                            num_workers=self.num_workers, collate_fn=dataset.collater)
        train_loaders, eval_loaders, self.fold_test_loaders = [], [], []
        for fold in self.folds:
            train, val, test = fold_indices(items, fold)
            train_loaders.append(loader(SubsetRandomSampler(train)))
            eval_loaders.append(loader(IndexSampler(val)))
            self.fold_test_loaders.append(loader(IndexSampler(test)))
        return train_loaders, eval_loaders, []

    def calculate_results(self, emo_probs=[], emo_labels=[], val_preds=[], val_labels=[]):
        emo_probs = np.asarray(emo_probs)
        preds = emo_probs.argmax(1) if emo_probs.size else np.zeros(0, dtype=np.int64)
        m = classification_metrics(emo_labels, preds, self.num_classes)
        results = {"emoprobs": emo_probs, "emolabels": np.asarray(emo_labels), "emoacc": m["acc"],
                   "emofscore": m["macro_f1"], "emowf1": m["weighted_f1"], "emouar": m["uar"]}
        return results, f"f1:{m['macro_f1']:.4f}_acc:{m['acc']:.4f}_uar:{m['uar']:.4f}"


register_dataset("RAVDESS", RAVDESS, description="RAVDESS speech, audio-visual, actor-independent folds")


def prep_main(argv=None) -> int:
    """``python -m merbench_plugins ravdess-prep``: see :mod:`merbench_plugins.data.ravdess_prep`."""
    from .ravdess_prep import main
    return main(argv)
