"""Reliability evidence that generalises, and the pieces that keep a model strong when modalities are gone.

No head here learns to recognise the augmentation's kinds. Fusion turns away from a modality by fixed
rules over evidence that any corruption leaves:

* **typicality**: how far a modality's first-layer pre-activations lie from their training distribution
  (running mean and variance over clean, present training inputs): the log of the mean squared z-score, about 0 for a typical input, well above 0 for noisy, permuted or sign-flipped inputs,
  well below 0 for flattened ones (the training mean written in for a missing modality, a scaled-down copy);
* **agreement**: whether a modality's own prediction (its unimodal expert) agrees with the other present
  modalities' predictions.

Unimodal experts (MoMKE-style single-modality pathways) learn from the fused prediction (self-distillation:
MERBench's forward never sees labels); the imagination module (MMIN / GCNet-style) predicts a missing
modality's latent from the present ones, trained on the modalities that are there.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .grouped import GroupedLinear
from .losses import masked_average
from .masking import masked_fill_zero

SCORE_CLAMP = 6.0


class Typicality(nn.Module):
    """Running per-modality mean and variance of [B, M, H] activations over clean present training inputs (as
    BatchNorm keeps them: updated in training forwards, in place, also under the fold-parallel vmap, where the
    buffers are stacked per fold); :meth:`score` [B, M] is the log mean squared z-score."""

    def __init__(self, num_modalities: int, dim: int, momentum: float = 0.05):
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("running_mean", torch.zeros(num_modalities, dim))
        self.register_buffer("running_var", torch.ones(num_modalities, dim))
        self.register_buffer("updates", torch.zeros(num_modalities, 1))

    @torch.no_grad()
    def update(self, h, mask):
        """Fold the batch's statistics of the activations where ``mask`` [B, M] into the running ones: a plain
        average over the first 1/momentum updates, then an exponential one."""
        w = mask.to(h.dtype).unsqueeze(-1)                                              # [B, M, 1]
        n = w.sum(0)                                                                    # [M, 1]
        mean = (h * w).sum(0) / n.clamp_min(1.0)
        var = ((h - mean).pow(2) * w).sum(0) / (n - 1.0).clamp_min(1.0)
        ok = (n > 1.0).to(h.dtype)
        self.updates.add_(ok)
        rate = ok * torch.maximum(1.0 / self.updates.clamp_min(1.0), torch.full_like(ok, self.momentum))
        self.running_mean.add_(rate * (mean - self.running_mean))
        self.running_var.add_(rate * (var - self.running_var))

    def score(self, h):
        """log mean z^2 over the features: ~0 typical, > 0 spread out, < 0 collapsed; [B, M]."""
        with torch.no_grad():
            z2 = (h - self.running_mean).pow(2) / (self.running_var + 1e-5)
            return torch.log(z2.mean(-1) + 1e-6).clamp(-SCORE_CLAMP, SCORE_CLAMP)


def typicality_penalty(score, high: float, low: float):
    """[B, M] scores -> [B, M] >= 0: how far above ``high`` (spread out: noise, permuted or flipped features) or
    below ``low`` (collapsed: a constant-ish fill, a scaled-down copy) each input's score lies."""
    return F.relu(score - high) + F.relu(low - score)


def agreement(probs, mask):
    """[B, M, C] unimodal class probabilities (detached by the caller), [B, M] mask -> [B, M] log agreement of
    each modality with the mean prediction of the other masked-in modalities (0 where it has none)."""
    m = mask.to(probs.dtype).unsqueeze(-1)                                              # [B, M, 1]
    total = (probs * m).sum(1, keepdim=True)                                            # [B, 1, C]
    count = m.sum(1, keepdim=True) - m                                                  # [B, M, 1] others
    others = (total - probs * m) / count.clamp_min(1.0)
    log_agree = torch.log((probs * others).sum(-1) + 1e-6)                              # [B, M]
    return torch.where(count.squeeze(-1) > 0, log_agree, torch.zeros_like(log_agree))


class UnimodalExperts(nn.Module):
    """One classifier per modality on its latent, all in one grouped matmul: [B, M, H] -> [B, M, C]."""

    def __init__(self, num_modalities: int, hidden_dim: int, num_classes: int):
        super().__init__()
        self.head = GroupedLinear(num_modalities, hidden_dim, max(num_classes, 1), group_dim=1)

    def forward(self, mu):
        return self.head(mu)

    @staticmethod
    def distillation(logits, teacher_logits, mask):
        """KL(softmax(teacher) || softmax(expert)) per present modality, averaged where ``mask``: the experts
        learn what the fused model predicts (no labels reach a model's forward under MERBench)."""
        target = torch.softmax(teacher_logits.detach(), dim=-1).unsqueeze(1)            # [B, 1, C]
        kl = (target * (torch.log(target + 1e-8) - torch.log_softmax(logits, dim=-1))).sum(-1)   # [B, M]
        return masked_average(kl, mask)


class Imagination(nn.Module):
    """Predicts each modality's latent from the mean latent of the OTHER available modalities (MMIN/GCNet-style):
    [B, M, H] latents + [B, M] availability -> [B, M, H] imagined latents and [B, M] "has another to imagine from"."""

    def __init__(self, num_modalities: int, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(GroupedLinear(num_modalities, hidden_dim, hidden_dim, group_dim=1), nn.GELU(),
                                 GroupedLinear(num_modalities, hidden_dim, hidden_dim, group_dim=1))

    def forward(self, mu, available):
        a = available.to(mu.dtype).unsqueeze(-1)                                        # [B, M, 1]
        total = (masked_fill_zero(mu, available) * a).sum(1, keepdim=True)              # [B, 1, H]
        count = a.sum(1, keepdim=True) - a                                              # [B, M, 1]
        others = (total - masked_fill_zero(mu, available) * a) / count.clamp_min(1.0)
        return self.net(others), count.squeeze(-1) > 0

    @staticmethod
    def loss(imagined, mu, mask):
        """Squared error to the detached real latents where ``mask`` [B, M] (present, with another available)."""
        return masked_average((imagined - mu.detach()).pow(2).mean(-1), mask)
