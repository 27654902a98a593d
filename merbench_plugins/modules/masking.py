"""Presence masks, frame padding masks and modality dropout.

MERBench marks nothing: a missing modality arrives as all-zero features and frame sequences are
zero-padded (at the front) without a mask. We derive both masks from the data, and also accept
explicit ones (``batch['masks']``: [B, 3] presence in audio/text/video order, ``batch['<key>_mask']``:
[B, T] frame validity) when a dataset supplies them.
"""
import math
from typing import Optional

import torch
import torch.nn as nn

from .corruptions import TRAIN_SEEN

MODALITIES = ("audios", "texts", "videos")


def frame_mask(x: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, T] bool, True where a frame has any non-zero value (or is non-finite)."""
    return (x != 0).any(dim=-1)


def data_mask(x: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, 1], [B, T, D] -> [B, T, 1]: x's dtype, 1 where the vector (utterance or frame) is real
    data, 0 on zero padding / an absent modality; broadcasts against x (noise added to real data only)."""
    return frame_mask(x).unsqueeze(-1).to(x.dtype)


def valid_first(x: torch.Tensor, mask: torch.Tensor):
    """Move each sequence's valid frames to the front, in order: ([B, T, D], [B, T]) -> the same shapes.

    A unidirectional RNN then never reads padding before a valid frame (MERBench pads at the front),
    so its outputs at the valid positions do not depend on how much padding there was."""
    t = torch.arange(mask.shape[1], device=mask.device)
    order = torch.argsort((~mask).long() * mask.shape[1] + t, dim=1)            # [B, T] valid ones first
    return torch.gather(x, 1, order.unsqueeze(-1).expand_as(x)), torch.gather(mask, 1, order)


def has_signal(x: torch.Tensor) -> torch.Tensor:
    """[B, D] or [B, T, D] -> [B] bool: some vector (the utterance, or a frame) is not constant over its
    dimensions. All-zero inputs (MERBench's missing), and missing written as a constant fill (-1, 1e-8, ...),
    are not signal; a single feature dimension cannot be judged this way, so there only non-zero counts."""
    if x.shape[-1] < 2:
        return (x != 0).flatten(1).any(dim=1)
    return (x.amax(dim=-1) != x.amin(dim=-1)).reshape(x.shape[0], -1).any(dim=1)


def presence_mask(batch: dict) -> torch.Tensor:
    """[B, 3] bool presence of audio/text/video: a modality whose input is zero, or constant over its
    dimensions, is missing; ``batch['masks']`` ([B, 3], where a dataset supplies it) can only remove more."""
    present = torch.stack([has_signal(batch[k]) for k in MODALITIES], dim=1)
    if batch.get("masks") is not None:
        present = present & batch["masks"].to(device=present.device).bool()
    return present


PRESENT_KEY, STD_KEY = "derived_present", "derived_std"


def input_statistics(batch: dict) -> dict:
    """Per-sample statistics of the raw inputs, computed once when a training engine loads the data instead of
    at every step: {PRESENT_KEY: [B, 3] bool presence (:func:`presence_mask`), STD_KEY: [B, 3] each
    modality's feature std (the corruption augmentation's noise scale)}. A model reads them from the batch
    where they are (the fold-parallel engine's batches) and computes them itself where not."""
    return {PRESENT_KEY: presence_mask(batch),
            STD_KEY: torch.stack([feature_std(batch[k].float()) for k in MODALITIES], dim=1)}


def masked_fill_zero(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the entries where ``mask`` is False; ``torch.where`` so that NaN/inf garbage cannot leak."""
    while mask.dim() < x.dim():
        mask = mask.unsqueeze(-1)
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean over ``dim`` of the entries where ``mask`` (same leading shape) is True; 0 where none are."""
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    total = masked_fill_zero(x, mask.bool()).sum(dim)
    return total / m.sum(dim).clamp_min(1.0)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the True entries only; masked entries get exactly 0, all-masked rows get all 0."""
    # a finite fill keeps the backward pass NaN-free for rows with nothing present
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    weights = torch.softmax(logits, dim=dim)
    return torch.where(mask, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))


def any_or_all(mask: torch.Tensor) -> torch.Tensor:
    """Rows with no True entry become all True: keeps attention/softmax defined for empty samples."""
    return mask | ~mask.any(dim=-1, keepdim=True)


def random_subset(present: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[B, M] bool -> a uniformly drawn non-empty proper subset of each row's True entries.

    The kept count is uniform over 1..k-1 (k = present count), then which ones uniformly: for k = 3
    that is exactly uniform over the 6 proper subsets (half of them single modalities). Rows with
    fewer than 2 present entries are returned as they are. ``generator``: draw from it instead of the
    global generator (fixed draws, e.g. a corrupted validation copy).
    """
    k = present.sum(dim=1, keepdim=True)                                               # [B, 1]
    keep_n = 1 + (torch.rand(k.shape, device=present.device, generator=generator) * (k - 1).clamp_min(1)).floor()
    scores = torch.rand(present.shape, device=present.device, generator=generator).masked_fill(~present, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)                                        # 0 = kept first
    kept = present & (rank < keep_n)
    return torch.where(k >= 2, kept, present)


class ModalityDropout(nn.Module):
    """Drops whole present modalities of training samples, vectorised over the batch.

    ``mode='subset'`` (default): with probability ``p`` a sample with at least two present modalities
    keeps only a random non-empty proper subset of them (:func:`random_subset`, so single-modality
    inputs, 3 of the 7 subsets a test can present, are common). ``mode='independent'``: each present
    modality is dropped with probability ``p`` (a sample that lost all keeps one at random).
    The rate acts from the first step; ``warmup`` > 0 ramps it over that many epochs (``set_epoch``,
    which upstream main-release.py never calls, so the default is 0). Returns the new presence mask.
    """

    def __init__(self, p: float = 0.15, warmup: int = 0, mode: str = "subset"):
        super().__init__()
        if mode not in ("subset", "independent"):
            raise ValueError(f"modality dropout mode {mode!r}: use subset or independent")
        self.p, self.warmup, self.mode, self.epoch = float(p), int(warmup), mode, 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    @property
    def rate(self) -> float:
        if self.warmup <= 0:
            return self.p
        return self.p * min(1.0, self.epoch / self.warmup)

    def forward(self, present: torch.Tensor) -> torch.Tensor:  # [B, M] bool -> [B, M] bool
        if not self.training or self.rate <= 0:
            return present
        if self.mode == "subset":
            hit = torch.rand(present.shape[:1], device=present.device) < self.rate     # [B]
            return torch.where(hit.unsqueeze(1), random_subset(present), present)
        keep = present & (torch.rand(present.shape, device=present.device) >= self.rate)
        lost_all = present.any(dim=1) & ~keep.any(dim=1)                            # [B]
        rescue_score = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
        rescue = nn.functional.one_hot(rescue_score.argmax(dim=1), present.size(1)).bool()
        return torch.where(lost_all.unsqueeze(1), rescue, keep)


def is_compiling() -> bool:
    """True while torch.compile traces (False on torch versions without ``torch.compiler``)."""
    compiler = getattr(torch, "compiler", None)
    return compiler is not None and bool(getattr(compiler, "is_compiling", lambda: False)())


def is_batched(t: torch.Tensor) -> bool:
    """True inside torch.func.vmap (fold-parallel training) or while torch.compile traces: the tensor then
    has no single value to branch on, and must not be kept on a module after the call."""
    if is_compiling():
        return True
    try:
        return bool(torch._C._functorch.is_batchedtensor(t))
    except AttributeError:  # torch < 2.0: functorch's own check
        try:
            import functorch
            return bool(functorch._C.is_batchedtensor(t))
        except (ImportError, AttributeError):
            return False


def any_true(mask: torch.Tensor) -> bool:
    """``mask.any()`` as a Python bool, to skip work; True where the mask :func:`is_batched`."""
    return True if is_batched(mask) else bool(mask.any())


# the augmentation draws the train-seen families of the corruption table only, in this index order
CORRUPTION_KINDS = TRAIN_SEEN                 # gauss, dropdims, gain, swap


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> broadcastable to x ([B, D] or [B, T, D])."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def feature_std(x: torch.Tensor) -> torch.Tensor:
    """[B, D] or [B, T, D] -> [B]: each sample's standard deviation over all its values (unbiased), as
    ``x.flatten(1).std(dim=1)``; two passes (mean, then centred squares), which on CPU run about 10x faster
    than ``std``'s single-pass kernel over rows of MER2023 widths."""
    flat = x.flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    return (centred.pow(2).sum(dim=1) / max(flat.shape[1] - 1, 1)).sqrt()


def eager_on_cpu(t: torch.Tensor) -> bool:
    """A CPU tensor outside vmap and torch.compile: data-dependent shapes are free there, so work can be
    limited to the samples that need it (on an accelerator the count would stall the queue)."""
    return t.device.type == "cpu" and not is_batched(t)


def ge_mask(a: torch.Tensor, b, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``(a >= b)`` as 0./1. in ``dtype`` (default a's; b a tensor or a number). On CPU in eager mode the
    comparison writes the floats directly (a bool mask, then converted or multiplied, costs about 5x as much
    there); elsewhere ``(a >= b).to(dtype)``."""
    dtype = a.dtype if dtype is None else dtype
    if eager_on_cpu(a) and not (torch.is_tensor(b) and is_batched(b)) and not a.requires_grad:
        shape = torch.broadcast_shapes(a.shape, b.shape) if torch.is_tensor(b) else a.shape
        return torch.ge(a, b, out=torch.empty(shape, dtype=dtype))
    return (a >= b).to(dtype)


def _corrupted(source, own, k, u, g, std, strength: float) -> torch.Tensor:
    """The kinds k [N] applied to N samples: ``source`` [N, ...] their inputs after the swap's gather, ``own``
    their own inputs (noise scale, frame mask), u [3, N] uniforms, g the normal draw shaped like them, ``std``
    [N] or None. One expression with the same shapes for every sample, so that it runs under vmap."""
    zero = torch.zeros((), device=own.device, dtype=own.dtype)
    gain = torch.where(k == 2, torch.exp((2 * u[2] - 1) * math.log(max(strength, 1.0))), zero + 1)
    std = feature_std(own) if std is None else std.to(own.dtype)
    coef = _per_sample(torch.where(k == 0, (0.5 + (strength - 0.5) * u[0]) * std, zero), own)
    if own.dim() == 3:
        coef = coef * data_mask(own)                                                   # padding frames stay zero
    out = torch.addcmul(source * _per_sample(gain, own), g, coef)
    # Phi^-1(f) = sqrt(2) erfinv(2f - 1); -inf: every dimension kept
    threshold = torch.where(k == 1, math.sqrt(2.0) * torch.erfinv(2 * (0.3 + 0.6 * u[1]) - 1), zero - math.inf)
    decide = g if own.dim() == 2 else g[:, :1]                                        # [N, D] or [N, 1, D]
    return out * ge_mask(decide, _per_sample(threshold, decide))


def corrupt_one(x: torch.Tensor, kind: torch.Tensor, strength: float, active: Optional[torch.Tensor] = None,
                std: Optional[torch.Tensor] = None, draw: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Corrupt every sample of one modality ([B, D] or [B, T, D]) by its kind index [B] (CORRUPTION_KINDS);
    with ``active`` [B] bool, only those samples (the rest come back unchanged).

    gauss: Gaussian at U(0.5, strength) x the sample's own feature std; dropdims: a U(0.3, 0.9)
    fraction of the dimensions zeroed; gain: x * exp(U(-1, 1) * log(strength)); swap: the previous
    sample's features. Zero-padded frames stay zero (the frame mask does not change).

    ``draw``: standard normal values shaped like x (default: drawn here). A sample uses them for one kind
    only: as its noise (gauss), or as its dimension mask (dropdims keeps a dimension where Phi(draw) >= the
    fraction, i.e. draw >= Phi^-1(fraction): kept with probability 1 - fraction, independently per dimension;
    for frames the first frame's values decide, as every frame loses the same dimensions). So one draw
    serves every kind, and :func:`corrupt_inputs` shares one draw between the modalities.
    Under vmap and on an accelerator every sample goes through one fixed-shape expression (:func:`_corrupted`);
    on CPU in eager mode only the corrupted samples do, and the others are copied.
    ``std`` [B]: the samples' feature std, where precomputed (:func:`input_statistics`).
    """
    b = x.shape[0]
    u = torch.rand(3, b, device=x.device, dtype=x.dtype)                              # amplitude, fraction, gain
    g = torch.randn_like(x) if draw is None else draw.to(x.dtype)
    k = kind if active is None else kind.masked_fill(~active, -1)                     # -1: unchanged
    rows = torch.arange(b, device=x.device)
    source = torch.where(k == 3, (rows - 1) % b, rows)                               # swap: the previous sample
    if not eager_on_cpu(x):
        return _corrupted(x.index_select(0, source), x, k, u, g, std, strength)
    idx = (k >= 0).nonzero().squeeze(1)
    out = x.clone()
    out[idx] = _corrupted(x.index_select(0, source[idx]), x.index_select(0, idx), k[idx], u[:, idx],
                          g.index_select(0, idx), None if std is None else std[idx], strength)
    return out


def _shared_draw(inputs, needed: torch.Tensor):
    """One standard normal tensor covering every input's shape ([B, max D] or [B, max T, max D]) for the
    samples that use it (``needed`` [B]: gauss or dropdims somewhere), or None where the inputs differ in rank
    or dtype (each modality then draws its own). On CPU in eager mode only the needed rows are drawn (the
    others stay zero, which their kinds never read): a few samples' draw instead of the batch's."""
    shapes = [tuple(x.shape) for x in inputs]
    if len({len(s) for s in shapes}) != 1 or len({x.dtype for x in inputs}) != 1:
        return None
    full = tuple(max(dims) for dims in zip(*shapes))
    device, dtype = inputs[0].device, inputs[0].dtype
    if eager_on_cpu(needed) and eager_on_cpu(inputs[0]):
        rows = needed.nonzero().squeeze(1)
        draw = torch.zeros(full, device=device, dtype=dtype)
        return draw.index_copy_(0, rows, torch.randn((rows.numel(),) + full[1:], device=device, dtype=dtype))
    return torch.randn(full, device=device, dtype=dtype)


def corrupt_inputs(inputs, present: torch.Tensor, p: float, strength: float = 4.0, std: Optional[torch.Tensor] = None):
    """Training-time corruption augmentation: with probability ``p`` a sample with at least two present
    modalities gets ONE of them corrupted (:func:`corrupt_one`); a sample never has every present
    modality corrupted. Returns (new inputs, corrupted [B, M] bool). ``std`` [B, M]: precomputed feature stds.

    The modalities share one Gaussian draw: a sample corrupts one modality with one kind, so the values it
    uses are its own (one row of the draw) and no two samples' corruptions depend on each other."""
    b, m = present.shape
    eligible = (present.sum(dim=1) >= 2) & (torch.rand(b, device=present.device) < p)    # [B]
    scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
    which = nn.functional.one_hot(scores.argmax(dim=1), m).bool() & eligible.unsqueeze(1)  # [B, M]
    kind = torch.randint(len(CORRUPTION_KINDS), (b,), device=present.device)
    draw = _shared_draw(inputs, eligible & (kind <= 1))
    out = []
    for i, x in enumerate(inputs):
        if not any_true(which[:, i]):
            out.append(x)
            continue
        own = None if draw is None else draw[(slice(None),) + tuple(slice(0, n) for n in x.shape[1:])]
        out.append(corrupt_one(x, kind, strength, active=which[:, i], std=None if std is None else std[:, i],
                               draw=own))
    return out, which


class RobustRecipe(nn.Module):
    """The robustness recipe, one helper for every model: corruption augmentation (train-seen families only,
    :func:`corrupt_inputs`) then modality dropout (:class:`ModalityDropout`), in training mode only.

    :meth:`draw` gives a model the corrupted inputs, the kept mask and which inputs were corrupted (our models
    call it inside their forward, so they also train robustly under upstream ``main-release.py``);
    ``forward(batch)`` applies it to a MERBench batch outside any model (``--robust_recipe``): the corrupted
    features, and zeros, MERBench's "missing", where a modality was dropped.
    """

    def __init__(self, corrupt: float = 0.0, dropout: float = 0.0, strength: float = 4.0, mode: str = "subset",
                 warmup: int = 0):
        super().__init__()
        self.corrupt, self.strength = float(corrupt), float(strength)
        self.modality_dropout = ModalityDropout(dropout, warmup, mode)

    @property
    def active(self) -> bool:
        return self.corrupt > 0 or self.modality_dropout.p > 0

    def set_epoch(self, epoch: int):
        self.modality_dropout.set_epoch(epoch)

    def draw(self, inputs, present: torch.Tensor, std: Optional[torch.Tensor] = None):
        """(inputs, kept [B, M], corrupted [B, M]); in eval mode the inputs as they are and kept = present.
        ``std`` [B, M]: the samples' feature stds where an engine precomputed them (:func:`input_statistics`)."""
        corrupted = torch.zeros_like(present)
        if self.training and self.corrupt > 0:
            inputs, corrupted = corrupt_inputs(inputs, present, self.corrupt, self.strength, std=std)
        return inputs, self.modality_dropout(present), corrupted

    def forward(self, batch: dict) -> dict:
        present = batch[PRESENT_KEY] if PRESENT_KEY in batch else presence_mask(batch)
        inputs, kept, _ = self.draw([masked_fill_zero(batch[k], present[:, m]) for m, k in enumerate(MODALITIES)],
                                    present, std=batch.get(STD_KEY))
        out = dict(batch)
        for m, key in enumerate(MODALITIES):
            out[key] = masked_fill_zero(inputs[m], kept[:, m])
        if PRESENT_KEY in batch:           # statistics an engine precomputed describe the batch before the recipe
            out.update(input_statistics(out))
        return out
