"""Building blocks of MRG-Net: fixed-length pooling, memory-slot routing, cross-modal routing, gated fusion.

Every block after the input projections works on all three modalities at once, stacked
modality-first as [M, B, N, d] (M = 3 modalities, N = tokens): per-modality weights are grouped
tensors applied by one bmm, and attention heads are a tensor dimension, so a forward pass has no
Python loop over heads or modalities.

Routing follows external attention / MiME: a token sequence is routed to S learned memory slots
(softmax over tokens, then L1 over slots) and read back through the same slots. The cross-modal
router builds its slot kernels from the other two modalities; the fusion gates read a single
context token, so their softmax runs over the slot dimension (over a length-1 token axis it is
the constant 1, the bug of the seed code).
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dropout import Dropout
from .grouped import GroupedLayerNorm, GroupedLinear
from .masking import masked_fill_zero, masked_softmax

ROUTE_EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# grouped (per-modality) layers
# ---------------------------------------------------------------------------------------------

class GroupedFeedForward(nn.Module):
    """Pre-norm FFN per modality (returns the update, the caller adds the residual)."""

    def __init__(self, groups: int, dim: int, ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        # dropout on the output only: CPU dropout masks cost about as much as the matmuls at these sizes
        self.net = nn.Sequential(GroupedLayerNorm(groups, dim), GroupedLinear(groups, dim, ratio * dim), nn.GELU(),
                                 GroupedLinear(groups, ratio * dim, dim), Dropout(dropout))

    def forward(self, x):
        return self.net(x)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[M, B, N, d] -> [M, B, H, N, d/H]"""
    m, b, n, d = x.shape
    return x.view(m, b, n, heads, d // heads).transpose(2, 3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[M, B, H, N, dh] -> [M, B, N, H*dh]"""
    m, b, h, n, dh = x.shape
    return x.transpose(2, 3).reshape(m, b, n, h * dh)


# ---------------------------------------------------------------------------------------------
# length alignment
# ---------------------------------------------------------------------------------------------

class FixedLenPool(nn.Module):
    """Resample the valid frames of each sequence to exactly L tokens: [B, T, C] + [B, T] mask -> [B, L, C].

    ``avg`` / ``max``: adaptive pooling over L equal bins when a sample has n >= L valid frames and
    linear interpolation when n < L (the seed's rule: pooling summarises long sequences, interpolation
    stretches short ones instead of padding them with zeros). ``linear``: interpolation for every n.
    Padded frames never contribute: the valid frames are first moved to the front (order kept), so the
    result depends neither on where the padding sits nor on how long it is. A sample without valid
    frames gives L zero tokens.
    """

    MODES = ("avg", "max", "linear")

    def __init__(self, length: int, mode: str = "avg"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"FixedLenPool mode {mode!r} is not one of {self.MODES}")
        if length < 1:
            raise ValueError(f"FixedLenPool length must be >= 1, got {length}")
        self.length, self.mode = int(length), mode

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, c = x.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
        mask = mask.bool()
        x = masked_fill_zero(x, mask)
        if t == 1:   # utterance features: every mode repeats the single vector (or gives zeros)
            return x.expand(b, self.length, c)
        count = mask.sum(1)                                                              # [B]
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
        x = x.gather(1, order.unsqueeze(-1).expand(b, t, c))                             # valid frames first
        stretched = self._interpolate(x, count)
        if self.mode == "linear":
            return stretched
        pooled = self._adaptive_pool(x, count)
        return torch.where((count < self.length).view(b, 1, 1), stretched, pooled)

    def _interpolate(self, x, count):
        """F.interpolate(mode='linear', align_corners=False) over the first ``count`` frames of each row."""
        b, t, c = x.shape
        n = count.unsqueeze(1)                                                           # [B, 1]
        j = torch.arange(self.length, device=x.device, dtype=x.dtype)
        src = ((j + 0.5) * n.to(x.dtype) / self.length - 0.5).clamp_min(0)              # [B, L]
        last = (n - 1).clamp_min(0)
        lo = torch.minimum(src.floor().long(), last)
        hi = torch.minimum(lo + 1, last)
        w = (src - lo.to(x.dtype)).clamp(0, 1).unsqueeze(-1)                            # [B, L, 1]
        left = x.gather(1, lo.unsqueeze(-1).expand(b, self.length, c))
        right = x.gather(1, hi.unsqueeze(-1).expand(b, self.length, c))
        out = (1 - w) * left + w * right
        return masked_fill_zero(out, (count > 0).unsqueeze(1))

    def _adaptive_pool(self, x, count):
        """Adaptive avg/max pooling (PyTorch's bin edges) over the first ``count`` frames of each row."""
        b, t, c = x.shape
        n = count.unsqueeze(1)                                                           # [B, 1]
        j = torch.arange(self.length, device=x.device)
        start = (j * n) // self.length                                                   # [B, L]
        end = ((j + 1) * n + self.length - 1) // self.length
        width = min(t, -(-t // self.length) + 1)     # widest possible bin; a static bound, no device sync
        idx = start.unsqueeze(-1) + torch.arange(width, device=x.device)                 # [B, L, K]
        inside = idx < end.unsqueeze(-1)
        idx = idx.clamp(max=t - 1)
        bins = x.gather(1, idx.view(b, -1, 1).expand(-1, -1, c)).view(b, self.length, width, c)
        if self.mode == "avg":
            total = masked_fill_zero(bins, inside).sum(2)
            return total / inside.sum(2, keepdim=True).clamp_min(1).to(x.dtype)
        low = torch.finfo(x.dtype).min
        peak = bins.masked_fill(~inside.unsqueeze(-1), low).amax(2)
        return masked_fill_zero(peak, inside.any(2))


# ---------------------------------------------------------------------------------------------
# per-modality Transformer embedder with one extra token
# ---------------------------------------------------------------------------------------------

class GroupedSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with separate weights per modality: [M, B, N, d] -> update."""

    def __init__(self, groups: int, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm = GroupedLayerNorm(groups, dim)
        # no qkv bias: a key bias adds the same logit to every key and would never get a gradient
        self.to_qkv = GroupedLinear(groups, dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(GroupedLinear(groups, dim, dim), Dropout(dropout))

    def forward(self, x):
        m, b, n, d = x.shape
        qkv = self.to_qkv(self.norm(x)).view(m, b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)                                          # each [M, B, H, N, dh]
        attn = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, dim=-1)
        return self.to_out(merge_heads(attn @ v))


class SequenceEmbedder(nn.Module):
    """Minimal per-modality Transformer over [extra token, L pooled tokens]: [M, B, L, d] -> [M, B, L+1, d].

    One learned extra token (a global anchor, like [CLS]) instead of the L extra tokens of ALMT,
    which doubled the sequence for no gain (seed fix).
    """

    def __init__(self, groups: int, length: int, dim: int, heads: int, depth: int = 1, ffn_ratio: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.extra_token = nn.Parameter(torch.zeros(groups, 1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(groups, 1, length + 1, dim) * 0.02)
        self.dropout = Dropout(dropout)
        self.attn = nn.ModuleList(GroupedSelfAttention(groups, dim, heads, dropout) for _ in range(depth))
        self.ffn = nn.ModuleList(GroupedFeedForward(groups, dim, ffn_ratio, dropout) for _ in range(depth))

    def forward(self, x):
        m, b = x.shape[:2]
        x = torch.cat([self.extra_token.expand(m, b, 1, -1), x], dim=2) + self.pos_embedding  # [M, B, L+1, d]
        x = self.dropout(x)
        for attn, ffn in zip(self.attn, self.ffn):      # over layers (depth), not heads or modalities
            x = x + attn(x)
            x = x + ffn(x)
        return x


# ---------------------------------------------------------------------------------------------
# memory routing
# ---------------------------------------------------------------------------------------------

def route_through_slots(x: torch.Tensor, to_slots: torch.Tensor, from_slots: torch.Tensor,
                        slot_mask: Optional[torch.Tensor] = None, temperature: float = 1.0
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Route tokens through memory slots, every modality and head at once.

    x [M, B, H, N, dh]; kernels [M, H, S, dh] (shared by the batch) or [M, B, H, S, dh] (per sample);
    slot_mask [M, S] marks real slots when modalities have different slot counts.
    Returns (read-back [M, B, H, N, dh], slot weights [M, B, H, N, S]; they sum to 1 over S).
    """
    m, b, h, n, dh = x.shape
    shared = to_slots.dim() == 4
    if shared:   # fold the batch into the tokens: a broadcast matmul would copy the kernels B times
        x = x.transpose(1, 2).reshape(m, h, b * n, dh)
    logits = x @ to_slots.transpose(-1, -2) / max(float(temperature), 1e-6)
    if shared:
        logits = logits.view(m, h, b, n, -1).transpose(1, 2)                            # [M, B, H, N, S]
    attn = torch.softmax(logits, dim=-2)       # over tokens: each slot collects a distribution over the sequence
    if slot_mask is not None:
        attn = attn * slot_mask.view(m, 1, 1, 1, -1).to(attn.dtype)
    attn = attn / (attn.sum(dim=-1, keepdim=True) + ROUTE_EPS)   # L1 over slots: each token's slot mixture
    if shared:
        read = attn.transpose(1, 2).reshape(m, h, b * n, -1) @ from_slots
        return read.view(m, h, b, n, dh).transpose(1, 2), attn
    return attn @ from_slots, attn


class MemorySlotUnit(nn.Module):
    """Learned memory slots of every modality and head: [M, B, H, N, dh] -> read-back, same shape.

    Modalities may have different slot counts (64/32/32 by default). The slots are stored flat per
    head, [H, sum(S_m), dh], and gathered into a padded [M, H, max(S_m), dh] view with a slot mask,
    so one batched matmul serves every modality and head and no padded slot is a parameter.
    The read-back kernel starts as the routing kernel (tied init, as in the seed) and then learns freely.
    """

    def __init__(self, dim_head: int, heads: int, slots: Sequence[int]):
        super().__init__()
        slots = [int(s) for s in slots]
        if min(slots) < 1:
            raise ValueError(f"every modality needs at least one memory slot, got {slots}")
        self.slots, self.heads, self.dim_head = tuple(slots), heads, dim_head
        kernel = torch.randn(heads, sum(slots), dim_head) / math.sqrt(dim_head)
        self.to_slots = nn.Parameter(kernel)
        self.from_slots = nn.Parameter(kernel.clone())
        offsets = [sum(slots[:m]) for m in range(len(slots))]
        position = torch.arange(max(slots))
        index = torch.stack([off + position.clamp(max=s - 1) for off, s in zip(offsets, slots)])  # [M, S_max]
        self.register_buffer("slot_index", index, persistent=False)
        self.register_buffer("slot_mask", position.unsqueeze(0) < torch.tensor(slots).unsqueeze(1), persistent=False)

    def kernels(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Padded routing and read-back kernels, each [M, H, S_max, dh]."""
        return self.to_slots[:, self.slot_index].transpose(0, 1), self.from_slots[:, self.slot_index].transpose(0, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        to_slots, from_slots = self.kernels()
        return route_through_slots(x, to_slots, from_slots, self.slot_mask)


class HeadwiseMemoryRouter(nn.Module):
    """Modality-specific memory encoder (MiME): norm -> head-wise slot routing -> projection -> FFN, residual.

    [M, B, N, d] -> [M, B, N, d]; heads and modalities are tensor dimensions (no loop).
    """

    def __init__(self, dim: int, heads: int, slots: Sequence[int], ffn_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        groups = len(slots)
        self.heads = heads
        # no norm bias: it adds the same logit to every token of a slot, which the token softmax cancels
        self.norm = GroupedLayerNorm(groups, dim, bias=False)
        self.memory = MemorySlotUnit(dim // heads, heads, slots)
        self.to_out = GroupedLinear(groups, dim, dim, bias=False)
        self.ffn = GroupedFeedForward(groups, dim, ffn_ratio, dropout)

    def forward(self, x):
        read, _ = self.memory(split_heads(self.norm(x), self.heads))                     # [M, B, H, N, dh]
        x = x + self.to_out(merge_heads(read))
        return x + self.ffn(x)


class ModalityContext(nn.Module):
    """Context of each modality from the OTHER present modalities: [M, B, d] summaries + [B, M] presence -> [M, B, d].

    Masked attention over the modality summaries: a modality never attends to itself or to a missing
    one, and a modality whose others are all missing gets an all-zero attention read-out (empty
    softmax -> zeros, no NaN), so missing inputs cannot leak into anyone's context.
    """

    def __init__(self, groups: int, dim: int):
        super().__init__()
        self.scale = dim ** -0.5
        self.to_q = GroupedLinear(groups, dim, dim)
        self.to_k = GroupedLinear(groups, dim, dim, bias=False)   # a key bias shifts every logit alike: no gradient
        self.to_v = GroupedLinear(groups, dim, dim)
        self.to_context = nn.Sequential(GroupedLayerNorm(groups, dim), GroupedLinear(groups, dim, dim), nn.GELU())
        self.register_buffer("not_self", ~torch.eye(groups, dtype=torch.bool), persistent=False)

    def forward(self, summary, present):
        q, k, v = (proj(summary).transpose(0, 1) for proj in (self.to_q, self.to_k, self.to_v))  # each [B, M, d]
        logits = q @ k.transpose(1, 2) * self.scale                                     # [B, M target, M source]
        weights = masked_softmax(logits, present.unsqueeze(1) & self.not_self, dim=-1)
        return self.to_context((weights @ v).transpose(0, 1))                            # [M, B, d]


class CrossModalRouter(nn.Module):
    """Routes each modality through slot kernels conditioned on the other two: [M, B, N, d] -> [M, B, N, d].

    kernel_m = σ(α_m)·base_m + (1 − σ(α_m))·ΔW_m(context_m), L2-normalised per slot, softmax
    temperature ``temperature``. σ keeps the mix in (0, 1) with a gradient everywhere (the seed's
    clamp had none at the bounds); the normalisation stops the kernel scale from drifting. ΔW is
    generated per sample (the seed averaged it over the batch, which made one sample's prediction
    depend on the others in its batch). ``rank`` > 0 factorises the seed's linear d -> H·S·dh
    generator: the context gives ``rank`` coefficients that mix a bank of ``rank`` learned kernels
    (the full generator was the costliest layer of the model); ``rank`` = 0 keeps the seed's generator.
    """

    def __init__(self, dim: int, heads: int, slots: int, groups: int = 3, temperature: float = 1.0,
                 ffn_ratio: int = 4, dropout: float = 0.0, rank: int = 16):
        super().__init__()
        self.heads, self.slots, self.dim_head = heads, slots, dim // heads
        self.temperature = float(temperature)
        self.context = ModalityContext(groups, dim)
        self.to_coef = GroupedLinear(groups, dim, rank) if rank > 0 else nn.Identity()
        width, kernel_size = (rank if rank > 0 else dim), heads * slots * self.dim_head
        # rank > 0: [M, rank, H*S*dh] bank of kernels; rank 0: the seed's linear generator's weight
        self.kernel_bank = nn.Parameter(torch.empty(groups, width, kernel_size).uniform_(-width ** -0.5, width ** -0.5))
        self.base_kernel = nn.Parameter(torch.randn(groups, 1, kernel_size) / math.sqrt(self.dim_head))
        self.mix_logit = nn.Parameter(torch.zeros(groups, 1, 1))                         # σ(0) = 0.5
        self.norm = GroupedLayerNorm(groups, dim, bias=False)   # a bias would be cancelled by the token softmax
        self.to_out = GroupedLinear(groups, dim, dim, bias=False)
        self.ffn = GroupedFeedForward(groups, dim, ffn_ratio, dropout)

    def kernels(self, context: torch.Tensor) -> torch.Tensor:
        """[M, B, d] context -> unit-norm slot kernels [M, B, H, S, dh]."""
        m, b, _ = context.shape
        mix = torch.sigmoid(self.mix_logit)                                              # [M, 1, 1]
        # σ·base + (1-σ)·(coef @ bank) in one baddbmm: the mixing weights scale the small operands only
        kernel = torch.baddbmm(mix * self.base_kernel, (1 - mix) * self.to_coef(context), self.kernel_bank)
        kernel = kernel.view(m, b, self.heads, self.slots, self.dim_head)
        return kernel * torch.rsqrt(kernel.pow(2).sum(-1, keepdim=True).clamp_min(1e-12))   # unit L2 per slot

    def forward(self, x, present):
        kernel = self.kernels(self.context(x.mean(dim=2), present))
        read, _ = route_through_slots(split_heads(self.norm(x), self.heads), kernel, kernel,
                                      temperature=self.temperature)                     # [M, B, H, N, dh]
        x = x + self.to_out(merge_heads(read))
        return x + self.ffn(x)


class MemoryGuidedFusion(nn.Module):
    """Gated additive fusion: [M, B, N, d] + [B, M] presence -> fused [B, d], gates [M, B, d].

    ``mean`` divides the gated sum by the number of present modalities, so the classifier input
    does not shrink as modalities go missing.

    Each modality's gate reads a context token (built from the other present modalities) through
    shared gate slots; the softmax runs over the SLOT dimension (temperature ``temperature``), so
    the gate depends on the context. Missing modalities get no share of the sum.
    """

    def __init__(self, dim: int, heads: int, slots: int, groups: int = 3, temperature: float = 1.0,
                 mean: bool = True):
        super().__init__()
        self.heads, self.temperature, self.mean = heads, float(temperature), mean
        self.context = ModalityContext(groups, dim)
        self.norm = nn.LayerNorm(dim)                  # shared by the three context tokens (seed)
        self.gate_kernel = nn.Parameter(torch.randn(heads, slots, dim // heads) / math.sqrt(dim // heads))
        self.to_gate = GroupedLinear(groups, dim, dim)

    def slot_weights(self, context: torch.Tensor, kernel: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[M, B, d] context -> [M, B, H, S] slot weights (sum to 1 over S)."""
        m, b, d = context.shape
        kernel = F.normalize(self.gate_kernel, p=2, dim=-1) if kernel is None else kernel  # [H, S, dh]
        x = self.norm(context).view(m * b, self.heads, d // self.heads).transpose(0, 1)  # [H, M*B, dh]
        logits = (x @ kernel.transpose(-1, -2)).transpose(0, 1)                          # [M*B, H, S]
        return torch.softmax(logits / max(self.temperature, 1e-6), dim=-1).reshape(m, b, self.heads, -1)

    def forward(self, x, present):
        summary = x.mean(dim=2)                                                          # [M, B, d]
        kernel = F.normalize(self.gate_kernel, p=2, dim=-1)
        weights = self.slot_weights(self.context(summary, present), kernel)              # [M, B, H, S]
        read = (weights.transpose(0, 2).flatten(1, 2) @ kernel)                          # [H, B*M, dh]
        read = read.view(self.heads, -1, x.shape[0], kernel.shape[-1]).permute(2, 1, 0, 3).flatten(2)  # [M, B, d]
        gates = torch.sigmoid(self.to_gate(read))                                        # [M, B, d]
        fused = masked_fill_zero(gates * summary, present.t()).sum(dim=0)                # [B, d]
        if self.mean:   # same scale with one, two or three present modalities
            fused = fused / present.sum(dim=1, keepdim=True).clamp_min(1).to(fused.dtype)
        return fused, gates


# ---------------------------------------------------------------------------------------------
# optional raw-text encoder
# ---------------------------------------------------------------------------------------------

class BertTextEncoder(nn.Module):
    """Raw strings -> BERT token states [B, T, hidden], token mask [B, T], presence [B] (optional extra).

    Needs ``transformers`` (``pip install merbench-plugins[bert]``). ``name`` is a hub name or a local
    directory; nothing is fetched until the model is built. Frozen by default (``finetune=False``):
    BERT then runs without gradients and in eval mode.
    """

    def __init__(self, name: str, finetune: bool = False, max_length: int = 512):
        super().__init__()
        try:
            import transformers
        except ImportError as err:
            raise ImportError("MRG-Net's text_encoder='bert' needs the optional 'transformers' package: "
                              "pip install merbench-plugins[bert]  (or keep the default "
                              "--text_encoder features, which uses MERBench's pre-extracted text features)") from err
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        self.bert = transformers.AutoModel.from_pretrained(name)
        self.finetune = bool(finetune)
        self.max_length = int(min(max_length, getattr(self.tokenizer, "model_max_length", max_length)))
        self.hidden_size = self.bert.config.hidden_size
        if not self.finetune:
            self.bert.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.bert.train(mode and self.finetune)   # a frozen encoder keeps its dropout off
        return self

    def forward(self, texts, device=None):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("text_encoder='bert' expects batch['raw_texts'] to be a list of strings, one per sample")
        device = device if device is not None else next(self.bert.parameters()).device
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", return_special_tokens_mask=True)
        mask = enc["attention_mask"].bool().to(device)
        content = mask & ~enc["special_tokens_mask"].bool().to(device)   # an empty string is a missing text
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            states = self.bert(input_ids=enc["input_ids"].to(device), attention_mask=mask.long()).last_hidden_state
        return states, mask, content.any(dim=1)
