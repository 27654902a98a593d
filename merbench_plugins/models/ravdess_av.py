"""RAVDESS audio-visual model: video ResNet-18 over 8 frames + audio ResNet-18 on the log-mel, fused.

Inputs (MERBench batch, from the ``RAVDESS`` dataset's collater): ``batch['videos']`` [B, T, 3, H, W]
in [0, 1] and ``batch['audios']`` [B, 1, 64, 188] log-mel; ``batch['texts']`` is ignored. Fusions:
``gated`` (learned audio weight, gate bias -1 so it starts at 27 % audio), ``late`` (average of the
per-modality class probabilities), ``concat`` and ``xattn`` (audio tokens and video frames attend
to each other, then the gate); ``audio`` / ``video`` are the unimodal baselines the seed's claim
("fusion beats the best single modality") is measured against. An all-zero modality is missing
and gets zero weight; modality dropout drops one modality of a training sample, never both.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import RavdessAVConfig
from ..modules.audio import SpecAugment
from ..modules.dropout import Dropout
from ..modules.masking import ModalityDropout, any_or_all, masked_mean
from ..modules.resnet import ResNet18, SmallAudioCNN, load_torchvision_resnet
from ..registry import register_dataset, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GatedFusion(nn.Module):
    """fused = w * audio + (1 - w) * video with w = sigmoid(gate([audio, video])).

    The last layer's bias starts at ``bias`` (-1: w = 0.27) so early, noisy audio cannot swamp
    the video. ``simple``: the seed's original single Linear; else Linear-ReLU-Dropout-Linear.
    A sample with one modality present uses exactly that one.
    """

    def __init__(self, dim: int, simple: bool = False, bias: float = -1.0, dropout: float = 0.2):
        super().__init__()
        if simple:
            self.gate = nn.Linear(2 * dim, 1)
            last = self.gate
        else:
            self.gate = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(inplace=True), Dropout(dropout),
                                      nn.Linear(dim, 1))
            last = self.gate[-1]
        nn.init.constant_(last.bias, bias)

    def forward(self, audio, video, present):                       # [B, H], [B, H], [B, 2] bool
        w = torch.sigmoid(self.gate(torch.cat([audio, video], dim=-1)))            # [B, 1] audio weight
        w = torch.where(present.all(dim=1, keepdim=True), w, present[:, :1].to(w.dtype))
        return w * audio + (1 - w) * video, w


class CrossModalAttention(nn.Module):
    """Audio time tokens attend to the video frames and the frames to the audio tokens (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.norm_audio = nn.LayerNorm(dim)
        self.norm_video = nn.LayerNorm(dim)
        self.audio_to_video = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.video_to_audio = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, audio, video, audio_valid, video_valid):     # [B, Ta, H], [B, Tv, H], [B, Ta], [B, Tv]
        qa, qv = self.norm_audio(audio), self.norm_video(video)
        # a sample whose other modality is missing has no valid key: any_or_all keeps the softmax
        # defined, and the result is multiplied away below
        from_video, _ = self.audio_to_video(qa, qv, qv, key_padding_mask=~any_or_all(video_valid))
        from_audio, _ = self.video_to_audio(qv, qa, qa, key_padding_mask=~any_or_all(audio_valid))
        has_video = video_valid.any(dim=1).to(audio.dtype)[:, None, None]
        has_audio = audio_valid.any(dim=1).to(video.dtype)[:, None, None]
        return audio + from_video * has_video, video + from_audio * has_audio


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [B] bool: the sample has any non-zero value (all-zero = missing modality)."""
    return x.flatten(1).ne(0).any(dim=1)


# the dataset by reference: imported when MERBench builds its maps, so models/ never imports data/
register_dataset("RAVDESS", "merbench_plugins.data.ravdess:RAVDESS",
                 description="RAVDESS speech, audio-visual, actor-independent folds")


@register_model("ravdess_av", config=RavdessAVConfig, dataset="RAVDESS", feat_types=("raw",))
class RavdessAV(nn.Module):
    """RAVDESS audio-visual ResNet-18s with gated / late / concat / xattn fusion (or one modality)."""

    def __init__(self, args):
        super().__init__()
        cfg = self.cfg = RavdessAVConfig.from_args(args).check()
        self.grad_clip = cfg.grad_clip
        self.fusion = cfg.fusion
        num_classes = int(getattr(args, "output_dim1", 0) or cfg.ravdess_classes)
        output_dim2 = int(getattr(args, "output_dim2", 0) or 0)
        h = cfg.hidden_dim
        self.use_audio, self.use_video = cfg.fusion != "video", cfg.fusion != "audio"

        if self.use_video:
            self.video_encoder = ResNet18(3, cfg.resnet_width)
            if cfg.video_weights:
                load_torchvision_resnet(self.video_encoder, cfg.video_weights, "video")
            self.video_proj = nn.Linear(self.video_encoder.out_channels, h)
            self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.use_audio:
            self.audio_norm = nn.BatchNorm2d(cfg.n_mels)        # per mel bin: the log-mel is not zero-mean
            self.spec_augment = SpecAugment(cfg.spec_freq_mask, cfg.spec_time_mask, cfg.spec_num_masks,
                                            cfg.spec_p if cfg.use_spec_augment else 0.0)
            if cfg.audio_encoder == "cnn":
                if cfg.audio_weights:
                    raise ValueError("--audio_weights loads ResNet-18 weights; use --audio_encoder resnet18")
                self.audio_encoder = SmallAudioCNN(1)
            else:
                self.audio_encoder = ResNet18(1, cfg.resnet_width)
                if cfg.audio_weights:
                    load_torchvision_resnet(self.audio_encoder, cfg.audio_weights, "audio")
            self.audio_proj = nn.Linear(self.audio_encoder.out_channels, h)

        both = self.use_audio and self.use_video
        self.modality_dropout = ModalityDropout(cfg.modality_dropout if (both and cfg.use_modality_dropout) else 0.0)
        if cfg.fusion == "xattn":
            self.cross_attention = CrossModalAttention(h, cfg.xattn_heads, cfg.dropout)
        if cfg.fusion in ("gated", "xattn"):
            self.gate = GatedFusion(h, cfg.simple_gate, cfg.gate_bias)
        if cfg.fusion == "concat":
            self.concat_proj = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(inplace=True))
        if cfg.fusion == "late":
            self.audio_head = nn.Linear(h, num_classes)
            self.video_head = nn.Linear(h, num_classes)
        else:
            self.emo_head = nn.Linear(h, num_classes)
        self.val_head = nn.Linear(h, output_dim2) if output_dim2 > 0 else None
        self.output_dim2 = output_dim2
        self.dropout = Dropout(cfg.dropout)
        self.class_weight = None

    def set_epoch(self, epoch: int):
        self.modality_dropout.set_epoch(epoch)

    def set_class_weights(self, weights=None):
        """Per-class weights of the cross-entropy (``ravdess-train --class_weights balanced``); None: unweighted."""
        self.class_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)

    def classification_loss(self) -> nn.Module:
        """The engine's classification loss: cross-entropy, class-weighted after :meth:`set_class_weights`."""
        return nn.CrossEntropyLoss(weight=self.class_weight)

    # -- encoders -------------------------------------------------------------------------------

    def encode_audio(self, audios: torch.Tensor) -> torch.Tensor:
        """[B, 1, F, T] (or [B, F, T]) log-mel -> [B, T', H] time tokens."""
        x = audios.unsqueeze(1) if audios.dim() == 3 else audios
        if x.dim() != 4 or x.size(1) != 1 or x.size(2) != self.cfg.n_mels:
            raise ValueError(f"ravdess_av expects audios [B, 1, {self.cfg.n_mels}, T] log-mel (the RAVDESS "
                             f"dataset), got {tuple(audios.shape)}")
        x = self.audio_norm(x.transpose(1, 2)).transpose(1, 2)      # normalise each mel bin, [B, 1, F, T]
        x = self.spec_augment(x)
        fmap = self.audio_encoder(x)                                 # [B, C, F', T']
        return self.audio_proj(fmap.mean(dim=2).transpose(1, 2))     # [B, T', H]

    def encode_video(self, videos: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] in [0, 1] -> [B, T, H] frame tokens (all frames in one ResNet batch)."""
        if videos.dim() != 5 or videos.size(2) != 3:
            raise ValueError(f"ravdess_av expects videos [B, T, 3, H, W] (the RAVDESS dataset), "
                             f"got {tuple(videos.shape)}")
        b, t = videos.shape[:2]
        x = (videos.flatten(0, 1) - self.pixel_mean) / self.pixel_std                     # [B*T, 3, H, W]
        if self.training and self.cfg.video_flip:            # one flip per clip, so frames stay consistent
            flip = (torch.rand(b, device=x.device) < 0.5).repeat_interleave(t)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        fmap = self.video_encoder(x)                                                       # [B*T, C, h, w]
        return self.video_proj(fmap.mean(dim=(2, 3))).view(b, t, -1)                      # [B, T, H]

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, batch):
        audios, videos = batch.get("audios"), batch.get("videos")
        for key, needed, x in (("audios", self.use_audio, audios), ("videos", self.use_video, videos)):
            if needed and x is None:
                raise KeyError(f"ravdess_av (fusion={self.fusion}) needs batch[{key!r}]; use the RAVDESS dataset")
        ref = videos if self.use_video else audios
        b, device = ref.size(0), ref.device
        no = torch.zeros(b, dtype=torch.bool, device=device)
        present = torch.stack([_nonzero(audios) if self.use_audio else no,
                               _nonzero(videos) if self.use_video else no], dim=1)        # [B, 2] audio, video
        if batch.get("masks") is not None:                   # MERBench order audio/text/video
            present = present & batch["masks"].to(device).bool()[:, [0, 2]]
        present = self.modality_dropout(present)
        keep = present.float()

        h_audio = h_video = None
        if self.use_audio:
            a_tokens = self.encode_audio(audios)                                         # [B, Ta, H]
            a_valid = present[:, :1].expand(-1, a_tokens.size(1))
        if self.use_video:
            v_tokens = self.encode_video(videos)                                         # [B, Tv, H]
            frame_present = videos.flatten(2).ne(0).any(dim=2)                           # [B, Tv]: zero padding
            v_valid = frame_present & present[:, 1:]
        if self.fusion == "xattn":
            a_tokens, v_tokens = self.cross_attention(a_tokens, v_tokens, a_valid, v_valid)
        if self.use_audio:
            h_audio = a_tokens.mean(dim=1) * keep[:, :1]                                 # [B, H]
        if self.use_video:
            h_video = masked_mean(v_tokens, v_valid, dim=1)                               # [B, H]

        if self.fusion == "late":
            features = masked_mean(torch.stack([h_audio, h_video], dim=1), any_or_all(present), dim=1)
            logp = torch.stack([F.log_softmax(self.audio_head(self.dropout(h_audio)), dim=-1),
                                F.log_softmax(self.video_head(self.dropout(h_video)), dim=-1)], dim=1)  # [B, 2, C]
            weight = any_or_all(present).float()
            weight = weight / weight.sum(dim=1, keepdim=True)
            # log of the average probability of the present modalities: a valid logit vector for CE
            emos_out = torch.logsumexp(logp + torch.log(weight)[..., None], dim=1)     # [B, C]
        else:
            if self.fusion in ("gated", "xattn"):
                features, _ = self.gate(h_audio, h_video, present)
            elif self.fusion == "concat":
                features = self.concat_proj(torch.cat([h_audio, h_video], dim=-1))
            else:
                features = h_audio if self.fusion == "audio" else h_video
            emos_out = self.emo_head(self.dropout(features))
        vals_out = self.val_head(self.dropout(features)) if self.val_head is not None else features.new_zeros(b, 0)
        interloss = torch.zeros((), device=device)
        return features, emos_out, vals_out, interloss
