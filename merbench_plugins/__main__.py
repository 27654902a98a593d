"""`python -m merbench_plugins COMMAND ...`: one entry point, each command in its own module."""
import importlib
import sys

from .cli import run_cli

# command -> (module, function, one-line help); modules are imported only when their command runs
COMMANDS = {
    "demo": ("merbench_plugins.commands.demo", "main", "generate synthetic MER2023-shaped data, train, compare"),
    "train": ("merbench_plugins.train.runner", "main", "train/evaluate on a MERBench-layout feature folder"),
    "synth": ("merbench_plugins.data.synthetic", "main", "write a synthetic MER2023-shaped feature set"),
    "robust-eval": ("merbench_plugins.evaluate.robust_eval", "main", "score saved checkpoints under missing/noisy modalities"),
    "predict": ("merbench_plugins.commands.predict", "main", "fold checkpoints -> probabilities/valence by name (+ pseudo-labels)"),
    "ensemble": ("merbench_plugins.commands.ensemble", "main", "average result/prediction files by name (weights, top-n)"),
    "submit": ("merbench_plugins.commands.submit", "main", "predictions -> MER2023 / MER2025 / MER2026 submission file"),
    "summarize": ("merbench_plugins.evaluate.summarize", "main", "mean ± std over seeds of many runs -> summary.csv/.md"),
    "yaml": ("merbench_plugins.commands.tune_yaml", "main", "print or check model-tune.yaml from the registry"),
    "models": ("merbench_plugins.commands.listing", "main", "list registered models, their flags and grids"),
    "install": ("merbench_plugins.installer.cli", "main", "register the models in a MERBench checkout"),
    "ravdess-prep": ("merbench_plugins.data.ravdess_prep", "main", "RAVDESS clips -> cached frames + log-mel NPZ"),
    "ravdess-train": ("merbench_plugins.train.ravdess_runner", "main", "train/evaluate ravdess_av over actor folds"),
    "bench-robust": ("merbench_plugins.evaluate.bench_robust", "main", "corruption benchmark: seeds x models x settings"),
    "seeds": ("merbench_plugins.launch.experiments", "seeds_main", "one model x seeds (train_v2.sh, train_v4.sh): local queue or SLURM"),
    "ablate": ("merbench_plugins.launch.experiments", "ablate_main", "the ablation grid x seeds (run_ablation.sh): local queue or SLURM"),
    "search": ("merbench_plugins.search.runner", "main", "hyperparameter search (Optuna): grid -> best setting over seeds"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: python -m merbench_plugins COMMAND [--help]\n\ncommands:\n{rows}\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv.pop(0)
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
