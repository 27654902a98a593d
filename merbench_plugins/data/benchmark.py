"""The robustness benchmark: MER2023-shaped features from an underlying signal (``synth --preset validation|test``).

Each sample has an emotion (six classes, class-dependent valence) and a speaker. Each modality has an
underlying 1-D signal (``SIGNAL_LEN`` values, like a short spectrum or envelope): the class prototype of
that modality (each modality cannot tell one pair of classes apart, so fusion matters), a valence
direction, a speaker offset and nuisance noise. A fixed random nonlinear map per modality, the
"feature extractor" (signal -> GELU layer -> linear to the feature width, anisotropic, non-zero mean),
turns the signal into features of MER2023's sizes (audio 1024, text 5120, video 768 by default).
Audio carries the most class signal, as on MER2023.

Corruptions come from the family table (:mod:`merbench_plugins.modules.corruptions`): signal-level
families act on the signal BEFORE the extractor (so in feature space they are not additive noise),
feature-level ones on the features. Presets (each with its own generator seed, so prototypes, maps and
speakers differ too, and its own mixture):

* ``validation``: test2 = clean + missing + train-seen + validation-held-out families. Defaults and
  designs are chosen here.
* ``test``: test2 = clean + missing + train-seen + test-held-out families. Only for the reported tables.

Both: train (a few missing modalities, zeros), test1 clean, test2 corrupted, test3 unseen speakers
without valence. Every test sample's condition goes to ``conditions.json``: ``<group>/<parts>``,
group ``clean`` | ``missing`` | ``seen`` | ``held-out``, parts ``kind:targets`` joined by ``+``
(``missing:A`` = audio missing, ``missing:AT`` = only video left, ``cauchy:T``, ``laplace:ATV``).
"""
import json
import os
from collections import OrderedDict

import numpy as np

from ..modules.corruptions import FAMILIES, families
from .merbench_layout import CONDITIONS_FILE, MER2023_EMOTIONS, feature_name, generated_corpus

MER2023_DIMS = (1024, 5120, 768)
LETTERS = "ATV"
SIGNAL_LEN = 64
EXTRACTOR_WIDTH = 256
CLASS_VALENCE = np.array([0.0, -2.5, 2.5, -2.5, -1.5, 1.0])
# each modality cannot tell one pair of classes apart: audio happy/surprise, text angry/worried, video sad/worried
CONFUSED = ((2, 5), (1, 4), (3, 4))
# class-signal amplitude per modality against unit nuisance: audio the strongest (as on MER2023)
CLASS_AMPLITUDE = (0.41, 0.27, 0.28)
# the "weak" worlds: no modality carries the label alone (clean F1 near 0.67 for `attention`), as in the
# outside check where the robustness recipe cost clean F1 (docs/robustness.md, section 7)
WEAK_CLASS_AMPLITUDE = (0.22, 0.15, 0.15)
SPEAKERS, SPEAKER_SCALE = 40, 0.5

# each family's strength variants (one drawn per corrupted sample)
VARIANTS = {
    "gauss": (2.0, 3.0),              # x feature std
    "dropdims": (0.5, 0.8),           # fraction zeroed
    "gain": (3.0, 1 / 3.0),
    "swap": (None,),
    "sig_noise": (1.0, 2.0),          # x the signal's std
    "sig_clip": (0.3,),               # clip at +- this x the signal's std
    "laplace": (3.0,),                # std, x feature std
    "quant": (2, 3),                  # bits
    "scale": (0.2,),
    "mean_fill": (None,),
    "sig_blur": (9,),                 # moving-average window
    "sig_dropout": (0.5,),            # fraction of the signal zeroed, one contiguous block
    "sig_interfere": (1.0,),          # weight of the other sample's signal
    "block": (0.4,),                  # fraction of the dims, one contiguous block
    "cauchy": (1.0,),                 # scale, x feature std
    "signflip": (0.1, 0.3),
    "noise_replace": (None,),
    "permute": (None,),
}
ONE_MODALITY_ONLY = ("mean_fill", "swap")     # not drawn for "all modalities" conditions

# condition type -> fraction of test2; "held" draws from the preset's held-out group
VALIDATION_MIX = (("clean", 0.10), ("missing1", 0.18), ("missing2", 0.08), ("seen1", 0.16),
                  ("held1", 0.26), ("held_all", 0.08), ("missing1+held1", 0.10), ("missing1+seen1", 0.04))
TEST_MIX = (("clean", 0.08), ("missing1", 0.20), ("missing2", 0.10), ("seen1", 0.14),
            ("held1", 0.24), ("held_all", 0.10), ("missing1+held1", 0.10), ("missing1+seen1", 0.04))
PRESETS = OrderedDict([
    ("validation", dict(world_seed=1001, held="validation-held-out", mix=VALIDATION_MIX)),
    ("test", dict(world_seed=2002, held="test-held-out", mix=TEST_MIX)),
    # the same split into choosing and reporting, in worlds whose single modalities are weak
    ("validation-weak", dict(world_seed=3003, held="validation-held-out", mix=VALIDATION_MIX,
                             amplitude=WEAK_CLASS_AMPLITUDE)),
    ("test-weak", dict(world_seed=4004, held="test-held-out", mix=TEST_MIX, amplitude=WEAK_CLASS_AMPLITUDE)),
])
TRAIN_MISSING = (0.08, 0.02)          # training samples with one / two modalities missing (zeros)


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


def _smooth(x, window):
    """Moving average along the last axis (same length, edges averaged over what exists)."""
    kernel = np.ones(window) / window
    pad = window // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, window - 1 - pad)], mode="edge")
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), -1, padded)


class World:
    """One generator seed's fixed parts: prototypes, speakers, valence directions, feature extractors."""

    def __init__(self, seed: int, dims=MER2023_DIMS, amplitude=CLASS_AMPLITUDE):
        rng = np.random.default_rng(seed)
        self.dims = tuple(int(d) for d in dims)
        n_cls, length = len(MER2023_EMOTIONS), SIGNAL_LEN
        self.protos, self.valence_dir, self.speakers, self.maps, self.perms = [], [], [], [], []
        for m, d in enumerate(self.dims):
            # class prototypes with slow and fast structure (low-passing the signal loses part of the class)
            raw = 0.8 * _smooth(rng.normal(size=(n_cls, length)), 7) * np.sqrt(7) + 0.6 * rng.normal(size=(n_cls, length))
            raw /= raw.std(axis=1, keepdims=True)
            a, b = CONFUSED[m]
            raw[a] = raw[b] = (raw[a] + raw[b]) / np.sqrt(2)
            self.protos.append(amplitude[m] * raw)
            v = rng.normal(size=length)
            self.valence_dir.append(0.15 * v / v.std())
            self.speakers.append(SPEAKER_SCALE * rng.normal(size=(2 * SPEAKERS, length)))
            w1 = rng.normal(size=(length, EXTRACTOR_WIDTH)) * 1.5 / np.sqrt(length)
            b1 = rng.normal(scale=0.5, size=EXTRACTOR_WIDTH)
            scale = np.exp(rng.normal(scale=0.5, size=d))                      # anisotropic feature dims
            w2 = rng.normal(size=(EXTRACTOR_WIDTH, d)) / np.sqrt(EXTRACTOR_WIDTH) * scale
            b2 = rng.normal(scale=0.5, size=d) * scale
            self.maps.append((w1, b1, w2, b2, 0.15 * scale))
            self.perms.append(rng.permutation(d))

    def signal(self, rng, m, emos, vals, speakers):
        """[n, SIGNAL_LEN] underlying signal of modality m."""
        n = len(emos)
        nuisance = 0.7 * rng.normal(size=(n, SIGNAL_LEN)) + 0.7 * _smooth(rng.normal(size=(n, SIGNAL_LEN)), 5) * np.sqrt(5)
        return (self.protos[m][emos] + (vals / 2.5)[:, None] * self.valence_dir[m]
                + self.speakers[m][speakers] + nuisance)

    def extract(self, rng, m, signal):
        """The fixed nonlinear feature extractor of modality m: [n, SIGNAL_LEN] -> [n, D_m]."""
        w1, b1, w2, b2, jitter = self.maps[m]
        x = _gelu(signal @ w1 + b1) @ w2 + b2
        return x + jitter * rng.normal(size=x.shape)


# ---- corruptions: signal level ([n, L] rows), then feature level ([n, D] rows) ----

def _row_std(x):
    return x.std(axis=1, keepdims=True) + 1e-8


def corrupt_signal(rng, kind, s, variant, others):
    """Signal-level family ``kind`` on rows s [n, L]; ``others``: [n, L] other samples' signals."""
    if kind == "sig_noise":
        return s + variant * _row_std(s) * rng.normal(size=s.shape)
    if kind == "sig_clip":
        c = variant * _row_std(s)
        return np.clip(s, -c, c)
    if kind == "sig_blur":
        return _smooth(s, variant)
    if kind == "sig_dropout":
        width = int(round(variant * s.shape[1]))
        start = rng.integers(0, s.shape[1] - width + 1, size=len(s))
        cols = np.arange(s.shape[1])
        hit = (cols >= start[:, None]) & (cols < start[:, None] + width)
        return np.where(hit, 0.0, s)
    if kind == "sig_interfere":
        return s + variant * others
    raise KeyError(kind)


def corrupt_features(rng, kind, x, variant, ctx):
    """Feature-level family ``kind`` on rows x [n, D]; ctx: std (scalar), mean [D], perm [D], others [n, D]."""
    n, d = x.shape
    std = ctx["std"]
    if kind == "gauss":
        return x + variant * std * rng.normal(size=x.shape)
    if kind == "dropdims":
        return x * (rng.random(size=x.shape) >= variant)
    if kind == "gain":
        return x * variant
    if kind == "swap":
        return ctx["others"]
    if kind == "laplace":
        return x + rng.laplace(scale=variant * std / np.sqrt(2), size=x.shape)
    if kind == "quant":
        lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        levels = 2 ** variant - 1
        q = np.round((x - lo) / (hi - lo + 1e-8) * levels)
        return lo + q / levels * (hi - lo)
    if kind == "scale":
        return x * variant
    if kind == "mean_fill":
        return np.broadcast_to(ctx["mean"], x.shape).copy()
    if kind == "block":
        width = int(round(variant * d))
        start = rng.integers(0, d - width + 1, size=n)
        cols = np.arange(d)
        return np.where((cols >= start[:, None]) & (cols < start[:, None] + width), 0.0, x)
    if kind == "cauchy":
        return x + variant * std * rng.standard_cauchy(size=x.shape)
    if kind == "signflip":
        return np.where(rng.random(size=x.shape) < variant, -x, x)
    if kind == "noise_replace":
        return std * rng.normal(size=x.shape)
    if kind == "permute":
        return x[:, ctx["perm"]]
    raise KeyError(kind)


SIGNAL_KINDS = tuple(k for k, f in FAMILIES.items() if f.level == "signal")


def _draw_conditions(rng, n, mix, held_kinds):
    """Per sample: (label, missing [3] bool, [(kind, variant, targets [3] bool)])."""
    seen_kinds = families("train-seen")
    types, p = zip(*mix)
    p = np.asarray(p, dtype=float)
    drawn = np.asarray(types)[rng.choice(len(types), size=n, p=p / p.sum())]
    out = []
    for t in drawn:
        missing = np.zeros(3, dtype=bool)
        parts = []
        if t.startswith("missing1"):
            missing[rng.integers(3)] = True
        elif t == "missing2":
            missing[rng.choice(3, size=2, replace=False)] = True
        if t.endswith("seen1") or t.endswith("held1") or t == "held_all":
            pool = seen_kinds if t.endswith("seen1") else held_kinds
            if t == "held_all":
                pool = tuple(k for k in pool if k not in ONE_MODALITY_ONLY)
            if missing.any():                 # a second missing modality is missing2's business
                pool = tuple(k for k in pool if k != "mean_fill")
            kind = pool[rng.integers(len(pool))]
            variants = VARIANTS[kind]
            variant = variants[rng.integers(len(variants))]
            if t == "held_all":
                targets = np.ones(3, dtype=bool)
            else:
                targets = np.zeros(3, dtype=bool)
                targets[rng.choice(np.flatnonzero(~missing))] = True
            parts.append((kind, variant, targets))
        out.append((t, missing, parts))
    return out


def condition_name(missing, parts) -> str:
    """'held-out/missing:A+cauchy:T' etc.; the group is the strongest of: held-out > seen > missing > clean."""
    words = []
    if missing.any():
        words.append("missing:" + "".join(l for l, x in zip(LETTERS, missing) if x))
    groups = set()
    for kind, _, targets in parts:
        words.append(f"{kind}:" + "".join(l for l, x in zip(LETTERS, targets) if x))
        groups.add("seen" if FAMILIES[kind].group == "train-seen" else "held-out")
    group = ("held-out" if "held-out" in groups else "seen" if "seen" in groups
             else "missing" if missing.any() else "clean")
    return f"{group}/" + ("+".join(words) if words else "clean")


def condition_group(condition: str) -> str:
    """'held-out/...' -> 'held-out'; conditions without a group prefix are their own group."""
    return condition.split("/", 1)[0]


def _generate_split(rng, world, n, *, conditions=None, missing_rates=(0.0, 0.0), speakers=(0, SPEAKERS),
                    train_mean=None, feat_std=None):
    """(emos, vals, features [3] of [n, D], present [n, 3], condition names)."""
    emos = rng.integers(0, len(MER2023_EMOTIONS), size=n)
    vals = np.clip(CLASS_VALENCE[emos] + rng.normal(scale=0.8, size=n), -5, 5)
    who = rng.integers(speakers[0], speakers[1], size=n)
    present = np.ones((n, 3), dtype=bool)
    names = ["clean/clean"] * n
    if conditions is None:                            # train / clean / unseen speakers
        u = rng.random(n)
        one, two = u < missing_rates[0], (u >= missing_rates[0]) & (u < sum(missing_rates))
        present[np.flatnonzero(one), rng.integers(0, 3, size=one.sum())] = False
        for i in np.flatnonzero(two):
            present[i, rng.choice(3, size=2, replace=False)] = False
    signals = [world.signal(rng, m, emos, vals, who) for m in range(3)]
    feats = []
    for m in range(3):
        s = signals[m]
        if conditions is not None:
            for kind in SIGNAL_KINDS:
                for variant in VARIANTS[kind]:
                    rows = np.array([i for i, (_, _, parts) in enumerate(conditions)
                                     if any(k == kind and v == variant and t[m] for k, v, t in parts)], dtype=int)
                    if len(rows):
                        others = s[rng.integers(0, n, size=len(rows))]
                        s = s.copy()
                        s[rows] = corrupt_signal(rng, kind, s[rows], variant, others)
        feats.append(world.extract(rng, m, s))
    if conditions is not None:
        clean = [f.copy() for f in feats]
        for m in range(3):
            ctx = dict(std=feat_std[m], mean=train_mean[m], perm=world.perms[m])
            for kind in (k for k, f in FAMILIES.items() if f.level == "feature"):
                for variant in VARIANTS[kind]:
                    rows = np.array([i for i, (_, _, parts) in enumerate(conditions)
                                     if any(k == kind and v == variant and t[m] for k, v, t in parts)], dtype=int)
                    if len(rows):
                        ctx["others"] = clean[m][(rows + 1 + rng.integers(0, n - 1, size=len(rows))) % n]
                        feats[m][rows] = corrupt_features(rng, kind, feats[m][rows], variant, ctx)
        for i, (_, missing, parts) in enumerate(conditions):
            present[i] &= ~missing
            names[i] = condition_name(missing, parts)
    for m in range(3):
        feats[m][~present[:, m]] = 0.0
    return emos, vals, [f.astype(np.float32) for f in feats], present, names


def generate(out_dir: str, preset: str = "test", *, n_train: int = 1200, n_test: int = 400, n_test2: int = 1200,
             dims=MER2023_DIMS, world_seed=None) -> dict:
    """Write the preset's benchmark in MERBench's layout (utterance features only); returns its description,
    also saved as ``synthetic.json``. ``world_seed`` overrides the preset's generator seed (tests only)."""
    if preset not in PRESETS:
        raise ValueError(f"benchmark preset {preset!r}: expected one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    seed = spec["world_seed"] if world_seed is None else int(world_seed)
    world = World(seed, dims, spec.get("amplitude", CLASS_AMPLITUDE))
    rng = np.random.default_rng(seed + 1)
    held = families(spec["held"])
    train = _generate_split(rng, world, n_train, missing_rates=TRAIN_MISSING)
    feats, present = train[2], train[3]
    train_mean = [f[present[:, m]].mean(axis=0) for m, f in enumerate(feats)]
    feat_std = [float(f[present[:, m]].std(axis=0).mean()) for m, f in enumerate(feats)]
    splits = OrderedDict(train=train)
    splits["test1"] = _generate_split(rng, world, n_test)
    splits["test2"] = _generate_split(rng, world, n_test2, conditions=_draw_conditions(rng, n_test2, spec["mix"], held),
                                      train_mean=train_mean, feat_std=feat_std)
    splits["test3"] = _generate_split(rng, world, n_test, speakers=(SPEAKERS, 2 * SPEAKERS))
    return write(out_dir, splits, dict(preset=preset, world_seed=seed, dims=world.dims,
                                       class_amplitude=list(spec.get("amplitude", CLASS_AMPLITUDE)),
                                       held_out_group=spec["held"], mix=dict(spec["mix"])))


def write(out_dir, splits, meta) -> dict:
    """MERBench layout: label-6way.npz, features/<name>/<id>.npy, conditions.json, synthetic.json."""
    os.makedirs(out_dir, exist_ok=True)
    for m in range(3):
        os.makedirs(os.path.join(out_dir, "features", feature_name(m)), exist_ok=True)
    corpora, conditions, stats = {}, {}, {}
    for split, (emos, vals, feats, present, conds) in splits.items():
        names, corpora[f"{split}_corpus"], stats[split] = generated_corpus(split, emos, vals, present)
        for m in range(3):
            folder = os.path.join(out_dir, "features", feature_name(m))
            for i, name in enumerate(names):
                np.save(os.path.join(folder, name + ".npy"), feats[m][i])
        if split != "train":
            conditions[split] = dict(zip(names, conds))
    np.savez(os.path.join(out_dir, "label-6way.npz"), **corpora)
    with open(os.path.join(out_dir, CONDITIONS_FILE), "w") as f:
        json.dump(conditions, f)
    dims = meta["dims"]
    info = dict(meta, dims={"audio": dims[0], "text": dims[1], "video": dims[2]},
                features={k: feature_name(m) for m, k in enumerate(("audio", "text", "video"))}, splits=stats)
    with open(os.path.join(out_dir, "synthetic.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info
