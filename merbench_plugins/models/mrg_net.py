"""MRG-Net: ALMT-style memory-routed fusion for MERBench (seed `mrg_net_almt_mrg_cn.md`, SPEC 3.4).

projection -> FixedLenPool to L tokens -> per-modality Transformer with one extra token ->
memory-slot encoders (MiME) -> cross-modal router (kernels from the other two modalities) ->
memory-guided gated fusion -> heads for MERBench's emotion classes and valence.

Inputs: utt features [B, D] (length-1 sequences) or frames [B, T, D] (zero-padded; the padding
mask comes from all-zero frames, or from ``batch['<key>_mask']``). A modality whose input is all
zero, or that ``batch['masks']`` marks absent, is missing: its input is zeroed at the door, it is
kept out of every other modality's context and out of the fusion, so it cannot change the output.
"""
import torch
import torch.nn as nn

from ..config import MrgNetConfig
from ..modules.dropout import Dropout
from ..modules.encoders import output_head
from ..modules.masking import MODALITIES, RobustRecipe, frame_mask, masked_fill_zero
from ..modules.mrg import (BertTextEncoder, CrossModalRouter, FixedLenPool, HeadwiseMemoryRouter, MemoryGuidedFusion,
                           SequenceEmbedder)
from ..registry import register_model

TEXT = MODALITIES.index("texts")


def _as_sequence(x: torch.Tensor) -> torch.Tensor:
    """utt [B, D] -> [B, 1, D]; frames stay [B, T, D]."""
    if x.dim() == 2:
        return x.unsqueeze(1)
    if x.dim() == 3:
        return x
    raise ValueError(f"MRG-Net expects [B, D] (utt) or [B, T, D] (frames) inputs, got shape {tuple(x.shape)}")


@register_model("mrg_net", config=MrgNetConfig)
class MRGNet(nn.Module):
    """MRG-Net: memory-slot encoders, cross-modal routing and memory-guided gated fusion over 3 modalities."""

    def __init__(self, args):
        super().__init__()
        cfg = MrgNetConfig.from_args(args).check()
        self.cfg = cfg
        self.grad_clip = cfg.grad_clip
        d, heads = cfg.hidden_dim, cfg.memory_heads
        if heads < 1 or d % heads:
            raise ValueError(f"MRG-Net: hidden_dim ({d}) must be divisible by memory_heads ({heads}); "
                             f"e.g. --hidden_dim 128 --memory_heads 4")
        text_dim = args.text_dim
        self.text_bert = None
        if cfg.text_encoder == "bert":
            self.text_bert = BertTextEncoder(cfg.bert_name, finetune=cfg.bert_finetune)
            text_dim = self.text_bert.hidden_size
        # order audio / text / video, as MODALITIES and batch['masks']
        self.input_proj = nn.ModuleList(nn.Linear(int(dim), d) for dim in (args.audio_dim, text_dim, args.video_dim))
        # utt features are single tokens: stretching one vector to L copies would add cost, not information
        self.seq_len = 1 if getattr(args, "feat_type", "utt") == "utt" else cfg.pool_len
        self.pool = FixedLenPool(self.seq_len, cfg.pool_mode)
        self.embedder = SequenceEmbedder(3, self.seq_len, d, heads, cfg.embed_depth, cfg.ffn_ratio, cfg.dropout)
        self.memory_encoder = HeadwiseMemoryRouter(d, heads, (cfg.slots_a, cfg.slots_t, cfg.slots_v),
                                                   cfg.ffn_ratio, cfg.dropout)
        self.cross_router = CrossModalRouter(d, heads, cfg.cross_slots, temperature=cfg.tau_x,
                                             ffn_ratio=cfg.ffn_ratio, dropout=cfg.dropout, rank=cfg.kernel_rank)
        self.fusion = MemoryGuidedFusion(d, heads, cfg.gate_slots, temperature=cfg.tau_g, mean=cfg.fusion_mean)
        # the same recipe --robust_recipe applies outside other models
        self.recipe = RobustRecipe(cfg.corrupt_aug, cfg.modality_dropout, cfg.corrupt_strength, cfg.modality_dropout_mode)
        self.head_drop = Dropout(cfg.dropout)
        self.fc_out_1 = nn.Linear(d, int(getattr(args, "output_dim1", 0) or 0))
        self.fc_out_2 = output_head(d, int(getattr(args, "output_dim2", 0) or 0))

    def _inputs(self, batch):
        """-> three (sequence [B, T, D], frame validity [B, T]) pairs (audio, text, video) and presence [B, 3]."""
        seqs, masks = [], []
        for key in MODALITIES:
            if key == "texts" and self.text_bert is not None:
                if "raw_texts" not in batch:
                    raise KeyError("MRG-Net with text_encoder='bert' needs batch['raw_texts'] (a list of strings); "
                                   "use --text_encoder features for MERBench's pre-extracted text features")
                device = batch["audios"].device
                seq, mask, _ = self.text_bert(batch["raw_texts"], device=device)
            else:
                seq = _as_sequence(batch[key])
                mask = frame_mask(seq)
                if batch.get(f"{key}_mask") is not None and seq.shape[1] > 1:
                    mask = mask & batch[f"{key}_mask"].to(device=mask.device).bool()
            seqs.append(seq)
            masks.append(mask)
        present = torch.stack([m.any(dim=1) for m in masks], dim=1)                       # [B, 3]
        if batch.get("masks") is not None:
            present = present & batch["masks"].to(device=present.device).bool()
        masks = [m & present[:, i:i + 1] for i, m in enumerate(masks)]
        return seqs, masks, present

    def forward(self, batch):
        seqs, masks, present = self._inputs(batch)
        if self.training:   # robustness levers act in training only, from the first step
            seqs, present, _ = self.recipe.draw([masked_fill_zero(x, m) for x, m in zip(seqs, masks)], present)
            masks = [m & present[:, i:i + 1] for i, m in enumerate(masks)]
        # zero a missing modality's input before anything touches it (garbage, NaN included, cannot leak)
        tokens = torch.stack([self.pool(proj(masked_fill_zero(x, m)), m)
                              for proj, x, m in zip(self.input_proj, seqs, masks)])  # [3, B, L, d] (L = 1 for utt)
        h = self.embedder(tokens)                                                    # [3, B, L+1, d]
        h = self.memory_encoder(h)
        h = self.cross_router(h, present)
        features, _ = self.fusion(h, present)                                        # [B, d]
        out = self.head_drop(features)
        interloss = torch.zeros((), device=features.device, dtype=features.dtype)
        return features, self.fc_out_1(out), self.fc_out_2(out), interloss
