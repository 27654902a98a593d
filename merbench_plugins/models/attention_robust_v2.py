"""AttentionRobustV2: variational encoders, fusion over present modalities weighted by confidence and by
reliability evidence, proxy cross-modal attention, the robustness recipe inside (P-RMF-inspired; seeds
v2_plan / v2_deep_redesign), unimodal experts and imagined latents for missing modalities.

Each flag of :class:`AttentionRobustV2Config` switches its part off cleanly for the ablations.
"""
import torch
import torch.nn as nn

from ..config import AttentionRobustV2Config
from ..modules.encoders import MultimodalDecoder, MultimodalVariationalEncoder, output_head
from ..modules.fusion import ProxyAttention, UncertaintyWeightedFusion
from ..modules.losses import kl_to_prior, masked_average, pairwise_kl
from ..modules.masking import (MODALITIES, PRESENT_KEY, STD_KEY, RobustRecipe, any_or_all, input_statistics,
                               is_batched, masked_fill_zero, presence_mask)
from ..modules.reliability import Imagination, Typicality, UnimodalExperts, agreement, typicality_penalty
from ..registry import register_model

FRAME_TYPES = ("frm_align", "frm_unalign")


def check_feat_type(feat_type):
    if feat_type not in ("utt",) + FRAME_TYPES:
        raise ValueError(f"feat_type={feat_type!r}: expected one of utt, frm_align, frm_unalign")
    return feat_type in FRAME_TYPES


@register_model("attention_robust_v2", config=AttentionRobustV2Config)
class AttentionRobustV2(nn.Module):
    """Missing-modality-robust fusion: confidence- and evidence-weighted VAE posteriors + proxy attention."""

    config_cls = AttentionRobustV2Config

    def __init__(self, args):
        super().__init__()
        cfg = self.cfg = self.config_cls.from_args(args)
        cfg.check()
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
        # the same recipe --robust_recipe applies outside other models: corruption (train-seen kinds), modality dropout
        self.recipe = RobustRecipe(cfg.corrupt_aug, cfg.modality_dropout if cfg.use_modality_dropout else 0.0,
                                   cfg.corrupt_strength, cfg.modality_dropout_mode, cfg.modality_dropout_warmup)
        self.typicality = Typicality(3, h) if cfg.typicality_weight > 0 else None
        self.experts = UnimodalExperts(3, h, args.output_dim1) if cfg.unimodal_weight > 0 else None
        self.imagination = Imagination(3, h) if cfg.imagine else None
        # fusion logit of an imagined token, learned: how much a latent guessed from the others is worth
        self.imagined_bias = nn.Parameter(torch.full((3,), -1.0)) if cfg.imagine else None
        self.fusion = self.build_fusion(cfg)
        self.proxy_attention = ProxyAttention(h, cfg.num_attention_heads) if cfg.use_proxy_attention else None
        self.fc_out_1 = nn.Linear(h, args.output_dim1)
        self.fc_out_2 = output_head(h, args.output_dim2)
        self.last_fusion_weights = None

    def build_fusion(self, cfg):
        return UncertaintyWeightedFusion(cfg.fusion_temperature, use_uncertainty=cfg.use_uncertainty_fusion and cfg.use_vae)

    @staticmethod
    def input_statistics(batch):
        """Per-sample presence and feature std, for an engine to compute once per dataset (see forward)."""
        return input_statistics(batch)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)
        self.recipe.set_epoch(epoch)

    def keep_for_inspection(self, **tensors):
        """``last_*`` attributes for tests and analysis; skipped under vmap / torch.compile, where a tensor
        kept on the module would outlive the transform it belongs to."""
        for name, t in tensors.items():
            if not is_batched(t):
                setattr(self, name, t.detach())

    def fuse(self, z, mu, logvar, mask, bias=None):
        return self.fusion(z, logvar, mask, bias=bias)

    def forward(self, batch):
        # presence and feature std: precomputed per sample where the engine did (input_statistics), else here
        present = batch[PRESENT_KEY] if PRESENT_KEY in batch else presence_mask(batch)     # [B, 3]
        # absent inputs are zeroed so that NaN/garbage, or a constant fill, in a masked-out modality cannot
        # reach any gradient
        inputs = [masked_fill_zero(batch[k], present[:, m]) for m, k in enumerate(MODALITIES)]
        # training only: corrupted inputs, and the modalities kept for fusion (what is dropped is exactly what
        # is not fused; the seed fused mu and dropped z: SPEC 6)
        inputs, kept, corrupted = self.recipe.draw(inputs, present, std=batch.get(STD_KEY))
        z, mu, logvar, first = self.encoder(inputs, return_first=True)                    # [B, 3, H] each
        tokens, means, fuse_mask, bias, imagined, has_other = self.fill_missing(z, mu, logvar, kept)
        unimodal = self.experts(means) if self.experts is not None else None              # [B, 3, C]
        bias = bias + self.evidence(first, unimodal, kept)
        fuse_mask = any_or_all(fuse_mask)
        # an imagined token has no posterior of its own: unit variance, and its learned bias decides its weight
        fuse_logvar = torch.where((fuse_mask & ~kept).unsqueeze(-1), torch.zeros_like(logvar), logvar)
        proxy, weights = self.fuse(tokens, means, fuse_logvar, fuse_mask, bias)            # [B, H], [B, 3]
        features = (self.proxy_attention(proxy, tokens, fuse_mask, bias) if self.proxy_attention is not None
                    else proxy)
        self.keep_for_inspection(last_fusion_weights=weights, last_corrupted=corrupted, last_kept=kept)
        emos_fused = self.fc_out_1(features)
        emos_out = emos_fused
        if self.cfg.expert_mix and unimodal is not None:                                   # MoMKE-style mixture
            emos_out = emos_fused + torch.einsum("bm,bmc->bc", weights, unimodal)
        if self.training:
            interloss = self.auxiliary_loss(inputs, present, z, mu, logvar)
            interloss = interloss + self.evidence_loss(first, present, corrupted, unimodal, emos_fused, mu,
                                                       imagined, has_other)
        else:
            interloss = torch.zeros((), device=features.device)
        return features, emos_out, self.fc_out_2(features), interloss

    def fill_missing(self, z, mu, logvar, kept):
        """Tokens to fuse: the kept modalities' latents, and (``imagine``) imagined latents for the others that
        have another kept modality to be imagined from. -> tokens, means, mask, bias [B, 3], imagined, has_other."""
        bias = torch.zeros(kept.shape, dtype=mu.dtype, device=mu.device)
        if self.imagination is None:
            return z, mu, kept, bias, None, None
        imagined, has_other = self.imagination(mu, kept)                                  # [B, 3, H], [B, 3]
        fill = ~kept & has_other
        tokens = torch.where(fill.unsqueeze(-1), imagined, z)
        means = torch.where(fill.unsqueeze(-1), imagined, mu)
        bias = torch.where(fill, self.imagined_bias.to(mu.dtype).expand_as(bias), bias)
        return tokens, means, kept | fill, bias, imagined, has_other

    def evidence(self, first, unimodal, kept):
        """[B, 3] fusion logits from reliability evidence: minus the typicality penalty (inputs far from the
        training distribution) plus the agreement of each modality's own prediction with the others'."""
        bias = torch.zeros(kept.shape, dtype=first.dtype, device=first.device)
        cfg = self.cfg
        if self.typicality is not None:
            score = self.typicality.score(first)
            bias = bias - cfg.typicality_weight * typicality_penalty(score, cfg.typicality_margin, cfg.typicality_low)
            self.keep_for_inspection(last_typicality=score)
        if unimodal is not None and cfg.agreement_weight > 0:
            probs = torch.softmax(unimodal.detach().float(), dim=-1)
            bias = bias + cfg.agreement_weight * agreement(probs, kept).to(bias.dtype)
        self.keep_for_inspection(last_evidence=bias)
        return bias

    def evidence_loss(self, first, present, corrupted, unimodal, emos_fused, mu, imagined, has_other):
        """Update the typicality statistics on clean present inputs, distil the fused prediction into the unimodal
        experts (clean present inputs), train the imagination on the modalities that are there."""
        cfg = self.cfg
        clean = present & ~corrupted
        loss = torch.zeros((), device=mu.device)
        if self.typicality is not None:
            self.typicality.update(first, clean)
        if self.experts is not None:
            loss = loss + cfg.unimodal_weight * UnimodalExperts.distillation(self.experts(mu), emos_fused, clean)
        if self.imagination is not None:
            loss = loss + cfg.imagine_weight * Imagination.loss(imagined, mu, present & has_other)
        return loss

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
