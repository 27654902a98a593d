"""Reference `attention` baseline: MERBench's unimodal encoders + concat + attention fusion, device-agnostic.

Registered for standalone comparisons only; inside MERBench the upstream `attention` is used.
"""
import torch
import torch.nn as nn

from ..config import AttentionConfig
from ..modules.encoders import LSTMEncoder, MLPEncoder, output_head
from ..registry import register_model


@register_model("attention", config=AttentionConfig, install=False)
class Attention(nn.Module):
    """MERBench's attention baseline (our code): 3 encoders, an MLP scores the modalities, weighted sum."""

    def __init__(self, args):
        super().__init__()
        cfg = AttentionConfig.from_args(args).check()
        self.grad_clip = cfg.grad_clip
        h = cfg.hidden_dim
        encoder = MLPEncoder if args.feat_type == "utt" else LSTMEncoder
        self.encoders = nn.ModuleList(encoder(d, h, cfg.dropout) for d in (args.audio_dim, args.text_dim, args.video_dim))
        self.attention_mlp = MLPEncoder(h * 3, h, cfg.dropout)
        self.fc_att = nn.Linear(h, 3)
        self.fc_out_1 = nn.Linear(h, args.output_dim1)
        self.fc_out_2 = output_head(h, args.output_dim2)

    def forward(self, batch):
        hidden = torch.stack([enc(batch[k]) for enc, k in zip(self.encoders, ("audios", "texts", "videos"))], dim=2)  # [B, H, 3]
        attention = self.fc_att(self.attention_mlp(hidden.transpose(1, 2).flatten(1))).unsqueeze(2)  # [B, 3, 1]
        features = torch.bmm(hidden, attention).squeeze(2)                                        # [B, H]
        interloss = torch.zeros((), device=features.device)
        return features, self.fc_out_1(features), self.fc_out_2(features), interloss
