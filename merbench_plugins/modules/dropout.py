"""Dropout with an explicit mask from cheap random bits: the same distribution as ``nn.Dropout``, cheaper, and
compilable.

Why not ``nn.Dropout``: on CPU its ``bernoulli_`` costs 12-17 ns per element against about 3-5 ns for
``rand_like`` (one V2 fold-parallel step at MER2023 sizes: 15 ms of 121 in ``bernoulli_``), and under
``vmap(randomness="different")`` torch.compile (inductor, torch 2.13) drops the gradient through
``F.dropout`` when other random draws share the graph (docs/inductor_vmap_dropout.md).
Why not ``rand_like`` either: a dropout decision needs a few random bits, not a float. Each 64-bit integer
draw is split into four uniform 16-bit values (one ``randint`` per four elements, about 2x cheaper than
``rand_like`` on CPU); an element is kept where its value is at least the threshold, so ``p`` is realised to
1/65536 (``p = 0.3`` drops with probability 0.299997), and kept elements are scaled by 1 / (1 - that
probability). MERBench's own layers (``MLPEncoder``, ``LSTMEncoder``, which the ``attention`` baseline
mirrors) keep ``nn.Dropout``.
"""
import torch
import torch.nn as nn

from .masking import ge_mask, is_compiling

LEVELS = 1 << 16


def uniform16(x: torch.Tensor) -> torch.Tensor:
    """Integer values shaped like x, uniform over [-32768, 32767] and independent: the four 16-bit words of
    each draw from the full 64-bit range (under vmap with randomness="different", per batch entry). Eager:
    an int16 view of the draws. Under torch.compile the words are shifted out arithmetically (the same
    values, as int64): with the view, a compiled fold-parallel training step of our corruption + dropout
    pattern computed another loss than eager from the same random state (torch 2.13 inductor,
    fallback_random; the view alone, or without the corruption's draws, matched), with the shifts it matches
    (tests/test_compile.py)."""
    n = x.numel()
    count = (n + 3) // 4
    if not is_compiling():
        words = torch.randint(-2 ** 63, 2 ** 63 - 1, (count,), dtype=torch.int64, device=x.device)
        try:
            return words.view(torch.int16)[:n].view(x.shape)
        except RuntimeError:          # torch without views across element sizes: the arithmetic below
            words = words.unsqueeze(1)
    else:
        words = torch.randint(-2 ** 63, 2 ** 63 - 1, (count, 1), dtype=torch.int64, device=x.device)
    shifts = torch.arange(0, 64, 16, device=x.device)                        # little-endian word order
    unsigned = (words >> shifts) & 0xFFFF                                       # [count, 4] in [0, 65535]
    return (unsigned - ((unsigned >> 15) << 16)).view(-1)[:n].view(x.shape)   # as signed 16-bit


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout's scaled mask in x's dtype: 1 / (1 - p') with probability 1 - p', else 0, where
    p' = round(p * 65536) / 65536 (all zero where p' is 1)."""
    dropped = int(round(p * LEVELS))
    if dropped >= LEVELS:
        return torch.zeros_like(x)
    bits, threshold = uniform16(x), dropped - LEVELS // 2                      # keep where bits >= threshold
    return ge_mask(bits, threshold, x.dtype).mul_(LEVELS / (LEVELS - dropped))


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` in distribution (each element kept with probability 1 - p, to 1/65536,
    scaled to keep the mean); another random stream than ``bernoulli_``."""
    if not training or p <= 0:
        return x
    if p >= 1:
        return x * 0
    return x * keep_mask(x, p)


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` (no parameters, same state_dict) using :func:`dropout`."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, got {p}")
        self.p = float(p)

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
