"""RAVDESS cache reading: per-file NPZ reader vs the in-memory dataset (read once), and, with --train,
one training epoch of the full-size ravdess_av on each.

    PYTHONPATH=. python benchmarks/ravdess_loading.py --clips 240 [--workers 0 2] [--train --device cuda --amp]

Writes a synthetic full-size cache (8 x 112 x 112 x 3 uint8 frames, 64 x 188 log-mel per clip) to a
temp folder; prints seconds per pass over all clips (batch 16).
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, SubsetRandomSampler

from merbench_plugins.data.ravdess import (RavdessClips, RavdessMemory, check_cache_file, load_cache, parse_name,
                                           write_cache_file)


def make_cache(folder: str, clips: int):
    rng = np.random.RandomState(0)
    stems = []
    for i in range(clips):
        stem = f"01-01-{1 + i % 8:02d}-01-{1 + (i // 8) % 2:02d}-{1 + (i // 16) % 2:02d}-{1 + (i // 32) % 24:02d}"
        if stem in stems:
            continue
        frames = rng.randint(0, 255, (8, 112, 112, 3)).astype(np.uint8)
        logmel = rng.randn(64, 188).astype(np.float32)
        write_cache_file(os.path.join(folder, stem + ".npz"), frames, logmel, parse_name(stem), {"size": 112})
        stems.append(stem)
    return stems


def one_pass(loader, step=None):
    start = time.time()
    for batch, emos, _, _ in loader:
        if step is not None:
            step(batch, emos)
    return time.time() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=240)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--train", action="store_true", help="also time one training epoch of ravdess_av (width 64)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        t = time.time()
        stems = make_cache(folder, args.clips)
        print(f"{len(stems)} clips written in {time.time() - t:.1f} s")
        t = time.time()
        bad = [s for s in stems if check_cache_file(os.path.join(folder, s + ".npz"), {"size": 112})]
        print(f"verify every file (what a ravdess-prep rerun does): {time.time() - t:.2f} s, {len(bad)} bad")
        labels = [i % 4 for i in range(len(stems))]
        ns = argparse.Namespace(ravdess_cache=folder, num_frames=8)
        t = time.time()
        arrays = load_cache(folder, stems, 8)
        print(f"load_cache (read once into memory): {time.time() - t:.2f} s, "
              f"{(arrays.frames.numel() + 2 * arrays.logmels.numel()) / 2 ** 20:.0f} MiB")
        datasets = {"per-file": RavdessClips(ns, stems, labels), "in-memory": RavdessMemory(ns, stems, labels, arrays)}
        step = None
        if args.train:
            from merbench_plugins import create_model
            device = torch.device(args.device)
            model = create_model("ravdess_av", dict(output_dim1=4, output_dim2=0)).to(device)
            opt = torch.optim.AdamW(model.parameters(), 1e-4)

            def step(batch, emos):
                with torch.autocast(device.type, enabled=args.amp):
                    _, out, _, _ = model({k: v.to(device, non_blocking=True) for k, v in batch.items()})
                    loss = torch.nn.functional.cross_entropy(out.float(), emos.to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
            one_pass(DataLoader(datasets["in-memory"], 16, collate_fn=datasets["in-memory"].collater), step)  # warm-up
        for workers in args.workers:
            for name, ds in datasets.items():
                torch.manual_seed(0)
                loader = DataLoader(ds, 16, sampler=SubsetRandomSampler(range(len(ds))), num_workers=workers,
                                    collate_fn=ds.collater)
                print(f"{name:10s} workers={workers}: data only {one_pass(loader):.2f} s per pass" +
                      (f", training epoch {one_pass(loader, step):.2f} s" if step else ""))
                if args.train and args.device.startswith("cuda"):
                    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
