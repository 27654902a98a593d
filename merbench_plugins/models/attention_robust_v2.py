"""AttentionRobustV2: variational encoders, uncertainty-weighted fusion over present modalities,
proxy cross-modal attention and modality dropout (P-RMF-inspired; seeds v2_plan / v2_deep_redesign).

Each flag of :class:`AttentionRobustV2Config` switches its part off cleanly for the ablations.
"""
import torch
import torch.nn as nn

from ..config import AttentionRobustV2Config
from ..modules.encoders import MultimodalDecoder, MultimodalVariationalEncoder, output_head
from ..modules.fusion import ProxyAttention, UncertaintyWeightedFusion
from ..modules.grouped import GroupedLinear
from ..modules.losses import kl_to_prior, masked_average, pairwise_kl
from ..modules.masking import (MODALITIES, PRESENT_KEY, STD_KEY, ModalityDropout, any_or_all, corrupt_inputs,
                               input_statistics, is_batched, masked_fill_zero, presence_mask)
from ..registry import register_model

FRAME_TYPES = ("frm_align", "frm_unalign")


def check_feat_type(feat_type):
    if feat_type not in ("utt",) + FRAME_TYPES:
        raise ValueError(f"feat_type={feat_type!r}: expected one of utt, frm_align, frm_unalign")
    return feat_type in FRAME_TYPES


@register_model("attention_robust_v2", config=AttentionRobustV2Config)
class AttentionRobustV2(nn.Module):
    """Missing-modality-robust fusion: confidence-weighted VAE posteriors + proxy attention."""

    config_cls = AttentionRobustV2Config

    def __init__(self, args):
        super().__init__()
        cfg = self.cfg = self.config_cls.from_args(args)
        self.grad_clip = cfg.grad_clip
        self.epoch = 0
        h = cfg.hidden_dim
        dims = (args.audio_dim, args.text_dim, args.video_dim)
        sequence = check_feat_type(args.feat_type)
        self.encoder = MultimodalVariationalEncoder(dims, h, cfg.dropout, variational=cfg.use_vae,
                                                    improved=cfg.improved_encoder, sequence=sequence,
                                                    seq_encoder=cfg.seq_encoder)
        self.decoders = (MultimodalDecoder(dims, h, tied_to=self.encoder if cfg.tied_decoder else None,
                                           mode=cfg.recon_mode, dims_per_step=cfg.recon_dims)
                         if cfg.recon_weight > 0 else None)
        self.modality_dropout = ModalityDropout(cfg.modality_dropout if cfg.use_modality_dropout else 0.0,
                                                cfg.modality_dropout_warmup, cfg.modality_dropout_mode)
        # per-modality reliability: a logit that the modality's input is corrupted, from its posterior mean
        self.reliability = GroupedLinear(3, h, 1, group_dim=1) if cfg.reliability_weight > 0 else None
        self.fusion = self.build_fusion(cfg)
        self.proxy_attention = ProxyAttention(h, cfg.num_attention_heads) if cfg.use_proxy_attention else None
        self.fc_out_1 = nn.Linear(h, args.output_dim1)
        self.fc_out_2 = output_head(h, args.output_dim2)
        self.last_fusion_weights = None

    def build_fusion(self, cfg):
        return UncertaintyWeightedFusion(cfg.fusion_temperature, use_uncertainty=cfg.use_uncertainty_fusion and cfg.use_vae)

    @staticmethod
    def input_statistics(batch):
        """Per-sample presence and feature std, for an engine to compute once per dataset (see encode)."""
        return input_statistics(batch)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)
        self.modality_dropout.set_epoch(epoch)

    def encode(self, batch):
        # presence and feature std: precomputed per sample where the engine did (input_statistics), else here
        present = batch[PRESENT_KEY] if PRESENT_KEY in batch else presence_mask(batch)     # [B, 3]
        inputs = [batch[k] for k in MODALITIES]
        if batch.get("masks") is not None:
            # absent inputs are zeroed so that NaN/garbage in a masked-out modality cannot reach any gradient
            # (without explicit masks an absent modality is all zero already)
            inputs = [masked_fill_zero(x, present[:, m]) for m, x in enumerate(inputs)]
        corrupted = torch.zeros_like(present)
        if self.training and self.cfg.corrupt_aug > 0:                                     # training only
            inputs, corrupted = corrupt_inputs(inputs, present, self.cfg.corrupt_aug, self.cfg.corrupt_strength,
                                               std=batch.get(STD_KEY))
        self.keep_for_inspection(last_corrupted=corrupted)
        z, mu, logvar = self.encoder(inputs)
        return inputs, present, corrupted, z, mu, logvar                                   # z, mu, logvar: [B, 3, H]

    def keep_for_inspection(self, **tensors):
        """``last_*`` attributes for tests and analysis; skipped under vmap / torch.compile, where a tensor
        kept on the module would outlive the transform it belongs to."""
        for name, t in tensors.items():
            if not is_batched(t):
                setattr(self, name, t.detach())

    def reliability_logits(self, mu):
        """[B, 3, H] -> [B, 3] logit that each modality's input is corrupted (None without the head)."""
        return None if self.reliability is None else self.reliability(mu).squeeze(-1)

    def fuse(self, z, mu, logvar, mask, bias=None):
        return self.fusion(z, logvar, mask, bias=bias)

    def forward(self, batch):
        inputs, present, corrupted, z, mu, logvar = self.encode(batch)
        # what is dropped is exactly what is fused (the seed fused mu and dropped z: SPEC 6)
        fuse_mask = any_or_all(self.modality_dropout(present))
        corrupt_logit = self.reliability_logits(mu)                                        # [B, 3] or None
        # fusion logits + log P(clean): a modality judged corrupted loses weight multiplicatively
        bias = None if corrupt_logit is None else nn.functional.logsigmoid(-corrupt_logit)
        proxy, weights = self.fuse(z, mu, logvar, fuse_mask, bias)                         # [B, H], [B, 3]
        features = self.proxy_attention(proxy, z, fuse_mask) if self.proxy_attention is not None else proxy
        self.keep_for_inspection(last_fusion_weights=weights)
        if self.training:
            interloss = self.auxiliary_loss(inputs, present, z, mu, logvar)
            if corrupt_logit is not None:
                bce = nn.functional.binary_cross_entropy_with_logits(
                    corrupt_logit, corrupted.to(corrupt_logit.dtype), reduction="none")
                interloss = interloss + self.cfg.reliability_weight * masked_average(bce, present)
        else:
            interloss = torch.zeros((), device=features.device)
        return features, self.fc_out_1(features), self.fc_out_2(features), interloss

    def auxiliary_loss(self, inputs, present, z, mu, logvar):
        """KL (warmed up), reconstruction and cross-modal KL, over present modalities only."""
        cfg = self.cfg
        loss = torch.zeros((), device=z.device)
        if cfg.use_vae and cfg.kl_weight > 0:
            warm = min(1.0, (self.epoch + 1) / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
            loss = loss + cfg.kl_weight * warm * masked_average(kl_to_prior(mu, logvar), present)
        if cfg.use_vae and cfg.cross_kl_weight > 0:
            loss = loss + cfg.cross_kl_weight * pairwise_kl(mu, logvar, present)
        if self.decoders is not None:
            loss = loss + cfg.recon_weight * masked_average(self.decoders(z, inputs), present)  # [B, 3] errors
        return loss
