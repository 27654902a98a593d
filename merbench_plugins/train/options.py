"""The runners' command-line flags (training, robust evaluation, hyperparameter YAMLs, every model's options),
the protocols they choose between, and the small readers the resolution uses (seed lists, YAML, grid draws).
:mod:`.run_config` resolves them once into a run's configuration.
"""
import argparse
import random

from .. import registry, yamlio


def add_model_flags(parser: argparse.ArgumentParser):
    """Every flag of every registered model, once each, default None (= not given)."""
    for cfg in registry.all_configs():
        cfg.add_arguments(parser)
    return parser


def add_training_flags(parser: argparse.ArgumentParser, *, merbench: bool = False):
    """Training, checkpoint and robust-evaluation flags of both runners (``merbench``: main-robust.py's defaults)."""
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=100 if merbench else 60, help="maximum epochs per fold")
    g.add_argument("--batch_size", type=int, default=32, help="batch size")
    g.add_argument("--protocol", default="ours", choices=sorted(PROTOCOLS),
                   help="ours: AdamW (decoupled --l2), --scheduler, --early_stop, fold-averaged probabilities; "
                        "merbench: main-release.py's Adam with --l2 as coupled L2, constant rate, every epoch "
                        "(best eval epoch kept), fold-averaged logits")
    g.add_argument("--l2", type=float, default=1e-5,
                   help="weight decay (AdamW's decoupled decay; Adam's coupled L2 under --protocol merbench)")
    g.add_argument("--scheduler", default=None, choices=["cosine", "step", "none"],
                   help="LR schedule (default: cosine; none under --protocol merbench)")
    g.add_argument("--use_cosine_annealing", dest="scheduler", action="store_const", const="cosine",
                   help="same as --scheduler cosine (the RAVDESS seed's flag)")
    g.add_argument("--early_stop", "--early_stopping_patience", dest="early_stop", type=int, default=None,
                   help=f"stop a fold after this many epochs without eval improvement, 0 = off "
                        f"(default: {20 if merbench else 12}; 0 under --protocol merbench)")
    g.set_defaults(ours_early_stop=20 if merbench else 12)
    g.add_argument("--emo_weight", type=float, default=1.0, help="weight of the emotion classification loss")
    g.add_argument("--val_weight", type=float, default=1.0, help="weight of the valence regression loss")
    g.add_argument("--seed", type=int, default=42, help="random seed (data split, init, dropout)")
    g.add_argument("--seeds", metavar="S1,S2,...", default=None,
                   help="train several seeds in this one process (default: --seed); each seed writes what a run "
                        "with --seed S writes (summary, result files, checkpoints, table), into its own folder "
                        "where the output folder holds {seed}")
    g.add_argument("--parallel_seeds", action="store_true",
                   help="with --seeds: all seeds' folds at once, one stacked model of seeds x folds splits (each "
                        "seed's folds, initialisation and data order as its own run); where that is not possible "
                        "the seeds run one after another, with a note")
    g = parser.add_argument_group("robustness recipe (any model, MERBench's own included)")
    g.add_argument("--robust_recipe", action="store_true",
                   help="augment every training batch outside the model: one present modality of a sample corrupted "
                        "(train-seen families: Gaussian noise, zeroed dims, gain, another sample's features), then "
                        "subset modality dropout (dropped = zeros). Our models run the same recipe inside (their own "
                        "--corrupt_aug / --modality_dropout) and are left alone")
    g.add_argument("--recipe_corrupt", type=float, default=0.3,
                   help="probability that a training sample with 2+ modalities gets one of them corrupted")
    g.add_argument("--recipe_dropout", type=float, default=0.3,
                   help="probability that a training sample keeps only a random non-empty proper subset of its modalities")
    g.add_argument("--recipe_strength", type=float, default=4.0,
                   help="largest noise (x the sample's feature std) and gain factor of the corruption")
    g = parser.add_argument_group("training")
    g.add_argument("--select_on", default="clean", choices=["clean", "corrupted"],
                   help="pick the best epoch (and stop early) on the validation fold as it is, or on it plus a "
                        "corrupted copy (missing and noisy modalities, fixed per seed)")
    g.add_argument("--amp", action="store_true", help="mixed precision (CUDA only; ignored on CPU)")
    g.add_argument("--threads", type=int, default=0 if merbench else 1,
                   help="CPU threads for torch (small feature models train fastest single-threaded; 0 = torch's default)")
    g.add_argument("--no_fold_parallel", dest="fold_parallel", action="store_false",
                   help="train the folds one after another (default: all folds at once as one stacked model, for "
                        "models that allow it; others fall back to the sequential loop with a note)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the fold-parallel training step (one compilation: the full stack at the run's "
                        "batch size; the first takes minutes on a CPU, see the README's Speed section)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--savemodel", action="store_true", help="save the best checkpoint of every fold")
    g.add_argument("--plots", action="store_true",
                   help="also draw each test set's confusion matrix as a PNG (pip install merbench-plugins[plot])")
    g = parser.add_argument_group("input checks")
    g.add_argument("--nonfinite", default="error", choices=["error", "missing"],
                   help="features with NaN/inf: refuse the run, naming the samples (error), or treat that modality of "
                        "those samples as missing (all zeros; counted in the summary)")
    return add_robust_flags(parser)


# what each --protocol fixes; ours also takes --scheduler / --early_stop (defaults below)
PROTOCOLS = {
    "ours": dict(optimizer="adamw", average="probs"),
    "merbench": dict(optimizer="adam", average="logits", scheduler="none", early_stop=0),
}


def per_seed(path: str, seed: int) -> str:
    """An output folder for one seed: ``{seed}`` in it becomes the seed."""
    return path.replace("{seed}", str(seed)) if path else path


def add_robust_flags(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("robust evaluation")
    g.add_argument("--robust_eval", action="store_true",
                   help="after training, score the test sets under every modality subset, missing rate and noise level")
    g.add_argument("--robust_kinds", default="subset,missing,noise,noise1",
                   help="which condition kinds to run (noise1: noise on one modality at a time)")
    g.add_argument("--robust_seed", type=int, default=0,
                   help="seed of the corrupted test inputs (not --seed: every model and training seed, and "
                        "`robust-eval --seed`, see the same inputs)")
    return parser


def add_tune_flags(parser: argparse.ArgumentParser, *, merbench: bool = False):
    """``--hyper_path``, ``--tune_yaml`` (default None = not asked for) and ``--tune``."""
    g = parser.add_argument_group("hyperparameters")
    g.add_argument("--hyper_path", default=None, help="YAML with fixed settings per model (MERBench --hyper_path)")
    where = "toolkit/model-tune.yaml" if merbench else "this checkout's model-tune.yaml"
    g.add_argument("--tune_yaml", default=None,
                   help=f"draw settings at random from this model-tune.yaml grid (MERBench's tuner); "
                        f"default: our models use their declared defaults, MERBench's models draw from {where}")
    g.add_argument("--tune", action="store_true",
                   help=f"draw our models' settings at random from the grid too (--tune_yaml, else {where})")
    return parser


def ours(model: str) -> bool:
    """One of our installable models (MERBench's own, and our reference `attention`, are not)."""
    return model in registry.list_models(installable=True)


def load_yaml(path: str) -> dict:
    """A hyperparameter YAML (model name -> settings), numbers read as MERBench reads them."""
    try:
        with open(path) as f:
            data = yamlio.safe_load(f) or {}
    except FileNotFoundError:
        raise SystemExit(f"error: YAML file not found: {path}")
    except yamlio.YAMLError as exc:
        raise SystemExit(f"error: {path} is not valid YAML: {exc}")
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path} must map model names to their settings")
    return data


def pick(settings: dict, rng: random.Random) -> dict:
    """MERBench's func_random_select: one value per list (scalars stay)."""
    return {k: (rng.choice(v) if isinstance(v, list) else v) for k, v in (settings or {}).items()}
