"""Fusion over the modality stack [B, M, H] with a presence mask [B, M].

Missing (or dropped) modalities are excluded from every softmax by the mask, so they get exactly
zero weight and their input cannot reach the output (SPEC 6: masked, not merely down-weighted).
"""
import math

import torch
import torch.nn as nn

from .dropout import Dropout
from .masking import any_or_all, masked_fill_zero, masked_softmax


def confidence_logits(logvar: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[B, M, H] log-variances -> [B, M] logits 1 / mean(sigma) / T (P-RMF: confident = low sigma)."""
    sigma = torch.exp(0.5 * logvar).mean(dim=-1)
    return 1.0 / (sigma + 1e-6) / temperature


class UncertaintyWeightedFusion(nn.Module):
    """w = softmax over present modalities of the confidence; proxy = sum_m w_m z_m.

    ``use_uncertainty=False`` gives the plain mean of the present modalities (ablation).
    """

    def __init__(self, temperature: float = 1.0, use_uncertainty: bool = True):
        super().__init__()
        self.temperature, self.use_uncertainty = temperature, use_uncertainty

    def weights(self, tokens, logvar, mask, bias=None):
        """``bias`` [B, M]: extra logits (reliability evidence: atypical or disagreeing modalities lose weight)."""
        if self.use_uncertainty:
            logits = confidence_logits(logvar, self.temperature)
        else:
            logits = torch.zeros(mask.shape, dtype=tokens.dtype, device=tokens.device)
        if bias is not None:
            logits = logits + bias
        return masked_softmax(logits, mask, dim=1)                                   # [B, M]

    def forward(self, tokens, logvar, mask, bias=None):
        w = self.weights(tokens, logvar, mask, bias)
        return torch.einsum("bm,bmh->bh", w, masked_fill_zero(tokens, mask)), w     # [B, H], [B, M]


class GatedUncertaintyFusion(UncertaintyWeightedFusion):
    """w = alpha * uncertainty weights + (1 - alpha) * softmax(gate MLP over the present means) (V4 seed).

    Both terms are masked softmaxes, so w sums to 1 over the present modalities and is 0 elsewhere;
    the gate sees missing modalities as zeros, never their input.
    """

    def __init__(self, hidden_dim: int, num_modalities: int = 3, temperature: float = 1.0,
                 gate_alpha: float = 0.5, learnable_alpha: bool = False, use_uncertainty: bool = True):
        super().__init__(temperature, use_uncertainty)
        self.gate = nn.Sequential(nn.Linear(hidden_dim * num_modalities, hidden_dim), nn.GELU(),
                                  Dropout(0.1), nn.Linear(hidden_dim, num_modalities))
        if learnable_alpha:
            a = min(max(gate_alpha, 1e-4), 1 - 1e-4)
            self.alpha_logit = nn.Parameter(torch.tensor(math.log(a / (1 - a))))
        else:
            self.register_buffer("alpha_logit", None)
            self.fixed_alpha = float(gate_alpha)

    @property
    def alpha(self):
        return torch.sigmoid(self.alpha_logit) if self.alpha_logit is not None else self.fixed_alpha

    def weights(self, tokens, logvar, mask, means=None, bias=None):
        means = tokens if means is None else means
        w_unc = super().weights(tokens, logvar, mask, bias)
        gate_in = masked_fill_zero(means, mask).flatten(1)                           # [B, M*H]
        gate_logits = self.gate(gate_in) + (0 if bias is None else bias)
        w_gate = masked_softmax(gate_logits, mask, dim=1)                            # [B, M]
        return self.alpha * w_unc + (1 - self.alpha) * w_gate

    def forward(self, tokens, logvar, mask, means=None, bias=None):
        w = self.weights(tokens, logvar, mask, means, bias)
        return torch.einsum("bm,bmh->bh", w, masked_fill_zero(tokens, mask)), w


class ProxyAttention(nn.Module):
    """The fused proxy queries the modality stack (absent modalities masked out), pre-norm residual.

    Attending over the stack of tokens (not token-to-token) is what makes this more than a
    single-element softmax (SPEC 6). One query over M keys, all heads in one einsum. Pre-norm keeps
    the residual path un-normalised: a post-norm here squashed the scale the valence head needs.
    """

    def __init__(self, hidden_dim: int, num_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} must be divisible by num_attention_heads={num_heads}")
        self.heads, self.scale = num_heads, (hidden_dim // num_heads) ** -0.5
        self.norm_query, self.norm_tokens = nn.LayerNorm(hidden_dim), nn.LayerNorm(hidden_dim)
        self.to_q = nn.Linear(hidden_dim, hidden_dim)
        self.to_kv = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.to_out = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), Dropout(dropout))

    def forward(self, proxy, tokens, mask, bias=None):       # [B, H], [B, M, H], [B, M] -> [B, H]
        """``bias`` [B, M]: added to every head's attention logits (the fusion's reliability evidence), so a
        modality the fusion turned away from is not attended back in."""
        b, m, h = tokens.shape
        q = self.to_q(self.norm_query(proxy)).view(b, self.heads, -1)                       # [B, heads, d]
        k, v = self.to_kv(self.norm_tokens(masked_fill_zero(tokens, mask))).view(b, m, 2, self.heads, -1).unbind(2)
        scores = torch.einsum("bhd,bmhd->bhm", q, k) * self.scale                            # [B, heads, M]
        if bias is not None:
            scores = scores + bias.unsqueeze(1)
        attn = masked_softmax(scores, any_or_all(mask).unsqueeze(1), dim=-1)
        return proxy + self.to_out(torch.einsum("bhm,bmhd->bhd", attn, v).reshape(b, h))
