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

``--preset validation`` / ``test``: the robustness benchmark (:mod:`.benchmark`): features from an
underlying signal through fixed nonlinear extractors, corruption families split into train-seen,
validation-held-out and test-held-out groups; each test sample's condition in ``conditions.json``.
"""
import argparse
import json
import os
import sys

import numpy as np

from ..fileio import write_csv
from . import benchmark
from .merbench_layout import (CONDITIONS_FILE, MER2023_EMOTIONS, SYNTH_FEATURES as FEATURES,  # noqa: F401
                              feature_name, generated_corpus)

CLASS_VALENCE = np.array([0.0, -2.5, 2.5, -2.5, -1.5, 1.0])
# each modality cannot tell one pair of classes apart: audio happy/surprise, text angry/worried, video sad/worried
CONFUSED = ((2, 5), (1, 4), (3, 4))
SIGNAL = (1.0, 1.1, 0.8)
PRESETS = ("demo",) + tuple(benchmark.PRESETS)
LAYOUTS = ("mer2023", "track1")
TRACK1_LABELS = "track1_label_6way.npz"
TRACK1_CANDIDATES = "track_all_candidates.csv"
TRACK1_TRUTH = "track1_test_dis.csv"


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


def _sample(rng, views, n, *, missing_one=0.0, missing_two=0.0, noise_frac=0.0, noise_std=0.0, frames=(3, 10)):
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
    return emos, vals, present, utt, fra


def generate(out_dir: str, *, n_train=800, n_test=300, dims=(64, 128, 48), seed=0, frames=True,
             layout: str = "mer2023") -> dict:
    """Write the demo dataset; returns a small description (also saved as ``synthetic.json``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    rng = np.random.default_rng(seed)
    views = _views(rng, dims)
    plans = {"train": dict(n=n_train, missing_one=0.05), "test1": dict(n=n_test),
             "test2": dict(n=n_test, missing_one=0.45, missing_two=0.2, noise_frac=0.4, noise_std=1.0),
             "test3": dict(n=n_test, missing_one=0.05)}
    if layout == "track1":                  # one unlabelled test set, emotion only
        plans = {"train": plans["train"], "test1": plans["test1"]}
    os.makedirs(out_dir, exist_ok=True)
    levels = ("UTT", "FRA") if frames else ("UTT",)
    for m in range(3):
        for level in levels:
            os.makedirs(os.path.join(out_dir, "features", feature_name(m, level)), exist_ok=True)
    corpora, stats = {}, {}
    for split, plan in plans.items():
        emos, vals, present, utt, fra = _sample(rng, views, **plan)
        names, corpora[f"{split}_corpus"], stats[split] = generated_corpus(split, emos, vals, present,
                                                                           valence=layout == "mer2023")
        for m in range(3):
            for i, name in enumerate(names):
                np.save(os.path.join(out_dir, "features", feature_name(m, "UTT"), name + ".npy"), utt[m][i])
                if frames:
                    np.save(os.path.join(out_dir, "features", feature_name(m, "FRA"), name + ".npy"), fra[m][i])
    if layout == "track1":
        truth = corpora["test1_corpus"]
        write_csv(os.path.join(out_dir, TRACK1_CANDIDATES), ["name"], [[n] for n in truth])
        write_csv(os.path.join(out_dir, TRACK1_TRUTH), ["name", "discrete"], [[n, v["emo"]] for n, v in truth.items()])
        corpora["test1_corpus"] = {n: {"emo": "neutral"} for n in truth}      # the secret labels' placeholders
        np.savez(os.path.join(out_dir, TRACK1_LABELS), **corpora)
    else:
        np.savez(os.path.join(out_dir, "label-6way.npz"), **corpora)
    info = {"dims": {"audio": dims[0], "text": dims[1], "video": dims[2]}, "seed": seed, "preset": "demo",
            "layout": layout, "features": {k: feature_name(m) for m, k in enumerate(("audio", "text", "video"))},
            "splits": stats}
    with open(os.path.join(out_dir, "synthetic.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m merbench_plugins synth", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", help="folder to write (label-6way.npz + features/)")
    p.add_argument("--preset", default="demo", choices=PRESETS,
                   help="demo: the small demo set; validation / test: the robustness benchmark (MER2023 sizes "
                        "unless --dims; conditions.json records each test sample's condition; validation for "
                        "choosing, test for reporting; validation-weak / test-weak: the same pair in worlds whose single "
                        "modalities are weak)")
    p.add_argument("--train", type=int, default=None, help="training samples (default: demo 800, benchmark 1200)")
    p.add_argument("--test", type=int, default=None, help="samples of test1 and test3 (default: demo 300, "
                                                           "benchmark 400)")
    p.add_argument("--test2", type=int, default=1200, help="benchmark: samples of the corrupted test2 (default 1200)")
    p.add_argument("--dims", default=None, help="audio,text,video dims (default: demo 64,128,48; benchmark "
                                                "MER2023's 1024,5120,768)")
    p.add_argument("--seed", type=int, default=0, help="demo: generator seed (the benchmark presets fix their own)")
    p.add_argument("--no_frames", action="store_true", help="demo: skip the frame-level (-FRA) features "
                                                             "(the benchmark writes utterance features only)")
    p.add_argument("--layout", default="mer2023", choices=LAYOUTS,
                   help="demo: mer2023: label-6way.npz with train/test1-3 and valence; track1: MER2025/2026 Track 1's "
                        f"{TRACK1_LABELS} (train + test1, emotion only, test labels 'neutral'), "
                        f"{TRACK1_CANDIDATES} and {TRACK1_TRUTH}")
    a = p.parse_args(argv)
    if a.layout != "mer2023" and a.preset != "demo":
        p.error("--layout track1 is for the demo preset; the benchmark presets write MER2023's layout")
    demo = a.preset == "demo"
    dims_text = a.dims or ("64,128,48" if demo else ",".join(map(str, benchmark.MER2023_DIMS)))
    try:
        dims = tuple(int(d) for d in dims_text.split(","))
        assert len(dims) == 3 and min(dims) > 0
    except (ValueError, AssertionError):
        p.error(f"--dims must be three positive integers like 64,128,48, got {dims_text!r}")
    for flag in ("train", "test", "test2"):
        if getattr(a, flag) is not None and getattr(a, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(a, flag)}")
    if demo:
        info = generate(a.out_dir, n_train=a.train or 800, n_test=a.test or 300, dims=dims, seed=a.seed,
                        frames=not a.no_frames, layout=a.layout)
    else:
        info = benchmark.generate(a.out_dir, a.preset, n_train=a.train or 1200, n_test=a.test or 400,
                                  n_test2=a.test2, dims=dims)
    print(f"wrote {a.out_dir}: " + ", ".join(f"{k} {v['samples']}" for k, v in info["splits"].items())
          + f"; features {', '.join(info['features'].values())}" + " (+ -FRA frames)" * (demo and not a.no_frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
