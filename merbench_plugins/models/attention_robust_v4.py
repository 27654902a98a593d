"""AttentionRobustV4: V2 plus cross-modal contrastive alignment, gated uncertainty fusion and
focal / label-smoothing classification (seed v4_tasks). With every V4 flag off it is exactly V2.
"""
from ..config import AttentionRobustV4Config
from ..modules.fusion import GatedUncertaintyFusion
from ..modules.losses import FocalLabelSmoothingLoss, ModalityContrastiveLoss
from ..registry import register_model
from .attention_robust_v2 import AttentionRobustV2


@register_model("attention_robust_v4", config=AttentionRobustV4Config)
class AttentionRobustV4(AttentionRobustV2):
    """V2 + InfoNCE alignment of present modality pairs + gated fusion + focal/label-smoothing loss."""

    config_cls = AttentionRobustV4Config

    def __init__(self, args):
        super().__init__(args)
        cfg = self.cfg
        self.contrastive = (ModalityContrastiveLoss(cfg.hidden_dim, cfg.contrastive_dim, cfg.contrastive_temperature)
                            if cfg.use_contrastive and cfg.contrastive_weight > 0 else None)

    def build_fusion(self, cfg):
        if not cfg.use_gated_fusion:
            return super().build_fusion(cfg)
        return GatedUncertaintyFusion(cfg.hidden_dim, temperature=cfg.fusion_temperature, gate_alpha=cfg.gate_alpha,
                                      learnable_alpha=cfg.learnable_gate_alpha,
                                      use_uncertainty=cfg.use_uncertainty_fusion and cfg.use_vae)

    def fuse(self, z, mu, logvar, mask, bias=None):
        if isinstance(self.fusion, GatedUncertaintyFusion):
            return self.fusion(z, logvar, mask, means=mu, bias=bias)
        return super().fuse(z, mu, logvar, mask, bias)

    def auxiliary_loss(self, inputs, present, z, mu, logvar):
        loss = super().auxiliary_loss(inputs, present, z, mu, logvar)
        if self.contrastive is not None:
            loss = loss + self.cfg.contrastive_weight * self.contrastive(mu, present)
        return loss

    def classification_loss(self):
        """The runners use this instead of plain CE (MERBench's main-release.py keeps its CE)."""
        return FocalLabelSmoothingLoss(gamma=self.cfg.focal_gamma, smoothing=self.cfg.label_smoothing)
