"""Presence masks, frame padding masks and modality dropout.

MERBench marks nothing: a missing modality arrives as all-zero features and frame sequences are
zero-padded (at the front) without a mask. We derive both masks from the data, and also accept
explicit ones (``batch['masks']``: [B, 3] presence in audio/text/video order, ``batch['<key>_mask']``:
[B, T] frame validity) when a dataset supplies them.
"""
import torch
import torch.nn as nn

MODALITIES = ("audios", "texts", "videos")


def frame_mask(x: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, T] bool, True where a frame has any non-zero value (or is non-finite)."""
    return (x != 0).any(dim=-1)


def presence_mask(batch: dict) -> torch.Tensor:
    """[B, 3] bool presence of audio/text/video: a modality whose whole input is zero is missing."""
    present = torch.stack([(batch[k] != 0).flatten(1).any(dim=1) for k in MODALITIES], dim=1)
    if batch.get("masks") is not None:
        present = present & batch["masks"].to(device=present.device).bool()
    return present


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


class ModalityDropout(nn.Module):
    """Drops whole present modalities per sample during training, vectorised over the batch.

    The rate ramps linearly from 0 to ``p`` over ``warmup`` epochs (``set_epoch``). A sample never
    loses all of its present modalities: if every one was dropped, one of them (at random) is kept.
    Returns the new presence mask; callers fuse with it so the dropout reaches the fusion.
    """

    def __init__(self, p: float = 0.15, warmup: int = 0):
        super().__init__()
        self.p, self.warmup, self.epoch = float(p), int(warmup), 0

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
        keep = present & (torch.rand(present.shape, device=present.device) >= self.rate)
        lost_all = present.any(dim=1) & ~keep.any(dim=1)                            # [B]
        rescue_score = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
        rescue = nn.functional.one_hot(rescue_score.argmax(dim=1), present.size(1)).bool()
        return torch.where(lost_all.unsqueeze(1), rescue, keep)
