"""RAVDESS speech set: file names, discovery and pairing, label sets, actor folds, metrics, cached dataset.

File names are seven two-digit fields, ``modality-channel-emotion-intensity-statement-repetition-actor``
(``01-01-05-02-01-01-12.mp4``: audio-video, speech, angry, strong, "Kids ...", 1st take, actor 12).
Each audio-visual clip (modality 01, .mp4) is paired with its audio-only twin (modality 03, .wav);
the video-only copies (modality 02) carry the same pixels without sound and are ignored.

``python -m merbench_plugins ravdess-prep ROOT OUT`` (:mod:`merbench_plugins.data.ravdess_prep`) turns
each pair into ``OUT/<AV stem>.npz``; everything here reads that cache. Inside MERBench the cache dir
comes from ``--ravdess_cache DIR`` or the environment variable ``RAVDESS_CACHE``.

Each cache file carries a JSON ``header`` (format, the prep settings, a CRC-32 of the frames and
log-mel bytes, the crop used): a truncated, empty, foreign or other-settings file is found by
:func:`read_cache_file`, skipped by the loaders with one line naming it, and rebuilt by the next
``ravdess-prep``. Training reads the cache once into memory (:func:`load_cache`).
"""
import json
import os
import re
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SubsetRandomSampler

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
CACHE_FORMAT = 2                   # 2: JSON header with settings and checksum; emotion code, no `label`
MANIFEST = "ravdess_prep.json"
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


REBUILD_HINT = "run `python -m merbench_plugins ravdess-prep RAVDESS_ROOT CACHE_DIR` again to rebuild it"


class CacheError(ValueError):
    """A cache file that cannot be used: one line naming the file (``path``), the ``reason`` and the fix."""

    def __init__(self, path: str, reason: str, hint: str = REBUILD_HINT):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}" + (f"; {hint}" if hint else ""))


def checksum(*arrays: np.ndarray) -> str:
    """CRC-32 of the arrays' bytes, in order (``crc32:0123abcd``)."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), crc)
    return f"crc32:{crc & 0xFFFFFFFF:08x}"


def class_indices(emotion: int) -> Dict[str, int]:
    """The emotion code's class index in each task, -1 where it is not part of it."""
    return {f"class_index_{n}": (LABEL_SETS[n].index(emotion) if emotion in LABEL_SETS[n] else -1) for n in LABEL_SETS}


def write_cache_file(path: str, frames: np.ndarray, logmel: np.ndarray, name: RavdessName, settings: Dict,
                     crop: str = "center", **extra):
    """One clip's NPZ (atomic): frames uint8 [T, H, W, 3], logmel float32 [F, T'], a JSON ``header``
    (format, settings, checksum, crop), the emotion code and its class index in each task (named,
    never a bare ``label``), the other name fields and ``extra`` arrays."""
    from ..fileio import atomic_save_npz
    header = {"format": CACHE_FORMAT, "settings": settings, "checksum": checksum(frames, logmel), "crop": crop,
              "frames_shape": list(frames.shape), "logmel_shape": list(logmel.shape)}
    fields = {k: np.int64(v) for k, v in class_indices(name.emotion).items()}
    atomic_save_npz(path, compress=False, header=np.array(json.dumps(header, sort_keys=True)), frames=frames,
                    logmel=logmel, emotion=np.int64(name.emotion), emotion_name=np.array(name.emotion_name),
                    actor=np.int64(name.actor), intensity=np.int64(name.intensity),
                    statement=np.int64(name.statement), repetition=np.int64(name.repetition),
                    gender=np.array(name.gender), crop=np.array(crop), **fields, **extra)


def settings_diff(found: Dict, expected: Dict) -> str:
    """``size 64 -> 112, crop face -> auto`` for the keys of ``expected`` that differ; '' when none."""
    return ", ".join(f"{k} {found.get(k)} -> {v}" for k, v in sorted(expected.items()) if found.get(k) != v)


def read_cache_file(path: str, settings: Optional[Dict] = None) -> Dict:
    """Read and verify one cache file -> dict(frames, logmel, header). ``CacheError`` (one line naming the
    file) when it is missing, empty, truncated, not ours, of an older format, made with other ``settings``
    or its checksum does not match."""
    def fail(reason):
        return CacheError(path, reason)
    if not os.path.exists(path):
        raise fail("missing")
    if os.path.getsize(path) == 0:
        raise fail("empty file")
    try:
        with np.load(path) as npz:
            keys = set(npz.files)
            if "header" not in keys:
                raise fail("no header (written by an older ravdess-prep)")
            header = json.loads(str(npz["header"]))
            frames, logmel = npz["frames"], npz["logmel"]
    except CacheError:
        raise
    except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, OSError, KeyError, ValueError, ...
        raise fail(f"unreadable, truncated or not a cache NPZ ({type(err).__name__}: {err})") from None
    if header.get("format") != CACHE_FORMAT:
        raise fail(f"cache format {header.get('format')}, this version reads {CACHE_FORMAT}")
    if settings is not None and settings_diff(header.get("settings", {}), settings):
        raise fail(f"made with other settings ({settings_diff(header.get('settings', {}), settings)})")
    if [list(frames.shape), list(logmel.shape)] != [header.get("frames_shape"), header.get("logmel_shape")]:
        raise fail(f"array shapes {frames.shape} / {logmel.shape} differ from its header")
    if checksum(frames, logmel) != header.get("checksum"):
        raise fail("checksum mismatch (the file was altered or damaged)")
    return {"frames": frames, "logmel": logmel, "header": header}


def check_cache_file(path: str, settings: Optional[Dict] = None) -> Optional[str]:
    """None when the file is a good cache file made with ``settings``, else the reason (one line)."""
    try:
        read_cache_file(path, settings)
    except CacheError as err:
        return str(err)
    return None


def manifest_settings(cache_dir: str) -> Optional[Dict]:
    """The prep settings recorded in ``cache_dir``'s manifest (None without a readable one)."""
    try:
        with open(os.path.join(cache_dir, MANIFEST)) as f:
            return json.load(f).get("params") or None
    except (OSError, ValueError, AttributeError):
        return None


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


def _pick_frames(frames: np.ndarray, num_frames: Optional[int]) -> np.ndarray:
    if num_frames and frames.shape[0] > int(num_frames):
        return frames[_even_indices(frames.shape[0], int(num_frames))]
    return frames


@dataclass
class CacheArrays:
    """The cache in memory: ``frames`` uint8 [N, T, H, W, 3], ``logmels`` float16 [N, F, T'] of the
    readable clips ``kept`` (indices into the stems asked for); ``problems``: (file, reason) of the rest."""
    frames: torch.Tensor
    logmels: torch.Tensor
    kept: List[int]
    problems: List[Tuple[str, str]]
    settings: Optional[Dict]
    crops: Dict[str, int]
    seconds: float = 0.0


def majority_settings(paths: Sequence[str]) -> Optional[Dict]:
    """The settings most of the files' headers hold (only the small header member is read)."""
    votes = Counter()
    for path in paths:
        try:
            with np.load(path) as npz:
                votes[json.dumps(json.loads(str(npz["header"])).get("settings"), sort_keys=True)] += 1
        except Exception:  # noqa: BLE001 - unreadable files are reported by the full read
            continue
    return json.loads(votes.most_common(1)[0][0]) if votes else None


def load_cache(cache_dir: str, stems: Sequence[str], num_frames: Optional[int] = None,
               settings: Optional[Dict] = None) -> CacheArrays:
    """Read every ``stems`` file once, verified, into two arrays. Files that fail (see
    :func:`read_cache_file`) are left out and listed in ``problems``. ``settings``: those of the
    manifest, else those most files hold; a file made with others is a problem too."""
    start = time.time()
    settings = settings or manifest_settings(cache_dir) or majority_settings(
        [os.path.join(cache_dir, stem + ".npz") for stem in stems])
    frames = logmels = None
    kept, problems, crops = [], [], Counter()
    for i, stem in enumerate(stems):
        path = os.path.join(cache_dir, stem + ".npz")
        try:
            got = read_cache_file(path, settings)
        except CacheError as err:
            problems.append((err.path, err.reason))
            continue
        clip_frames = _pick_frames(got["frames"], num_frames)
        if frames is None:                            # one allocation for all clips: no list + stack copy
            frames = np.empty((len(stems),) + clip_frames.shape, np.uint8)
            logmels = np.empty((len(stems),) + got["logmel"].shape, np.float16)
        if clip_frames.shape != frames.shape[1:] or got["logmel"].shape != logmels.shape[1:]:
            problems.append((path, f"shapes {clip_frames.shape} / {got['logmel'].shape} differ from the other "
                                   f"files' {frames.shape[1:]} / {logmels.shape[1:]}"))
            continue
        frames[len(kept)], logmels[len(kept)] = clip_frames, got["logmel"]
        crops[got["header"].get("crop", "center")] += 1
        kept.append(i)
    if not kept:
        first = f"; the first: {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise CacheError(cache_dir, f"none of its {len(stems)} cache files is usable{first}",
                         hint=f"run `python -m merbench_plugins ravdess-prep RAVDESS_ROOT {cache_dir}` again")
    return CacheArrays(torch.from_numpy(frames[:len(kept)]), torch.from_numpy(logmels[:len(kept)]), kept, problems,
                       settings, dict(crops), time.time() - start)


def report_problems(problems: Sequence[Tuple[str, str]], what: str = "skipped", limit: int = 10, file=None):
    """One line per problem file (the first ``limit``, then a count), and how to fix them."""
    if not problems:
        return
    file = file or sys.stderr
    for path, reason in problems[:limit]:
        print(f"{what} {path}: {reason}", file=file)
    if len(problems) > limit:
        print(f"... and {len(problems) - limit} more {what} file(s)", file=file)
    print(f"note: {len(problems)} cache file(s) {what}; {REBUILD_HINT.replace(' it', ' them')}", file=file)


class RavdessClips(Dataset):
    """The NPZ cache in MERBench's dataset-class shape: ``RavdessClips(args, names, labels)``; reads one
    verified file per sample (a bad file raises :class:`CacheError`, one line naming it).

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
        got = read_cache_file(os.path.join(self.cache_dir, self.names[index] + ".npz"))
        return _pick_frames(got["frames"], self.num_frames), got["logmel"]

    def __getitem__(self, index: int):
        frames, logmel = self._load(index)                    # [T, H, W, 3] uint8, [F, T'] float32
        label = self.labels[index]
        return dict(audio=torch.from_numpy(logmel), video=torch.from_numpy(frames), emo=int(label["emo"]),
                    val=float(label.get("val", 0.0)), name=self.names[index])

    def collater(self, instances):
        audios = torch.stack([x["audio"] for x in instances]).float().unsqueeze(1)                # [B, 1, F, T]
        frames = torch.stack([x["video"] for x in instances])                                     # [B, T, H, W, 3]
        videos = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)                                # [B, T, 3, H, W]
        batch = dict(audios=audios, videos=videos, texts=torch.zeros(len(instances), 0))
        emos = torch.LongTensor([x["emo"] for x in instances])
        vals = torch.FloatTensor([x["val"] for x in instances])
        return batch, emos, vals, [x["name"] for x in instances]

    def get_featdim(self):
        """MERBench asks for (audio, text, video) dims: mel bins, 0 (no text), frame channels."""
        frames, logmel = self._load(0)
        return int(logmel.shape[0]), 0, int(frames.shape[-1])


class RavdessMemory(RavdessClips):
    """The cache read once into memory (uint8 frames, float16 log-mels) instead of one NPZ per sample
    per epoch; batches equal :class:`RavdessClips`' with the log-mel rounded to float16.

    ``RavdessMemory(args, names, labels)`` reads the files itself (a bad one raises :class:`CacheError`);
    :class:`RAVDESS` passes ``arrays`` from :func:`load_cache`, which has left bad files out already.
    """

    def __init__(self, args, names: Sequence[str], labels: Sequence, arrays: Optional[CacheArrays] = None):
        super().__init__(args, names, labels)
        if arrays is None:
            arrays = load_cache(self.cache_dir, self.names, self.num_frames)
            if arrays.problems:
                raise CacheError(*arrays.problems[0])
        if len(arrays.kept) != len(self.names):
            raise ValueError(f"{len(self.names)} names but {len(arrays.kept)} cached clips in memory")
        self.frames, self.logmels = arrays.frames, arrays.logmels          # [N, T, H, W, 3], [N, F, T']

    def _load(self, index: int):
        return self.frames[index].numpy(), self.logmels[index].numpy()

    def __getitem__(self, index: int):
        label = self.labels[index]
        return dict(audio=self.logmels[index], video=self.frames[index], emo=int(label["emo"]),
                    val=float(label.get("val", 0.0)), name=self.names[index])


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
    ``batch_size``, ``num_workers``, ``debug``, ``num_frames``. The cache is read into memory once
    per run (:func:`load_cache`); unusable files are skipped with one line each.

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
        self.skipped: List[Tuple[str, str]] = []
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
        """Reads the cache once into memory (bad files are skipped, one line each on stderr, and kept
        in ``self.skipped``), then builds one (train, eval) loader pair per actor fold."""
        items = self.items()
        arrays = load_cache(self.cache_dir, [c.stem for c in items], getattr(self.args, "num_frames", None))
        report_problems(arrays.problems)
        self.skipped = arrays.problems
        self.crops = arrays.crops
        items = [items[i] for i in arrays.kept]
        self.folds = actor_folds([c.name.actor for c in items], self.n_folds, self.n_val)
        dataset = RavdessMemory(self.args, [c.stem for c in items], [c.label for c in items], arrays=arrays)
        self.items_kept = items
        self.labels = np.array([c.label for c in items], dtype=np.int64)
        self.stems = [c.stem for c in items]
        mb = (arrays.frames.numel() + 2 * arrays.logmels.numel()) / 2 ** 20
        print(f"RAVDESS: {len(items)} clips ({mb:.0f} MB read into memory in {arrays.seconds:.1f} s"
              f"{f', {len(arrays.problems)} bad file(s) skipped' if arrays.problems else ''}), "
              f"{self.num_classes} classes, {len(self.folds)} actor folds")
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
