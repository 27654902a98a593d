"""Whole-run time of S seeds: S separate fold-parallel runs vs one stacked run (``--seeds ... --parallel_seeds``).

One process, one data load; the two configurations alternate (``--repeats`` rounds, the fastest counts);
wall time and process CPU time (which other jobs on a shared machine barely skew) are both reported.
Each is the standalone runner's complete work for S seeds (training, evaluation every epoch, test
predictions, fold averaging, result files); early stopping is off so both do the same epochs.

    python benchmarks/parallel_seeds.py [DATA_DIR] [--seeds 3] [--models attention_robust_v2,attention]
        [--epochs 10] [--folds 5] [--threads 1] [--repeats 2] [--out parallel_seeds.md]
"""
import argparse
import os
import sys
import tempfile
import time

import torch

from merbench_plugins import fileio
from merbench_plugins.evaluate import report
from merbench_plugins.train import runner
from whole_run import QUICK, setup   # benchmarks/ is on the path when a script here runs


def timed_runs(base, model, seeds, stacked, ds, train, tests, device):
    """(wall seconds, process CPU seconds) for all seeds, and each seed's test-1 summary."""
    runs = runner.resolve(runner.build_parser(), base + ["--model", model, "--seeds", ",".join(map(str, seeds))])
    t, c = time.perf_counter(), time.process_time()
    folds = runner.train_seeds(runs, ds, train, tests, device) if stacked else [None] * len(runs)
    out = []
    for r, f in zip(runs, folds):
        with fileio.StagedOutputs(r.out) as stage:
            out.append(runner.train_model(r, ds, train, tests, device, report.timestamp(), stage, folds=f))
    return (time.perf_counter() - t, time.process_time() - c), [o["tests"][tests[0].name] for o in out]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data_dir", nargs="?", help="MERBench-layout folder (default: generate the demo's synthetic set)")
    p.add_argument("--models", default="attention_robust_v2")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds (the fastest round counts)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny generated data (checks that the script works)")
    p.add_argument("--out", help="also write the table (markdown) here")
    a = p.parse_args(argv)
    device, data_dir = setup(a.threads, a.device, a.data_dir, "parallel_seeds_", QUICK if a.quick else {})
    base = [data_dir, "--folds", str(a.folds), "--batch_size", str(a.batch_size), "--device", str(device),
            "--early_stop", "0", "--quiet", "--threads", str(a.threads), "--epochs", str(a.epochs),
            "--out", os.path.join(tempfile.mkdtemp(prefix="parallel_seeds_out_"), "seed{seed}")]
    ds, train, tests = runner.load_data(runner.resolve(runner.build_parser(), base)[0])
    seeds = list(range(a.seeds))
    configs = (("separate", False), ("stacked", True))
    seconds, scores = {}, {}
    for _ in range(a.repeats):
        for model in [m.strip() for m in a.models.split(",") if m.strip()]:
            for name, stacked in configs:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed, score = timed_runs(base, model, seeds, stacked, ds, train, tests, device)
                best = seconds.get((model, name), (float("inf"), float("inf")))
                seconds[model, name] = (min(best[0], elapsed[0]), min(best[1], elapsed[1]))
                scores[model, name] = score
                print(f"  {model} {name}: {elapsed[0]:.1f}s wall, {elapsed[1]:.1f}s CPU", flush=True)
    metric = "emoval" if train.has_valence else "f1"
    head = ["model", f"{a.seeds} separate runs, wall (s)", f"{a.seeds} seeds stacked, wall (s)", "wall speed-up",
            "separate, CPU (s)", "stacked, CPU (s)", "CPU speed-up",
            f"{tests[0].name} {metric} per seed, separate", f"{tests[0].name} {metric} per seed, stacked"]
    rows = []
    for model in dict.fromkeys(m for m, _ in seconds):
        sep, stk = seconds[model, "separate"], seconds[model, "stacked"]
        rows.append([model, round(sep[0], 1), round(stk[0], 1), f"{sep[0] / stk[0]:.2f}x",
                     round(sep[1], 1), round(stk[1], 1), f"{sep[1] / stk[1]:.2f}x",
                     " ".join(f"{s.get(metric, float('nan')):.3f}" for s in scores[model, "separate"]),
                     " ".join(f"{s.get(metric, float('nan')):.3f}" for s in scores[model, "stacked"])])
    note = (f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{a.threads} thread(s)'}), "
            f"torch {torch.__version__}, {a.seeds} seeds x {a.folds} folds x {a.epochs} epochs, batch {a.batch_size}, "
            f"train {len(train)} samples, dims {ds.dims(train)}, best of {a.repeats} interleaved round(s); "
            f"CPU = process CPU time (robust to other jobs on the machine)")
    table = note + "\n\n" + report.markdown_table(head, rows)
    print(table)
    if a.out:
        report.atomic_write_text(a.out, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
