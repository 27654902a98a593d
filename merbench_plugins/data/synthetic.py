"""A small synthetic MER2023-shaped feature set in MERBench's on-disk layout.

Six emotions with class-dependent valence; three modalities that each see the emotion through
their own noisy linear view and each confuse a different pair of classes, so fusion matters and
losing a modality hurts a model that never learned to cope. Splits: train (a few missing
modalities), test1 (clean), test2 (missing and noisy modalities, like MER2023's noise test),
test3 (no valence labels). Both utterance ([D]) and frame ([T, D]) features are written.
"""
import argparse
import json
import os
import sys

import numpy as np

from .merbench_layout import MER2023_EMOTIONS

FEATURES = ("chinese-hubert-large", "Baichuan-13B-Base", "clip-vit-large-patch14")  # audio, text, video
CLASS_VALENCE = np.array([0.0, -2.5, 2.5, -2.5, -1.5, 1.0])
# each modality cannot tell one pair of classes apart: audio happy/surprise, text angry/worried, video sad/worried
CONFUSED = ((2, 5), (1, 4), (3, 4))
SIGNAL = (1.0, 1.1, 0.8)


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
    for m, (protos, mix) in enumerate(views):
        latent = np.concatenate([protos[emos] + rng.normal(scale=1.3, size=protos[emos].shape),
                                 vals[:, None] / 2.5], axis=1)
        x = SIGNAL[m] * latent @ mix + rng.normal(scale=1.0, size=(n, mix.shape[1]))
        x[noisy] += rng.normal(scale=noise_std, size=(noisy.sum(), mix.shape[1]))
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


def generate(out_dir: str, *, n_train=800, n_test=300, dims=(64, 128, 48), seed=0, frames=True) -> dict:
    """Write the dataset; returns a small description (also saved as ``synthetic.json``)."""
    rng = np.random.default_rng(seed)
    views = _views(rng, dims)
    plans = {
        "train": dict(n=n_train, missing_one=0.05),
        "test1": dict(n=n_test),
        "test2": dict(n=n_test, missing_one=0.45, missing_two=0.2, noise_frac=0.4, noise_std=1.0),
        "test3": dict(n=n_test, missing_one=0.05),
    }
    os.makedirs(out_dir, exist_ok=True)
    levels = ("UTT", "FRA") if frames else ("UTT",)
    for m in range(3):
        for level in levels:
            os.makedirs(os.path.join(out_dir, "features", feature_name(m, level)), exist_ok=True)
    corpora, stats = {}, {}
    for split, plan in plans.items():
        emos, vals, present, utt, fra = _sample(rng, views, **plan)
        names = [f"{split}_{i:05d}" for i in range(len(emos))]
        corpus = {}
        for i, name in enumerate(names):
            corpus[name] = {"emo": MER2023_EMOTIONS[emos[i]]}
            if split != "test3":
                corpus[name]["val"] = float(vals[i])
        corpora[f"{split}_corpus"] = corpus
        for m in range(3):
            for i, name in enumerate(names):
                np.save(os.path.join(out_dir, "features", feature_name(m, "UTT"), name + ".npy"), utt[m][i])
                if frames:
                    np.save(os.path.join(out_dir, "features", feature_name(m, "FRA"), name + ".npy"), fra[m][i])
        stats[split] = {"samples": len(names), "missing_modalities": int((~present).sum()),
                        "samples_with_missing": int((~present).any(1).sum()), "valence": split != "test3"}
    np.savez(os.path.join(out_dir, "label-6way.npz"), **corpora)
    info = {"dims": {"audio": dims[0], "text": dims[1], "video": dims[2]}, "seed": seed,
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
    a = p.parse_args(argv)
    try:
        dims = tuple(int(d) for d in a.dims.split(","))
        assert len(dims) == 3 and min(dims) > 0
    except (ValueError, AssertionError):
        p.error(f"--dims must be three positive integers like 64,128,48, got {a.dims!r}")
    info = generate(a.out_dir, n_train=a.train, n_test=a.test, dims=dims, seed=a.seed, frames=not a.no_frames)
    print(f"wrote {a.out_dir}: " + ", ".join(f"{k} {v['samples']}" for k, v in info["splits"].items())
          + f"; features {', '.join(info['features'].values())} (+ -FRA frames)" * (not a.no_frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
