"""A small synthetic MER2023-shaped feature set in MERBench's on-disk layout.

Six emotions with class-dependent valence; three modalities that each see the emotion through
their own noisy linear view and each confuse a different pair of classes, so fusion matters and
losing a modality hurts a model that never learned to cope. Splits: train (a few missing
modalities), test1 (clean), test2 (missing and noisy modalities, like MER2023's noise test),
test3 (no valence labels). Both utterance ([D]) and frame ([T, D]) features are written.

``--layout track1``: MER2025/2026 Track 1's files instead: ``track1_label_6way.npz`` (train + test1,
emotion only, every test1 label the placeholder 'neutral' as upstream's preprocessing writes it without
ground truth), ``track_all_candidates.csv`` (the names to predict) and ``track1_test_dis.csv`` (their
true labels, the file the challenge's evaluation.py scores against).

``--preset robust-mild`` / ``robust-strong``: the corruption benchmark. Its test2 mixes clean
samples, one or two missing modalities, and present-but-corrupted ones (strong additive noise on one
or on every present modality, zeroed feature dimensions, scale drift, another sample's features
swapped in), test3 is speaker/domain-shifted (per-speaker offset and gain, no valence); every test
sample's condition is written to ``conditions.json`` ({split: {name: condition}}).
"""
import argparse
import json
import os
import sys

import numpy as np

from ..fileio import write_csv
from .merbench_layout import MER2023_EMOTIONS

FEATURES = ("chinese-hubert-large", "Baichuan-13B-Base", "clip-vit-large-patch14")  # audio, text, video
CLASS_VALENCE = np.array([0.0, -2.5, 2.5, -2.5, -1.5, 1.0])
# each modality cannot tell one pair of classes apart: audio happy/surprise, text angry/worried, video sad/worried
CONFUSED = ((2, 5), (1, 4), (3, 4))
SIGNAL = (1.0, 1.1, 0.8)
CONDITIONS_FILE = "conditions.json"


def feature_name(modality: int, level: str = "UTT") -> str:
    return f"{FEATURES[modality]}-{level}"


def _views(rng, dims, latent=8):
    protos = rng.normal(size=(len(MER2023_EMOTIONS), latent))
    views = []
    for m, d in enumerate(dims):
        p = protos.copy()
        a, b = CONFUSED[m]
        p[a] = p[b] = (protos[a] + protos[b]) / 2
        mix = rng.normal(size=(latent + 1, d)) / np.sqrt(latent)
        views.append((p, mix))
    return views


# corruption benchmark: test2's mix of conditions (fractions) and each kind's strength per setting
ROBUST_MIX = (("clean", 0.12), ("missing1", 0.14), ("missing2", 0.12), ("noise1", 0.12), ("noise_all", 0.10),
              ("missing1+noise", 0.10), ("dropdims1", 0.10), ("drift1", 0.10), ("swap1", 0.10))
STRENGTHS = {"mild": dict(noise=1.5, dropdims=0.5, gain=2.0, shift=0.5, speaker=0.5),
             "strong": dict(noise=3.0, dropdims=0.8, gain=4.0, shift=1.0, speaker=1.0)}
PRESETS = ("demo", "robust-mild", "robust-strong")
LAYOUTS = ("mer2023", "track1")
TRACK1_LABELS = "track1_label_6way.npz"
TRACK1_CANDIDATES = "track_all_candidates.csv"
TRACK1_TRUTH = "track1_test_dis.csv"


def _conditions(rng, n, mix):
    """[n] condition names drawn with the mix's fractions."""
    names, p = zip(*mix)
    p = np.asarray(p, dtype=float)
    return np.asarray(names, dtype=object)[rng.choice(len(names), size=n, p=p / p.sum())]


def _corrupt(rng, x, present, conds, strength, feat_std):
    """Apply each sample's condition to the utterance features x (list of [n, D_m]) and presence [n, 3].

    ``...1`` kinds hit one random present modality; noise is additive Gaussian at ``noise`` x the
    modality's feature std; drift multiplies by a gain and adds an offset; swap takes another
    sample's features of that modality.
    """
    n = len(conds)
    s = STRENGTHS[strength]
    for kind, k in (("missing1", 1), ("missing2", 2), ("missing1+noise", 1)):
        rows = np.flatnonzero(conds == kind)
        drop = np.argsort(rng.random((len(rows), 3)), axis=1)[:, :k]                 # k distinct modalities
        present[rows[:, None], drop] = False
    target = np.argmax(rng.random((n, 3)) * present, axis=1)                          # one present modality
    for m in range(3):
        d = x[m].shape[1]
        one = target == m
        hit = lambda kind: np.flatnonzero((conds == kind) & one)                      # noqa: E731
        noisy = np.flatnonzero(np.isin(conds, ("noise_all", "missing1+noise")) | ((conds == "noise1") & one))
        x[m][noisy] += rng.normal(scale=s["noise"] * feat_std[m], size=(len(noisy), d))
        rows = hit("dropdims1")
        x[m][rows] *= rng.random((len(rows), d)) >= s["dropdims"]
        rows = hit("drift1")
        gain = np.exp(rng.uniform(-1, 1, size=(len(rows), 1)) * np.log(s["gain"]))
        x[m][rows] = gain * x[m][rows] + s["shift"] * feat_std[m] * rng.normal(size=(1, d))
        rows = hit("swap1")
        x[m][rows] = x[m][rng.permutation(rows)] if len(rows) > 1 else x[m][rows]
    return present


def _speaker_shift(rng, x, strength, feat_std, speakers=8):
    """Per-speaker offset and gain on every modality (domain shift, like test3's unseen speakers)."""
    s = STRENGTHS[strength]["speaker"]
    who = rng.integers(0, speakers, size=len(x[0]))
    for m in range(3):
        d = x[m].shape[1]
        offset = s * feat_std[m] * rng.normal(size=(speakers, d))
        gain = np.exp(s * 0.3 * rng.normal(size=(speakers, 1)))
        x[m][:] = gain[who] * x[m] + offset[who]


def _sample(rng, views, n, *, missing_one=0.0, missing_two=0.0, noise_frac=0.0, noise_std=0.0, frames=(3, 10),
            mix=None, strength=None, shift=False, feat_std=None):
    emos = rng.integers(0, len(MER2023_EMOTIONS), size=n)
    vals = np.clip(CLASS_VALENCE[emos] + rng.normal(scale=0.8, size=n), -5, 5)
    present = np.ones((n, 3), dtype=bool)
    u = rng.random(n)
    one = u < missing_one
    two = (u >= missing_one) & (u < missing_one + missing_two)
    present[one, rng.integers(0, 3, size=one.sum())] = False
    keep = rng.integers(0, 3, size=two.sum())
    present[two] = False
    present[np.flatnonzero(two), keep] = True
    noisy = rng.random(n) < noise_frac
    utt, fra = [], []
    lengths = rng.integers(frames[0], frames[1] + 1, size=n)
    xs = []
    for m, (protos, proj) in enumerate(views):
        latent = np.concatenate([protos[emos] + rng.normal(scale=1.3, size=protos[emos].shape),
                                 vals[:, None] / 2.5], axis=1)
        x = SIGNAL[m] * latent @ proj + rng.normal(scale=1.0, size=(n, proj.shape[1]))
        x[noisy] += rng.normal(scale=noise_std, size=(noisy.sum(), proj.shape[1]))
        xs.append(x)
    conds = np.full(n, "clean", dtype=object)
    if mix is not None:
        conds = _conditions(rng, n, mix)
        present = _corrupt(rng, xs, np.ones((n, 3), dtype=bool), conds, strength, feat_std)
    if shift:
        _speaker_shift(rng, xs, strength, feat_std)
        conds[:] = "shift"
    for m, x in enumerate(xs):
        x[~present[:, m]] = 0.0
        seqs = []
        for i in range(n):
            t = lengths[i]
            s = x[i] + rng.normal(scale=0.3, size=(t, x.shape[1]))
            s -= s.mean(axis=0) - x[i]            # frames average exactly to the utterance feature
            seqs.append(s.astype(np.float32) if present[i, m] else np.zeros((t, x.shape[1]), np.float32))
        utt.append(x.astype(np.float32))
        fra.append(seqs)
    return emos, vals, present, utt, fra, conds


def _plans(preset, n_train, n_test, feat_std):
    if preset == "demo":
        return {"train": dict(n=n_train, missing_one=0.05), "test1": dict(n=n_test),
                "test2": dict(n=n_test, missing_one=0.45, missing_two=0.2, noise_frac=0.4, noise_std=1.0),
                "test3": dict(n=n_test, missing_one=0.05)}
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    strength = preset.split("-")[1]
    return {"train": dict(n=n_train, missing_one=0.05), "test1": dict(n=n_test),
            "test2": dict(n=n_test, mix=ROBUST_MIX, strength=strength, feat_std=feat_std),
            "test3": dict(n=n_test, shift=True, strength=strength, feat_std=feat_std)}


def generate(out_dir: str, *, n_train=800, n_test=300, dims=(64, 128, 48), seed=0, frames=True,
             preset: str = "demo", layout: str = "mer2023") -> dict:
    """Write the dataset; returns a small description (also saved as ``synthetic.json``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    rng = np.random.default_rng(seed)
    views = _views(rng, dims)
    # the clean feature std of each modality: corruption strengths are multiples of it
    feat_std = [float(u.std()) for u in _sample(np.random.default_rng(seed + 1), views, 500, frames=(1, 1))[3]]
    plans = _plans(preset, n_train, n_test, feat_std)
    if layout == "track1":                  # one unlabelled test set, emotion only
        plans = {"train": plans["train"], "test1": plans["test1"]}
    os.makedirs(out_dir, exist_ok=True)
    levels = ("UTT", "FRA") if frames else ("UTT",)
    for m in range(3):
        for level in levels:
            os.makedirs(os.path.join(out_dir, "features", feature_name(m, level)), exist_ok=True)
    corpora, stats, conditions = {}, {}, {}
    for split, plan in plans.items():
        emos, vals, present, utt, fra, conds = _sample(rng, views, **plan)
        names = [f"{split}_{i:05d}" for i in range(len(emos))]
        corpus = {}
        for i, name in enumerate(names):
            corpus[name] = {"emo": MER2023_EMOTIONS[emos[i]]}
            if split != "test3" and layout == "mer2023":
                corpus[name]["val"] = float(vals[i])
        corpora[f"{split}_corpus"] = corpus
        for m in range(3):
            for i, name in enumerate(names):
                np.save(os.path.join(out_dir, "features", feature_name(m, "UTT"), name + ".npy"), utt[m][i])
                if frames:
                    np.save(os.path.join(out_dir, "features", feature_name(m, "FRA"), name + ".npy"), fra[m][i])
        if split != "train":
            conditions[split] = dict(zip(names, (str(c) for c in conds)))
        stats[split] = {"samples": len(names), "missing_modalities": int((~present).sum()),
                        "samples_with_missing": int((~present).any(1).sum()), "valence": split != "test3"}
    if layout == "track1":
        truth = corpora["test1_corpus"]
        write_csv(os.path.join(out_dir, TRACK1_CANDIDATES), ["name"], [[n] for n in truth])
        write_csv(os.path.join(out_dir, TRACK1_TRUTH), ["name", "discrete"], [[n, v["emo"]] for n, v in truth.items()])
        corpora["test1_corpus"] = {n: {"emo": "neutral"} for n in truth}      # the secret labels' placeholders
        np.savez(os.path.join(out_dir, TRACK1_LABELS), **corpora)
    else:
        np.savez(os.path.join(out_dir, "label-6way.npz"), **corpora)
    if preset != "demo":
        with open(os.path.join(out_dir, CONDITIONS_FILE), "w") as f:
            json.dump(conditions, f)
    info = {"dims": {"audio": dims[0], "text": dims[1], "video": dims[2]}, "seed": seed, "preset": preset,
            "layout": layout,
            "features": {k: feature_name(m) for m, k in enumerate(("audio", "text", "video"))},
            "splits": stats}
    with open(os.path.join(out_dir, "synthetic.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m merbench_plugins synth", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", help="folder to write (label-6way.npz + features/)")
    p.add_argument("--train", type=int, default=800, help="training samples (default 800)")
    p.add_argument("--test", type=int, default=300, help="samples per test set (default 300)")
    p.add_argument("--dims", default="64,128,48", help="audio,text,video dims; MER2023 real: 1024,5120,768")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_frames", action="store_true", help="skip the frame-level (-FRA) features")
    p.add_argument("--preset", default="demo", choices=PRESETS,
                   help="demo: the small demo set; robust-mild / robust-strong: the corruption benchmark "
                        "(conditions.json records each test sample's condition)")
    p.add_argument("--layout", default="mer2023", choices=LAYOUTS,
                   help="mer2023: label-6way.npz with train/test1-3 and valence; track1: MER2025/2026 Track 1's "
                        f"{TRACK1_LABELS} (train + test1, emotion only, test labels 'neutral'), "
                        f"{TRACK1_CANDIDATES} and {TRACK1_TRUTH}")
    a = p.parse_args(argv)
    try:
        dims = tuple(int(d) for d in a.dims.split(","))
        assert len(dims) == 3 and min(dims) > 0
    except (ValueError, AssertionError):
        p.error(f"--dims must be three positive integers like 64,128,48, got {a.dims!r}")
    info = generate(a.out_dir, n_train=a.train, n_test=a.test, dims=dims, seed=a.seed, frames=not a.no_frames,
                    preset=a.preset, layout=a.layout)
    print(f"wrote {a.out_dir}: " + ", ".join(f"{k} {v['samples']}" for k, v in info["splits"].items())
          + f"; features {', '.join(info['features'].values())} (+ -FRA frames)" * (not a.no_frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
