"""Where and how tensors run: device choice (CPU fallback), seeding, mixed precision, and the software
and hardware a run ran on (recorded in every summary)."""
import contextlib
import functools
import os
import platform
import random
import subprocess
from typing import List

import numpy as np
import torch


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(spec) -> torch.device:
    """'cpu' | 'cuda' | 'cuda:1' | GPU index (int, -1 = CPU). Falls back to CPU, loudly, without CUDA."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.lstrip("-").isdigit()):
        spec = int(spec)
        spec = "cpu" if spec < 0 else f"cuda:{spec}"
    if str(spec).startswith("cuda") and not torch.cuda.is_available():
        print(f"warning: {spec} requested but CUDA is not available; training on CPU")
        return torch.device("cpu")
    return torch.device(spec)


def amp_dtype(device: torch.device):
    """bf16 where the GPU has it (no loss scaler needed), fp16 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on CUDA (``torch.amp.autocast``; the deprecated torch.cuda.amp one on torch < 1.10 only)."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    if hasattr(torch, "amp") and hasattr(torch.amp, "autocast"):
        return torch.amp.autocast("cuda", dtype=amp_dtype(device))
    return torch.cuda.amp.autocast(dtype=amp_dtype(device))


def grad_scaler(device: torch.device, enabled: bool):
    """A loss scaler for fp16 autocast only (bf16 has fp32's range)."""
    enabled = enabled and device.type == "cuda" and amp_dtype(device) == torch.float16
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def fold_seeds(seed: int, folds: int) -> List[int]:
    """Fold k's seed (initialisation, data order, dropout noise) in a run with ``seed``: one independent stream
    per fold, ``numpy.random.SeedSequence(seed).spawn(folds)``, so no fold of one seed shares a stream with a
    fold of another (with ``seed + k``, seed 0's fold 2 was seed 1's fold 1). Fold k's seed does not depend
    on how many folds there are."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(folds)]


@functools.lru_cache(maxsize=1)
def _git_hash():
    """(commit, dirty) of the checkout this package runs from; (None, None) for an installed wheel."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None, None
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20)
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if head.returncode != 0:
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def environment() -> dict:
    """What a result depends on besides its settings (torch, CUDA, cuDNN, GPU, this package and its git
    commit): MMSA's and Self-MM's trackers name version drift as why results differ between machines."""
    from . import __version__
    commit, dirty = _git_hash()
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None
    return {"merbench_plugins": __version__, "git_commit": commit, "git_dirty": dirty,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "gpu": torch.cuda.get_device_name(torch.cuda.current_device()) if cuda else None,
            "gpu_count": torch.cuda.device_count() if cuda else 0,
            "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()}
