"""Fold checkpoints written by ``--savemodel`` (the standalone runner's and main-robust.py's), read back.

A checkpoint holds ``model`` (name), ``args`` (everything that rebuilds it: feature names, feat_type,
dims, output dims, settings), ``fold``, ``state_dict`` and, from this version on, ``classes`` (class
names in output order) and ``eval_metric`` / ``metric_name`` (its fold's validation score).
main-robust.py saves MERBench's ``get_models`` wrapper, so its keys start with ``model.``; our models
load either form.
"""
import argparse
import glob
import inspect
import os
import sys
from typing import List, Optional, Sequence

import torch

from .. import registry

WRAPPER_PREFIX = "model."   # MERBench's get_models keeps the model in .model
# what must agree between checkpoints that are averaged, and between a checkpoint and the data it scores
INPUT_KEYS = ("feat_type", "audio_feature", "text_feature", "video_feature", "audio_dim", "text_dim", "video_dim")
OUTPUT_KEYS = ("output_dim1", "output_dim2")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; one line that says which and why."""


def expand(patterns: Sequence[str]) -> List[str]:
    """Checkpoint files from files, folders (every ``*.pt`` inside, recursively) and globs, sorted, each once."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            paths += glob.glob(os.path.join(pattern, "**", "*.pt"), recursive=True)
        else:
            paths += glob.glob(pattern)
    paths = sorted(set(os.path.abspath(p) for p in paths))
    if not paths:
        raise CheckpointError(f"no checkpoint matches {', '.join(patterns)} (train with --savemodel first)")
    return paths


def load(path: str) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", **({"weights_only": False} if _has_weights_only() else {}))
    except Exception as exc:  # noqa: BLE001  (any unreadable file: one line)
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or not {"model", "args", "state_dict"} <= set(ckpt):
        raise CheckpointError(f"{path} is not a merbench-plugins checkpoint (model, args, state_dict); "
                              f"write them with --savemodel")
    if ckpt["state_dict"] is None:
        raise CheckpointError(f"{path} holds no weights")
    return ckpt


def build(ckpt: dict, device, merbench_root: Optional[str] = None, path: str = "") -> torch.nn.Module:
    """The checkpoint's model with its weights, in eval mode on ``device``."""
    name, ns = ckpt["model"], argparse.Namespace(**ckpt["args"])
    state = ckpt["state_dict"]
    try:
        model = registry.create_model(name, ns)
    except KeyError:
        if merbench_root is None:
            raise CheckpointError(f"{path or name}: {name!r} is not a merbench-plugins model; pass --merbench ROOT to "
                                  f"build it with MERBench's get_models") from None
        if os.path.abspath(merbench_root) not in sys.path:
            sys.path.insert(0, os.path.abspath(merbench_root))
        from toolkit.models import get_models
        model = get_models(ns)
    else:
        if state and all(k.startswith(WRAPPER_PREFIX) for k in state):      # main-robust.py's get_models wrapper
            state = {k[len(WRAPPER_PREFIX):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path or name}: weights do not fit model {name!r} as its args describe ({first})") from None
    return model.to(device).eval()


def mismatch(a: dict, b: dict, keys=INPUT_KEYS + OUTPUT_KEYS) -> List[str]:
    """``key a != b`` for every key two checkpoints' args disagree on."""
    return [f"{k} {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def load_folds(patterns: Sequence[str], device, merbench_root: Optional[str] = None, *, one_model: bool = False):
    """(paths, [checkpoint dicts], [models]) of checkpoints that can be averaged: same inputs and outputs
    (``one_model``: also the same model name); refused with one line naming the two that differ."""
    paths = expand(patterns)
    ckpts = [load(p) for p in paths]
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        diff = mismatch(ckpts[0]["args"], ckpt["args"])
        if one_model and ckpt["model"] != ckpts[0]["model"]:
            diff.insert(0, f"model {ckpt['model']!r} != {ckpts[0]['model']!r}")
        if diff:
            raise CheckpointError(f"{os.path.basename(path)} does not match {os.path.basename(paths[0])}: "
                                  f"{'; '.join(diff)}; average checkpoints of one feature set only")
    return paths, ckpts, [build(c, device, merbench_root, p) for p, c in zip(paths, ckpts)]


def _has_weights_only() -> bool:
    return "weights_only" in inspect.signature(torch.load).parameters
