"""Whole-run time of the standalone runner, sequential folds vs fold-parallel (and --compile), as ratios,
and against the run's arithmetic floor.

One process, one data load; the configurations run interleaved (round-robin over ``--repeats``) and each
is one complete ``train_model``: every fold trained with its evaluation each epoch, best checkpoints, test
predictions, fold averaging. Early stopping is off so that every configuration does the same epochs.

The floor: the run's floating-point operations, counted with ``torch.utils.flop_counter`` on the
fold-parallel run itself (1 and 2 epochs counted, the rest extrapolated: every epoch does the same work
without early stopping), divided by the machine's measured matmul rate (the best of several large fp32
matrix products on the run's threads and device). "x floor" is a configuration's time over that floor.
Times are process CPU time on a one-thread CPU run (runs and the matmul rate alike: a shared machine skews
them less), wall time otherwise.

    python benchmarks/whole_run.py [DATA_DIR] [--models attention_robust_v2,attention_robust_v2:recon_mode=sketch] [--device cuda]
        [--epochs 10] [--folds 5] [--compile] [--mer2023_size] [--seq_epochs 3] [--out whole_run.md]

A model may carry flag values (``name:flag=value,flag=value``: ``--flag value`` for that row's runs) and
fold_step.py's switches that put an earlier formulation back (``name+oldcorrupt+randmask``).
Without DATA_DIR it generates the demo's synthetic set (``--mer2023_size``: MER2023's utterance feature
sizes and sample counts). ``--seq_epochs k`` times the sequential path on k epochs only and scales its
time to ``--epochs`` (marked in the table) to save GPU time; its per-epoch cost is constant without
early stopping. ``--no_flops`` skips the counting (it runs 3 epochs under the counter per model).
"""
import argparse
import os
import sys
import tempfile
import time

import torch

from merbench_plugins.data.synthetic import generate
from merbench_plugins import fileio, runtime
from merbench_plugins.evaluate import report
from merbench_plugins.train import engine, parallel, runner
from fold_step import previous_levers  # noqa: E402 - the sibling script (benchmarks/ is on sys.path when run)

MER2023 = dict(n_train=3373, n_test=412, dims=(1024, 5120, 768))
QUICK = dict(n_train=120, n_test=40, dims=(16, 24, 8))


def setup(threads: int, device: str, data_dir, prefix: str, size: dict, frames: bool = False):
    """Torch threads, the device, and the data folder (``data_dir``, else a generated one of ``size``)."""
    torch.set_num_threads(threads)
    device = runtime.resolve_device(device)
    if data_dir is None:
        data_dir = tempfile.mkdtemp(prefix=prefix)
        t = time.time()
        generate(data_dir, seed=0, frames=frames, **size)
        print(f"generated {data_dir} ({size or 'demo size'}) in {time.time() - t:.0f}s", flush=True)
    return device, data_dir


def warm_up(device):
    """Pay one-time imports / CUDA context before any timing (torch.optim imports torch._dynamo lazily)."""
    p = torch.nn.Parameter(torch.zeros(2, device=device))
    torch.optim.AdamW([p]).step()
    api = parallel.functional_api()
    if api is not None:
        api[0](lambda x: x * 2)(torch.zeros(2, 2, device=device))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device):
    """The timer: process CPU time on a CPU run on one thread (other processes on a shared machine then skew
    the ratios less; every number of a run and the floor's matmul rate use it alike), else wall time."""
    return time.process_time if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter


def matmul_rate(device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matrix-product rate in FLOP/s: the best of ``repeats`` timed n x n products (on
    the current torch thread count), i.e. what the arithmetic of a run could at best go at."""
    if device.type == "cuda":
        n = max(n, 8192)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    (a @ b).sum().item()                                                               # warm-up
    best, now = float("inf"), clock(device)
    for _ in range(repeats):
        sync(device)
        t = now()
        a @ b
        sync(device)
        best = min(best, now() - t)
    return 2 * n ** 3 / best


def run_flops(model: str, epochs: int, train_run) -> float:
    """FLOPs of a whole run of ``epochs`` epochs: counted on 1- and 2-epoch runs (``train_run(extra flags)``),
    the difference (one epoch's training and validation) extrapolated; probe and test predictions counted once."""
    from torch.utils.flop_counter import FlopCounterMode
    counts = []
    for e in (1, 2):
        with FlopCounterMode(display=False) as counter:
            train_run(["--epochs", str(e), "--model", model])
        counts.append(counter.get_total_flops())
    return counts[0] + (epochs - 1) * (counts[1] - counts[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data_dir", nargs="?", help="MERBench-layout folder (default: generate the demo's synthetic set)")
    p.add_argument("--models", default="attention_robust_v2,attention")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seq_epochs", type=int, default=0, help="time the sequential path on this many epochs, scaled")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--feat_type", default="utt")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds (the fastest round counts)")
    p.add_argument("--compile", action="store_true", help="also time fold-parallel with --compile")
    p.add_argument("--compile_models", help="only these models get the --compile configuration (default: all)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA) in every configuration")
    p.add_argument("--mer2023_size", action="store_true", help="generated data at MER2023's sizes (utt only)")
    p.add_argument("--quick", action="store_true", help="tiny generated data (checks that the script works)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no_flops", action="store_true", help="skip counting the run's FLOPs (the floor columns)")
    p.add_argument("--out", help="also write the table (markdown) here")
    a = p.parse_args(argv)
    size = MER2023 if a.mer2023_size else QUICK if a.quick else {}
    device, data_dir = setup(a.threads, a.device, a.data_dir, "whole_run_", size, frames=a.feat_type != "utt")
    configs = [("sequential", ["--no_fold_parallel"]), ("fold-parallel", [])]
    if a.compile:
        configs.append(("fold-parallel --compile", ["--compile"]))
    base = [data_dir, "--folds", str(a.folds), "--batch_size", str(a.batch_size), "--feat_type", a.feat_type,
            "--device", str(device), "--early_stop", "0", "--quiet", "--threads", str(a.threads),
            "--out", tempfile.mkdtemp(prefix="whole_run_out_")] + (["--amp"] if a.amp else [])
    ds, train, tests = runner.load_data(runner.resolve(runner.build_parser(), base)[0])
    warm_up(device)

    def train_run(argv):
        """One whole run of the standalone runner on the loaded data; its summary. ``--model name:flag=value,...``
        becomes ``--model name --flag value ...``."""
        i = argv.index("--model") + 1
        head, _, rest = argv[i].partition(":")
        name, *switches = head.split("+")
        argv = argv[:i] + [name] + argv[i + 1:] + [x for item in filter(None, rest.split(","))
                                                     for x in ("--" + item.partition("=")[0], item.partition("=")[2])]
        cfg = runner.resolve(runner.build_parser(), argv)[0]
        with previous_levers(set(switches)), fileio.StagedOutputs(cfg.out) as stage:
            return runner.train_model(cfg, ds, train, tests, device, report.timestamp(), stage)

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    flops, rate = {}, None
    if not a.no_flops:
        rate = matmul_rate(device)
        print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s (fp32, {a.threads} thread(s), {device})", flush=True)
        for model in models:
            flops[model] = run_flops(model, a.epochs, lambda extra: train_run(base + extra))
            print(f"  {model}: {flops[model] / 1e12:.3f} TFLOP counted, floor {flops[model] / rate:.1f}s", flush=True)
    seconds, scores = {}, {}
    for _ in range(a.repeats):
        for model in models:
            for name, flags in configs:
                if "--compile" in flags and a.compile_models and model not in a.compile_models.split(","):
                    continue
                epochs = a.seq_epochs if name == "sequential" and a.seq_epochs else a.epochs
                sync(device)
                now = clock(device)
                t = now()
                summary = train_run(base + flags + ["--epochs", str(epochs), "--model", model])
                sync(device)
                elapsed = (now() - t) * a.epochs / epochs
                seconds[model, name] = min(seconds.get((model, name), float("inf")), elapsed)
                scores[model, name] = summary["tests"][tests[0].name]
                print(f"  {model} {name}: {elapsed:.1f}s" + (f" (scaled from {epochs} epochs)" if epochs != a.epochs else ""),
                      flush=True)
    metric = "emoval" if train.has_valence else "f1"
    head = ["model", *[f"{n} (s)" for n, _ in configs], *[f"{n} speed-up" for n, _ in configs[1:]]]
    if rate:
        head += ["TFLOP", "floor (s)", *[f"{n} x floor" for n, _ in configs]]
    head += [f"{tests[0].name} {metric}, {n}" for n, _ in configs]
    rows = []
    for model in models:
        seq = seconds[model, "sequential"]
        got = lambda n: (model, n) in seconds  # noqa: E731
        row = [model, *[round(seconds[model, n], 2) if got(n) else "-" for n, _ in configs],
               *[f"{seq / seconds[model, n]:.2f}x" if got(n) else "-" for n, _ in configs[1:]]]
        if rate:
            floor = flops[model] / rate
            row += [f"{flops[model] / 1e12:.3f}", f"{floor:.2f}",
                    *[f"{seconds[model, n] / floor:.2f}x" if got(n) else "-" for n, _ in configs]]
        rows.append(row + [round(scores[model, n].get(metric, float("nan")), 4) if got(n) else "-" for n, _ in configs])
    note = (f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{a.threads} thread(s)'}), "
            f"torch {torch.__version__}, {a.folds} folds x {a.epochs} epochs, batch {a.batch_size}, {a.feat_type}, "
            f"train {len(train)} samples, dims {ds.dims(train)}, amp {a.amp}, best of {a.repeats} interleaved round(s)"
            + (f"; sequential timed on {a.seq_epochs} epochs and scaled" if a.seq_epochs else "")
            + (f"; matmul rate {rate / 1e9:.1f} GFLOP/s, floor = counted FLOPs / that rate" if rate else ""))
    table = note + "\n\n" + report.markdown_table(head, rows)
    print(table)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        report.atomic_write_text(a.out, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
