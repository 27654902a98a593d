"""Per-modality encoders: deterministic MLP / LSTM (the baseline's) and variational ones -> (z, mu, logvar).

Utterance inputs [B, D] go through an MLP; frame inputs [B, T, D] are encoded per frame and pooled
over the valid frames only (masked attention pooling or an LSTM followed by a masked mean), so
zero padding never counts. The variational head gives (mu, logvar); z = mu + sigma * eps in training
and z = mu in eval (P-RMF / the V2 seed).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .masking import frame_mask, masked_mean, masked_softmax, any_or_all

LOGVAR_CLAMP = 10.0


class MLPEncoder(nn.Module):
    """dropout -> 3 x (linear, ReLU): MERBench's utterance encoder."""

    def __init__(self, in_dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class LSTMEncoder(nn.Module):
    """LSTM over frames, final state -> dropout -> linear: MERBench's frame encoder (front padding)."""

    def __init__(self, in_dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x):
        _, (h, _) = self.rnn(x)
        return self.proj(self.drop(h[-1]))


class ImprovedTrunk(nn.Module):
    """GELU + LayerNorm + residual two-layer trunk (V4 seed): trains deeper without collapse."""

    def __init__(self, in_dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1, self.ln1 = nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim)
        self.fc2, self.ln2 = nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim)
        self.skip = nn.Linear(in_dim, hidden_dim) if in_dim != hidden_dim else nn.Identity()

    def forward(self, x):
        x = self.drop(x)
        h = F.gelu(self.ln1(self.fc1(x)))
        return F.gelu(self.ln2(self.fc2(h))) + self.skip(x)


class PlainTrunk(nn.Module):
    """dropout -> linear -> ReLU -> linear -> ReLU."""

    def __init__(self, in_dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class MaskedAttentionPool(nn.Module):
    """[B, T, H] + [B, T] mask -> [B, H]: softmax-weighted sum over valid frames only."""

    def __init__(self, hidden_dim):
        super().__init__()
        self.score = nn.Linear(hidden_dim, 1)

    def forward(self, h, mask):
        w = masked_softmax(self.score(h).squeeze(-1), any_or_all(mask), dim=1)   # [B, T]
        return torch.einsum("bt,bth->bh", w, h)


class VariationalEncoder(nn.Module):
    """Input [B, D] or [B, T, D] -> (z, mu, logvar), each [B, H].

    ``variational=False`` gives a deterministic encoder (logvar = 0, z = mu) for the no-VAE ablation,
    with the same trunk so only the variational part is switched off.
    """

    def __init__(self, in_dim, hidden_dim, dropout=0.0, *, variational=True, improved=False,
                 sequence=False, seq_encoder="attnpool"):
        super().__init__()
        self.variational, self.sequence, self.seq_encoder = variational, sequence, seq_encoder
        trunk = ImprovedTrunk if improved else PlainTrunk
        if sequence and seq_encoder == "lstm":
            self.rnn = nn.LSTM(in_dim, hidden_dim, batch_first=True)
            self.trunk = trunk(hidden_dim, hidden_dim, dropout)
        else:
            self.trunk = trunk(in_dim, hidden_dim, dropout)
        if sequence and seq_encoder == "attnpool":
            self.pool = MaskedAttentionPool(hidden_dim)
        self.to_mu = nn.Linear(hidden_dim, hidden_dim)
        if variational:
            self.to_logvar = nn.Linear(hidden_dim, hidden_dim)
            if improved:  # start at unit variance: no early noise explosion (V4 seed)
                nn.init.zeros_(self.to_logvar.weight)
                nn.init.zeros_(self.to_logvar.bias)

    def encode(self, x):
        if not self.sequence:
            return self.trunk(x)                                     # [B, H]
        mask = frame_mask(x)                                         # [B, T]
        if self.seq_encoder == "lstm":
            x, _ = self.rnn(x)                                       # [B, T, H]
            return masked_mean(self.trunk(x), mask, dim=1)
        return self.pool(self.trunk(x), mask)                        # [B, H]

    def forward(self, x):
        h = self.encode(x)
        mu = self.to_mu(h)
        if not self.variational:
            return mu, mu, torch.zeros_like(mu)
        logvar = self.to_logvar(h).clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return z, mu, logvar


class Decoder(nn.Module):
    """z [B, H] -> reconstruction of the (frame-pooled) input [B, D]."""

    def __init__(self, hidden_dim, out_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, z):
        return self.net(z)


def pooled_input(x):
    """Reconstruction target: utt input as is, frame input averaged over its valid frames."""
    return x if x.dim() == 2 else masked_mean(x, frame_mask(x), dim=1)
