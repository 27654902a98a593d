"""Command-line flags and hyperparameter resolution shared by the runners.

Precedence for every model flag: explicit command line > YAML (``--hyper_path`` fixed values, or a
random pick from a model-tune.yaml grid) > the registry's declared default. Our models draw from a
grid only when asked (``--tune`` or an explicit ``--tune_yaml``); MERBench's own models keep
``main-release.py``'s random pick from ``toolkit/model-tune.yaml``.
"""
import argparse
import copy
import random
from typing import List, Optional

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
                   help="torch.compile the fold-parallel training step; off (eager, with a note) unless "
                        "MERBENCH_PLUGINS_INDUCTOR=1, since inductor trained V2/V4 wrongly under vmap in our checks "
                        "(see the README's Speed section)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--savemodel", action="store_true", help="save the best checkpoint of every fold")
    return add_robust_flags(parser)


# what each --protocol fixes; ours also takes --scheduler / --early_stop (defaults below)
PROTOCOLS = {
    "ours": dict(optimizer="adamw", average="probs"),
    "merbench": dict(optimizer="adam", average="logits", scheduler="none", early_stop=0),
}


def apply_protocol(args: argparse.Namespace) -> argparse.Namespace:
    """Fill ``args.optimizer/scheduler/early_stop/average`` from ``--protocol`` (in place; idempotent).

    ``merbench`` is main-release.py's loop: an explicit --scheduler or --early_stop that contradicts
    it is an error rather than silently dropped."""
    protocol = getattr(args, "protocol", None) or "ours"
    if protocol not in PROTOCOLS:
        raise SystemExit(f"error: unknown --protocol {protocol!r}: use {' or '.join(sorted(PROTOCOLS))}")
    fixed = PROTOCOLS[protocol]
    for flag in ("scheduler", "early_stop"):
        given = getattr(args, flag, None)
        if flag in fixed and given is not None and given != fixed[flag]:
            raise SystemExit(f"error: --protocol {protocol} runs main-release.py's constant learning rate over "
                             f"every epoch; drop --{flag} {given}, or use --protocol ours")
    args.protocol = protocol
    args.optimizer, args.average = fixed["optimizer"], fixed["average"]
    args.scheduler = fixed.get("scheduler", getattr(args, "scheduler", None) or "cosine")
    early = getattr(args, "early_stop", None)
    args.early_stop = fixed.get("early_stop", getattr(args, "ours_early_stop", 12) if early is None else early)
    return args


def seed_list(args: argparse.Namespace) -> List[int]:
    """``--seeds`` ("0,1,2" or "0 1 2") as ints, else ``[--seed]``."""
    text = getattr(args, "seeds", None)
    if text is None:
        return [args.seed]
    words = text.replace(",", " ").split()
    bad = [w for w in words if not w.lstrip("-").isdigit()]
    if bad or not words:
        raise SystemExit(f"error: --seeds takes comma-separated integers, e.g. --seeds 0,1,2; got {text!r}")
    seeds = [int(w) for w in words]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds {text} names a seed twice; name each once")
    return seeds


def run_seeds(args: argparse.Namespace, out_flag: str, out: str) -> List[int]:
    """The seeds of a run (:func:`seed_list`), checked against ``--parallel_seeds`` (ValueError without
    ``--seeds``), with a note when several seeds share the output folder ``out`` (given as ``out_flag``)."""
    seeds = seed_list(args)
    if args.parallel_seeds and args.seeds is None:
        raise ValueError("--parallel_seeds needs --seeds, e.g. --seeds 0,1,2 --parallel_seeds")
    if len(seeds) > 1 and "{seed}" not in out:
        print(f"note: the {len(seeds)} seeds write into one folder ({out}); put {{seed}} in {out_flag} for one "
              f"folder per seed", flush=True)
    return seeds


def per_seed(path: str, seed: int) -> str:
    """An output folder for one seed: ``{seed}`` in it becomes the seed."""
    return path.replace("{seed}", str(seed)) if path else path


PROTOCOL_FLAGS = ("protocol", "epochs", "batch_size", "l2", "scheduler", "early_stop", "emo_weight", "val_weight",
                  "amp", "optimizer", "average", "folds", "select_on")


def protocol(args: argparse.Namespace) -> dict:
    """The training flags a run's result depends on besides its model settings and seed (kept in its
    summary, so `summarize` never averages runs of different protocols as seeds)."""
    return {k: getattr(args, k) for k in PROTOCOL_FLAGS if getattr(args, k, None) is not None}


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


def tune_source(args: argparse.Namespace, model: str, default_yaml: Optional[str], *,
                draw_by_default: bool = False) -> Optional[str]:
    """The grid a run draws from, or None for the declared defaults (``--hyper_path`` wins over both).

    A run draws only with ``--tune`` or an explicit ``--tune_yaml``, or when ``draw_by_default``
    (MERBench's own models under main-robust.py, as in main-release.py).
    """
    if getattr(args, "hyper_path", None):
        return None
    if getattr(args, "tune_yaml", None):
        return args.tune_yaml
    tune = getattr(args, "tune", False)
    if tune and not default_yaml:
        raise SystemExit("error: --tune needs a grid: pass --tune_yaml model-tune.yaml "
                         "(write one with `python -m merbench_plugins yaml --write model-tune.yaml`)")
    return default_yaml if tune or draw_by_default else None


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


def resolve_model_args(args: argparse.Namespace, model: str, *, hyper_path: Optional[str] = None,
                       tune_path: Optional[str] = None, seed: int = 0) -> argparse.Namespace:
    """Copy of ``args`` for ``model`` with every hyperparameter filled (CLI > YAML > default)."""
    out = copy.copy(args)
    out.model = model
    source = hyper_path or tune_path
    if source:
        table = load_yaml(source)
        if model not in table:
            raise SystemExit(f"error: {source} has no entry for model {model!r} (has: {', '.join(table)}); "
                             f"add one (`python -m merbench_plugins yaml` prints ours) or drop --tune/--tune_yaml "
                             f"to train with the declared defaults")
        for key, value in pick(table[model], random.Random(seed)).items():
            if getattr(out, key, None) is None:
                setattr(out, key, value)
    try:
        entry = registry.get_model_entry(model)
    except KeyError:
        return out  # a MERBench model: its YAML entry is all it gets, as in main-release.py
    cfg = entry.config.from_args(out)
    for f in entry.config.fields():
        setattr(out, f.name, getattr(cfg, f.name))
    return out


def model_settings(args: argparse.Namespace, model: str) -> dict:
    try:
        cfg = registry.get_model_entry(model).config
    except KeyError:
        return {}
    return {f.name: getattr(args, f.name, None) for f in cfg.fields()}
