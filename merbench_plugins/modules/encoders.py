"""Encoders: MERBench's deterministic MLP / LSTM (for the baseline) and the multimodal variational
encoder -> (z, mu, logvar) of all three modalities at once, plus its decoder.

Only the first layer of each modality is its own (input widths differ); everything after it runs
on the stacked modalities [B, 3, H] with grouped layers. Frame inputs [B, T, D] are projected per
frame and pooled over the valid frames only (masked attention pooling, or an LSTM run over the valid
frames moved to the front, then a masked mean), so zero padding never counts. z = mu + sigma * eps in
training, z = mu in eval (P-RMF).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .dropout import Dropout
from .grouped import GroupedLayerNorm, GroupedLinear
from .masking import any_or_all, frame_mask, masked_mean, masked_softmax, valid_first

LOGVAR_CLAMP = 10.0


class NoOutput(nn.Module):
    """The head of an absent output (``output_dim2 = 0``: emotion-only datasets): [..., H] -> [..., 0], no weights
    (an ``nn.Linear(H, 0)`` works too but warns on every model built)."""

    def forward(self, x):
        return x.new_zeros(x.shape[:-1] + (0,))


def output_head(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim) if out_dim > 0 else NoOutput()


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


class InputProjection(nn.Module):
    """One modality's first layer: [B, D] -> [B, H], or frames [B, T, D] -> pooled [B, H]."""

    def __init__(self, in_dim, hidden_dim, dropout=0.0, *, improved=False, sequence=False, seq_encoder="attnpool"):
        super().__init__()
        self.sequence, self.seq_encoder, self.improved = sequence, seq_encoder, improved
        self.drop = Dropout(dropout)
        if sequence and seq_encoder == "lstm":
            self.rnn = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        else:
            self.proj = nn.Linear(in_dim, hidden_dim)
            self.norm = nn.LayerNorm(hidden_dim) if improved else None
        if sequence and seq_encoder == "attnpool":
            self.score = nn.Linear(hidden_dim, 1)

    def forward(self, x, return_pre: bool = False):
        """[B, H]; with ``return_pre`` also the (pooled) pre-activation [B, H], whose dropout noise is zero-mean
        (the typicality evidence is fitted to it; an LSTM's output stands in for it)."""
        mask = frame_mask(x) if self.sequence else None                                # [B, T], before dropout
        x = self.drop(x)
        if self.sequence and self.seq_encoder == "lstm":
            x, mask = valid_first(x, mask)                  # the LSTM never reads MERBench's front padding
            h, _ = self.rnn(x)                                                         # [B, T, H]
            pre = h
        else:
            pre = self.proj(x)
            h = F.gelu(self.norm(pre)) if self.improved else F.relu(pre)
        if not self.sequence:
            return (h, pre) if return_pre else h                                       # [B, H]
        if self.seq_encoder == "lstm":
            h = pre = masked_mean(h, mask, dim=1)
        else:
            w = masked_softmax(self.score(h).squeeze(-1), any_or_all(mask), dim=1)     # [B, T]
            h = torch.einsum("bt,bth->bh", w, h)
            pre = torch.einsum("bt,bth->bh", w, pre) if return_pre else None
        return (h, pre) if return_pre else h


class MultimodalVariationalEncoder(nn.Module):
    """Inputs of M modalities -> (z, mu, logvar), each [B, M, H].

    ``variational=False`` gives deterministic encoders (logvar = 0, z = mu) with the same trunk, for
    the no-VAE ablation. ``improved`` (V4 seed): GELU + LayerNorm + residual, log-variance head
    zero-initialised so training starts at unit variance.
    """

    def __init__(self, dims, hidden_dim, dropout=0.0, *, variational=True, improved=False, sequence=False,
                 seq_encoder="attnpool"):
        super().__init__()
        m, h = len(dims), hidden_dim
        self.variational, self.improved = variational, improved
        self.inputs = nn.ModuleList(InputProjection(d, h, dropout, improved=improved, sequence=sequence,
                                                    seq_encoder=seq_encoder) for d in dims)
        self.hidden = GroupedLinear(m, h, h, group_dim=1)
        self.hidden_norm = GroupedLayerNorm(m, h, group_dim=1) if improved else None
        self.to_stats = GroupedLinear(m, h, 2 * h if variational else h, group_dim=1)   # [mu | logvar] in one matmul
        if variational and improved:
            nn.init.zeros_(self.to_stats.weight[..., h:])
            nn.init.zeros_(self.to_stats.bias[..., h:])

    def forward(self, inputs, return_first: bool = False):
        """(z, mu, logvar), plus the first layer's pre-activations [B, M, H] with ``return_first``."""
        if return_first:
            h1, pre = (torch.stack(t, dim=1) for t in zip(*(proj(x, return_pre=True)
                                                             for proj, x in zip(self.inputs, inputs))))
        else:
            h1 = torch.stack([proj(x) for proj, x in zip(self.inputs, inputs)], dim=1)  # [B, M, H]
        if self.improved:
            h = F.gelu(self.hidden_norm(self.hidden(h1))) + h1
        else:
            h = F.relu(self.hidden(h1))
        stats = self.to_stats(h)
        if not self.variational:
            out = (stats, stats, torch.zeros_like(stats))
        else:
            mu, logvar = stats.chunk(2, dim=-1)
            logvar = logvar.clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            out = (z, mu, logvar)
        return out + (pre,) if return_first else out


RECON_MODES = ("full", "subset", "sketch")


class MultimodalDecoder(nn.Module):
    """z [B, M, H] -> per-modality squared reconstruction error [B, M] of the (frame-pooled) inputs.

    ``mode`` says what is reconstructed; the error is a mean over feature dimensions in every mode:

    * ``full``: every dimension of every input (for MER2023's 5120-d text this is 40 % of a V2 step).
    * ``subset``: ``dims`` dimensions per modality drawn uniformly (with replacement) at every step, a
      different draw per step (and per fold under vmap): an unbiased estimate of ``full``'s error and its
      gradient, at ``dims / D`` of its cost (only the drawn output units are computed).
    * ``sketch``: a low-dimensional target, a fixed random +-1 count sketch of each input to ``dims``
      values (cyclic buckets, scaled by sqrt(bucket size) so its squared norm matches the input's per
      dimension), predicted by a small untied [H -> dims] layer per modality (one grouped matmul).

    ``tied_to`` (the encoder; ``full`` and ``subset``) ties each output layer to the transpose of that
    modality's input projection, as in classic tied autoencoders: the same objective without a second
    full-width weight matrix to store and optimise (5120 x H for MER2023's text features).
    """

    def __init__(self, dims, hidden_dim, tied_to: "MultimodalVariationalEncoder" = None, *, mode: str = "full",
                 dims_per_step: int = 256):
        super().__init__()
        if mode not in RECON_MODES:
            raise ValueError(f"recon_mode {mode!r}: use one of {', '.join(RECON_MODES)}")
        if mode != "full" and dims_per_step < 1:
            raise ValueError(f"recon_dims must be >= 1 for recon_mode {mode!r}, got {dims_per_step}")
        self.mode, self.in_dims = mode, tuple(dims)
        self.hidden = GroupedLinear(len(dims), hidden_dim, hidden_dim, group_dim=1)
        tied = mode != "sketch" and tied_to is not None and all(hasattr(p, "proj") for p in tied_to.inputs)
        # a plain (unregistered) reference: the encoder owns the projections; registering them here too gave
        # every tied tensor a second name, which torch.compile cannot trace under vmap (fold-parallel)
        self._tied = [tied_to.inputs] if tied else None
        if mode == "sketch":
            self.sketch_dims = [min(dims_per_step, d) for d in dims]
            self.sketch_out = GroupedLinear(len(dims), hidden_dim, max(self.sketch_dims), group_dim=1)
            # fixed signs (the same for every fold and run: a property of the input width, not of a seed)
            for m, d in enumerate(dims):
                g = torch.Generator().manual_seed(1_000_003 * m + d)
                self.register_buffer(f"sketch_sign{m}", torch.randint(0, 2, (d,), generator=g).float() * 2 - 1,
                                     persistent=False)
        elif tied:
            self.output_bias = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in dims)
        else:
            self.outputs = nn.ModuleList(nn.Linear(hidden_dim, d) for d in dims)
        self.subset_dims = [min(dims_per_step, d) for d in dims] if mode == "subset" else None
        self._register_load_state_dict_pre_hook(self._drop_tied_copies)

    @staticmethod
    def _drop_tied_copies(state_dict, prefix, *args):
        """Checkpoints from before the reference was unregistered hold the encoder's projections a second
        time, under ``decoders.encoder_inputs.*``; they are the same tensors, so they are dropped."""
        for key in [k for k in state_dict if k.startswith(prefix + "encoder_inputs.")]:
            del state_dict[key]

    @property
    def encoder_inputs(self):
        return None if self._tied is None else self._tied[0]

    def output_layer(self, m):
        """(weight [H, D], bias [D]) of modality m's output layer; tied: the encoder projection's weight."""
        if self.encoder_inputs is None:
            return self.outputs[m].weight.t(), self.outputs[m].bias
        return self.encoder_inputs[m].proj.weight, self.output_bias[m]                     # [D_in -> H]: [H, D]

    def reconstruct(self, h, m):
        weight, bias = self.output_layer(m)
        # h @ W, written so that W's gradient comes out in W's memory layout (the fold-parallel engine stores
        # linear weights transposed): the tied weight's two gradients then add contiguously
        out = h @ weight if weight.is_contiguous() else (weight.t() @ h.t()).t()
        return out + bias                                                                  # [B, D]

    def reconstruct_subset(self, h, m, index):
        """The reconstruction's dimensions ``index`` [d] only: [B, H] -> [B, d]."""
        weight, bias = self.output_layer(m)
        # pick the columns in the weight's memory layout ([H, D] as built; [D, H] in the fold-parallel engine's
        # transposed storage), so that the gradient's index_add lands in that layout and adds contiguously
        # to the encoder's gradient of the same weight
        cols = weight.index_select(1, index) if weight.is_contiguous() else weight.t().index_select(0, index).t()
        return h @ cols + bias.index_select(0, index)

    def sketch(self, x, m):
        """[B, D] -> [B, d]: sum over cyclic buckets of the signed input, / sqrt(bucket size)."""
        d, width = self.sketch_dims[m], x.shape[-1]
        x = x * getattr(self, f"sketch_sign{m}")
        per_bucket = -(-width // d)
        if per_bucket * d != width:
            x = F.pad(x, (0, per_bucket * d - width))
        return x.view(*x.shape[:-1], per_bucket, d).sum(-2) * per_bucket ** -0.5

    def forward(self, z, inputs):
        h = F.relu(self.hidden(z))                                                         # [B, M, H]
        if self.mode == "sketch":
            pred = self.sketch_out(h)                                                      # [B, M, max d]
            return torch.stack([(pred[:, m, :self.sketch_dims[m]] - self.sketch(pooled_input(x), m)).pow(2).mean(-1)
                                for m, x in enumerate(inputs)], dim=1)
        if self.mode == "subset":
            # one uniform draw for every modality's indices: [M, d] -> index into each modality's D
            u = torch.rand(len(inputs), max(self.subset_dims), device=z.device)
            errors = []
            for m, x in enumerate(inputs):
                index = (u[m, :self.subset_dims[m]] * x.shape[-1]).long().clamp_max(x.shape[-1] - 1)   # [d]
                target = pooled_input(x.index_select(-1, index), frame_mask(x) if x.dim() == 3 else None)
                errors.append((self.reconstruct_subset(h[:, m], m, index) - target).pow(2).mean(-1))
            return torch.stack(errors, dim=1)
        return torch.stack([(self.reconstruct(h[:, m], m) - pooled_input(x)).pow(2).mean(-1)
                            for m, x in enumerate(inputs)], dim=1)


def pooled_input(x, mask=None):
    """Reconstruction target: utt input as is, frame input averaged over its valid frames (``mask`` [B, T],
    default: derived from ``x``)."""
    return x if x.dim() == 2 else masked_mean(x, frame_mask(x) if mask is None else mask, dim=1)
