"""Losses: VAE terms over present modalities, masked regression, focal / label smoothing, contrastive."""
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..constants import MISSING_VALENCE
from .grouped import GroupedLinear
from .masking import masked_fill_zero



def masked_average(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; a graph-connected 0 when nothing is selected."""
    mask = mask.to(values.dtype)
    return (masked_fill_zero(values, mask.bool()) * mask).sum() / mask.sum().clamp_min(1.0)


def kl_to_prior(mu, logvar):
    """KL(N(mu, sigma^2) || N(0, I)) averaged over the last dim: [..., H] -> [...]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=-1)


def modality_pairs(num_modalities: int = 3, device=None):
    i, j = zip(*itertools.combinations(range(num_modalities), 2))
    return torch.tensor(i, device=device), torch.tensor(j, device=device)


def pairwise_kl(mu, logvar, mask):
    """Symmetric KL between the posteriors of every pair of present modalities: [B, M, H] -> scalar.

    (KL(p||q) + KL(q||p)) / 2 = mean((v_p + d^2) / v_q + (v_q + d^2) / v_p - 2) / 4, with d = mu_p - mu_q.
    """
    i, j = modality_pairs(mu.size(1), mu.device)
    var = logvar.exp()
    d2 = (mu[:, i] - mu[:, j]).pow(2)                                            # [B, P, H]
    vi, vj = var[:, i], var[:, j]
    kl = 0.25 * ((vi + d2) / vj + (vj + d2) / vi - 2.0).mean(-1)                 # [B, P]
    return masked_average(kl, mask[:, i] & mask[:, j])


def masked_mse(pred, target, missing=MISSING_VALENCE):
    """MSE over samples whose target is not the missing marker (MERBench's test3 valence = -10)."""
    pred, target = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
    return masked_average((pred - target).pow(2), target != missing)


class FocalLabelSmoothingLoss(nn.Module):
    """(1 - p_t)^gamma * smoothed CE, optional class weights; gamma=0, smoothing=0 is plain CE.

    Smoothing follows the V4 seed: 1 - eps on the target, eps / (K - 1) on every other class.
    """

    def __init__(self, gamma: float = 2.0, smoothing: float = 0.1, class_weights=None):
        super().__init__()
        self.gamma, self.smoothing = float(gamma), float(smoothing)
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float))

    def forward(self, logits, target):                       # [B, K], [B] -> scalar
        target = target.long()
        log_probs = F.log_softmax(logits, dim=-1)
        log_pt = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)                 # [B]
        loss = -log_pt
        if self.smoothing > 0:
            k = logits.size(-1)
            off = self.smoothing / max(k - 1, 1)
            loss = -((1 - self.smoothing - off) * log_pt + off * log_probs.sum(-1))
        if self.gamma > 0:
            loss = (1 - log_pt.exp()).clamp_min(0).pow(self.gamma) * loss
        if self.class_weights is None:
            return loss.mean()
        w = self.class_weights.to(loss.device)[target]
        return (w * loss).sum() / w.sum().clamp_min(1e-12)


class FocalLoss(FocalLabelSmoothingLoss):
    def __init__(self, gamma: float = 2.0, class_weights=None):
        super().__init__(gamma=gamma, smoothing=0.0, class_weights=class_weights)


class LabelSmoothingCrossEntropy(FocalLabelSmoothingLoss):
    def __init__(self, smoothing: float = 0.1, class_weights=None):
        super().__init__(gamma=0.0, smoothing=smoothing, class_weights=class_weights)


class ModalityContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between projected modality embeddings, every pair at once (MMIM-style CPC).

    Only samples where both modalities of a pair are present take part, as anchors and as negatives.
    """

    def __init__(self, hidden_dim: int, proj_dim: int = 64, temperature: float = 0.07, num_modalities: int = 3):
        super().__init__()
        self.temperature = temperature
        # one projection head per modality, all applied in one grouped matmul
        self.proj = nn.Sequential(GroupedLinear(num_modalities, hidden_dim, hidden_dim), nn.ReLU(),
                                  GroupedLinear(num_modalities, hidden_dim, proj_dim))

    def forward(self, means, mask):                          # [B, M, H], [B, M] -> scalar
        z = F.normalize(self.proj(means.transpose(0, 1)), dim=-1)                    # [M, B, P]
        i, j = modality_pairs(z.size(0), z.device)
        valid = (mask[:, i] & mask[:, j]).t()                                         # [P, B]
        sim = torch.einsum("pbd,pcd->pbc", z[i], z[j]) / self.temperature             # [P, B, B]
        pair_mask = valid.unsqueeze(2) & valid.unsqueeze(1)                           # [P, B, B]
        sim = sim.masked_fill(~pair_mask, -1e4)         # finite: empty rows stay NaN-free in backward
        diag = torch.diagonal(sim, dim1=1, dim2=2)                                    # [P, B]
        rows = torch.logsumexp(sim, dim=2) - diag        # anchor in modality i
        cols = torch.logsumexp(sim, dim=1) - diag        # anchor in modality j
        return 0.5 * (masked_average(rows, valid) + masked_average(cols, valid))
