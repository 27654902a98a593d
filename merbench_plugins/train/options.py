"""Command-line flags and hyperparameter resolution shared by the runners.

Precedence for every model flag: explicit command line > YAML (``--hyper_path`` fixed values, or a
random pick from a model-tune.yaml grid) > the registry's declared default.
"""
import argparse
import copy
import random
from typing import Optional

import yaml

from .. import registry


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
    g.add_argument("--l2", type=float, default=1e-5, help="AdamW weight decay")
    g.add_argument("--scheduler", default="cosine", choices=["cosine", "step", "none"], help="LR schedule")
    g.add_argument("--early_stop", type=int, default=20 if merbench else 12,
                   help="stop a fold after this many epochs without eval improvement (0 = off)")
    g.add_argument("--emo_weight", type=float, default=1.0, help="weight of the emotion classification loss")
    g.add_argument("--val_weight", type=float, default=1.0, help="weight of the valence regression loss")
    g.add_argument("--seed", type=int, default=42, help="random seed (data split, init, dropout)")
    g.add_argument("--amp", action="store_true", help="mixed precision (CUDA only; ignored on CPU)")
    g.add_argument("--threads", type=int, default=0 if merbench else 1,
                   help="CPU threads for torch (small feature models train fastest single-threaded; 0 = torch's default)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--savemodel", action="store_true", help="save the best checkpoint of every fold")
    return add_robust_flags(parser)


def add_robust_flags(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("robust evaluation")
    g.add_argument("--robust_eval", action="store_true",
                   help="after training, score the test sets under every modality subset, missing rate and noise level")
    g.add_argument("--robust_kinds", default="subset,missing,noise", help="which condition kinds to run")
    return parser


def load_yaml(path: str) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise SystemExit(f"error: YAML file not found: {path}")
    except yaml.YAMLError as exc:
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
            raise SystemExit(f"error: {source} has no entry for model {model!r} (has: {', '.join(table)})")
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
