"""Per-modality layers applied to stacked modalities in one op (no Python loop over modalities).

The group (modality) axis is ``group_dim``: 0 for modality-first tensors [M, B, *, d] (MRG-Net),
1 for batch-first stacks [B, M, d] (AttentionRobustV2/V4).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class GroupedLinear(nn.Module):
    """One linear layer per group, all applied by one (b)addbmm."""

    def __init__(self, groups: int, in_features: int, out_features: int, bias: bool = True, group_dim: int = 0):
        super().__init__()
        self.in_features, self.out_features, self.group_dim = in_features, out_features, group_dim
        bound = 1.0 / math.sqrt(in_features)    # nn.Linear's default init range, per group
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.group_dim:
            x = x.transpose(0, self.group_dim)
        flat = x.reshape(x.shape[0], -1, self.in_features)                               # [M, N, in]
        y = torch.bmm(flat, self.weight) if self.bias is None else torch.baddbmm(self.bias, flat, self.weight)
        y = y.view(*x.shape[:-1], self.out_features)
        return y.transpose(0, self.group_dim) if self.group_dim else y


class GroupedLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine per group."""

    def __init__(self, groups: int, dim: int, bias: bool = True, eps: float = 1e-5, group_dim: int = 0):
        super().__init__()
        self.dim, self.eps, self.group_dim = dim, eps, group_dim
        self.weight = nn.Parameter(torch.ones(groups, dim))
        self.bias = nn.Parameter(torch.zeros(groups, dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, (self.dim,), eps=self.eps)
        shape = [1] * x.dim()
        shape[self.group_dim], shape[-1] = x.shape[self.group_dim], self.dim
        y = y * self.weight.view(shape)
        return y if self.bias is None else y + self.bias.view(shape)
