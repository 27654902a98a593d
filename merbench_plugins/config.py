"""Hyperparameter declarations: one dataclass per model, each field with its default, help and tuning grid.

Models call ``Config.from_args(args)``: values present (and not None) on ``args`` win, declared
defaults fill the rest, so the models train unchanged under MERBench's ``main-release.py``, under
our ``main-robust.py`` and under a foreign runner that knows none of our flags.
"""
import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List


def hp(default, help, grid=None, choices=None, aliases=(), switches=None, interval=None):
    """Declare one hyperparameter. ``grid`` is its tuning list in model-tune.yaml (None: not tuned).

    ``aliases``: other flag names for it (a seed's spelling, ``modality_dropout_p``); ``switches``:
    value-less flags that set it (``{"use_resnet_audio": "resnet18"}``); ``interval``: the values that
    make sense, e.g. ``"[0, 1)"`` or ``"(0, inf)"`` (checked by :meth:`BaseConfig.check`).
    """
    return field(default=default, metadata={"help": help, "grid": grid, "choices": choices,
                                            "aliases": tuple(aliases), "switches": dict(switches or {}),
                                            "interval": interval})


def in_interval(value, interval: str) -> bool:
    """``value`` lies in ``interval``, written ``"[0, 1)"`` / ``"(0, inf)"`` (brackets: closed, parentheses: open)."""
    lo, hi = (float(x) for x in interval[1:-1].split(","))
    above = value >= lo if interval[0] == "[" else value > lo
    below = value <= hi if interval[-1] == "]" else value < hi
    return above and below


def _flag_type(f):
    return type(f.default) if f.default is not None else str


@dataclass
class BaseConfig:
    """Options every feature model shares (MERBench's own model-tune.yaml tunes these too)."""

    hidden_dim: int = hp(128, "width of every hidden layer", grid=[64, 128, 256], interval="[1, inf)")
    dropout: float = hp(0.35, "dropout probability", grid=[0.2, 0.3, 0.35, 0.4, 0.5], interval="[0, 1)")
    grad_clip: float = hp(-1.0, "clip gradient values at this magnitude (-1 = off)", grid=[-1.0])
    lr: float = hp(1e-3, "learning rate", grid=[1e-3, 1e-4], interval="(0, inf)")

    @classmethod
    def fields(cls):
        return dataclasses.fields(cls)

    @classmethod
    def from_args(cls, args=None, **overrides):
        """Build from an argparse namespace (or dict); attributes that are missing or None get defaults."""
        src = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
        src.update(overrides)
        values = {}
        for f in cls.fields():
            v = src.get(f.name)
            if v is not None:
                values[f.name] = _coerce(f, v)
        return cls(**values)

    def check(self):
        """Refuse values outside a field's declared interval, naming the option (ValueError)."""
        for f in self.fields():
            interval, value = f.metadata.get("interval"), getattr(self, f.name)
            if interval and not isinstance(value, bool) and not in_interval(value, interval):
                raise ValueError(f"--{f.name} must lie in {interval}, got {value}")
        return self

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return {f.name: f.default for f in cls.fields()}

    @classmethod
    def grid(cls) -> Dict[str, List[Any]]:
        return {f.name: list(f.metadata["grid"]) for f in cls.fields() if f.metadata.get("grid")}

    @classmethod
    def add_arguments(cls, parser, skip=()):
        """Add every field as a command-line flag with default None (None = "take YAML, then default").

        Booleans get both forms: ``use_vae`` -> ``--use_vae`` / ``--no_vae``; ``foo`` -> ``--foo`` / ``--no_foo``.
        """
        group = parser.add_argument_group(f"{cls.__name__} options")
        existing = {a.dest for a in parser._actions}
        for f in cls.fields():
            if f.name in skip:
                continue
            _add_aliases(group, parser, f)
            if f.name in existing:
                continue
            text = f"{f.metadata['help']} (default: {f.default})"
            if isinstance(f.default, bool):
                neg = f.name[4:] if f.name.startswith("use_") else f.name
                group.add_argument(f"--{f.name}", dest=f.name, action="store_const", const=True,
                                   default=None, help=text)
                group.add_argument(f"--no_{neg}", dest=f.name, action="store_const", const=False,
                                   default=None, help=f"turn off --{f.name}")
            else:
                group.add_argument(f"--{f.name}", dest=f.name, type=_flag_type(f), default=None,
                                   choices=f.metadata.get("choices"), help=text)
            existing.add(f.name)
        return parser


def _add_aliases(group, parser, f):
    """The field's alias and switch flags (those not on the parser yet), writing to the field's dest."""
    taken = parser._option_string_actions
    for alias in f.metadata.get("aliases", ()):
        if f"--{alias}" not in taken:
            group.add_argument(f"--{alias}", dest=f.name, type=_flag_type(f), default=None,
                               choices=f.metadata.get("choices"), help=f"same as --{f.name}")
    for switch, value in f.metadata.get("switches", {}).items():
        if f"--{switch}" not in taken:
            group.add_argument(f"--{switch}", dest=f.name, action="store_const", const=value, default=None,
                               help=f"same as --{f.name} {value}")


def _coerce(f, v):
    if isinstance(f.default, bool):
        if isinstance(v, str):
            if v.lower() in ("1", "true", "yes", "on"):
                return True
            if v.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{f.name}: expected a boolean, got {v!r}")
        return bool(v)
    if isinstance(f.default, int) and not isinstance(f.default, bool):
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"{f.name}: expected an integer, got {v!r}")
        return int(v)
    if isinstance(f.default, float):
        return float(v)
    choices = f.metadata.get("choices")
    if choices and v not in choices:
        raise ValueError(f"{f.name}: {v!r} is not one of {choices}")
    return v


@dataclass
class AttentionConfig(BaseConfig):
    """Reference re-implementation of MERBench's `attention` baseline (standalone comparisons only)."""


@dataclass
class AttentionRobustV2Config(BaseConfig):
    """AttentionRobustV2: variational encoders, uncertainty fusion, proxy attention, modality dropout."""

    use_vae: bool = hp(True, "variational encoders (z, mu, logvar); off = deterministic encoders", grid=[True])
    kl_weight: float = hp(0.01, "weight of KL(q(z|x) || N(0, I))", grid=[0.005, 0.01, 0.02], interval="[0, inf)")
    kl_warmup: int = hp(0, "epochs over which the KL weight ramps up linearly from 0 (needs set_epoch, which "
                        "main-release.py never calls; 0 = full weight from the first step)", grid=[0],
                        interval="[0, inf)")
    recon_weight: float = hp(0.1, "weight of the reconstruction of present modalities (0 = no decoders)",
                             grid=[0.05, 0.1, 0.2], interval="[0, inf)")
    tied_decoder: bool = hp(True, "decoders reuse the transposed input projections (no second full-width matrix)",
                            grid=[True])
    recon_mode: str = hp("subset", "what the decoders reconstruct: full (every input dimension), subset (recon_dims "
                         "dimensions per modality drawn at every step: an unbiased estimate of full at a fraction of "
                         "its cost) or sketch (a fixed random +-1 sketch of each input to recon_dims values). "
                         "Validation preset, 3 seeds: subset held-out F1 0.862 = full 0.862 (sketch 0.863, none 0.867)",
                         grid=["subset"], choices=["full", "subset", "sketch"])
    recon_dims: int = hp(256, "dimensions per modality reconstructed per step (recon_mode subset / sketch)", grid=[256],
                         interval="[1, inf)")
    cross_kl_weight: float = hp(0.01, "weight of the Gaussian KL between posteriors of present modality pairs",
                                grid=[0.005, 0.01, 0.02], interval="[0, inf)")
    use_uncertainty_fusion: bool = hp(True, "weight modalities by confidence 1/sigma; off = mean of present ones",
                                      grid=[True])
    fusion_temperature: float = hp(1.0, "softmax temperature of the confidence weights", grid=[0.5, 1.0, 2.0],
                                   interval="(0, inf)")
    use_proxy_attention: bool = hp(True, "cross-modal attention from the fused proxy over the modality stack",
                                   grid=[True])
    num_attention_heads: int = hp(4, "heads of the proxy attention", grid=[4], interval="[1, inf)")
    use_modality_dropout: bool = hp(True, "drop whole modalities during training (validation preset, 2 seeds: "
                                    "held-out F1 0.864 off -> 0.879 on)", grid=[False, True])
    modality_dropout: float = hp(0.3, "subset mode: probability that a training sample keeps only a random "
                                 "non-empty proper subset of its modalities; independent mode: probability to "
                                 "drop each present modality", grid=[0.3, 0.5, 0.7], interval="[0, 1]")
    modality_dropout_mode: str = hp("subset", "subset: uniform over proper subsets (single modalities common); "
                                    "independent: each modality on its own", grid=["subset"],
                                    choices=["subset", "independent"])
    modality_dropout_warmup: int = hp(0, "epochs over which the dropout rate ramps up (needs set_epoch; "
                                      "0 = acts from the first step)", grid=[0], interval="[0, inf)")
    corrupt_aug: float = hp(0.3, "probability that a training sample with 2+ modalities gets one of them corrupted "
                            "(train-seen kinds: noise / zeroed dims / gain / swapped sample; 0 = off)",
                            grid=[0.0, 0.3, 0.5], interval="[0, 1]")
    corrupt_strength: float = hp(4.0, "largest noise (x feature std) and gain factor of the augmentation",
                                 grid=[4.0], interval="[1, inf)")
    typicality_weight: float = hp(1.0, "fusion logit penalty per unit of atypicality: how far a modality's first-layer "
                                  "activations lie outside their training distribution (0 = off)", grid=[1.0],
                                  interval="[0, inf)")
    typicality_margin: float = hp(0.5, "typicality score (log mean squared z-score of the first layer) above which "
                                  "an input counts as spread out (noise) and the penalty starts", grid=[0.5])
    typicality_low: float = hp(-2.5, "score below which an input counts as collapsed (a fill value, a scaled-down "
                               "copy) and the penalty starts", grid=[-2.5])
    unimodal_weight: float = hp(0.5, "weight of the unimodal experts' loss (each modality's own classifier learns the "
                                "fused prediction; 0 = no experts)", grid=[0.5], interval="[0, inf)")
    agreement_weight: float = hp(1.0, "fusion logit bonus per unit of log agreement between a modality's own "
                                 "prediction and the other modalities' (needs unimodal experts; 0 = off)", grid=[1.0],
                                 interval="[0, inf)")
    expert_mix: bool = hp(False, "add the unimodal experts' logits, weighted by the fusion weights, to the output "
                          "(MoMKE-style single-modality pathways)", grid=[False])
    imagine: bool = hp(True, "imagine a missing (or dropped) modality's latent from the present ones and fuse it "
                       "(MMIN / GCNet-style; validation preset, 4 seeds: missing-only F1 0.821 -> 0.836, audio "
                       "missing 0.733 -> 0.763)", grid=[True])
    imagine_weight: float = hp(1.0, "weight of the imagination's regression to the real latents", grid=[1.0],
                               interval="[0, inf)")
    seq_encoder: str = hp("attnpool", "frame encoder: masked attention pooling or LSTM",
                          grid=["attnpool"], choices=["attnpool", "lstm"])
    improved_encoder: bool = hp(False, "GELU + LayerNorm + residual encoder with zero-initialised log-variance",
                                grid=[False])

    def check(self):
        """Values outside their intervals, and settings that cannot work together, raise here, with the fix."""
        super().check()
        if self.agreement_weight > 0 and self.unimodal_weight <= 0:
            raise ValueError("agreement_weight > 0 needs the unimodal experts: give --unimodal_weight > 0 "
                             "or --agreement_weight 0")
        if self.expert_mix and self.unimodal_weight <= 0:
            raise ValueError("--expert_mix needs the unimodal experts: give --unimodal_weight > 0")
        return self


@dataclass
class AttentionRobustV4Config(AttentionRobustV2Config):
    """AttentionRobustV4: V2 plus contrastive alignment, gated fusion, focal / label-smoothing losses."""

    improved_encoder: bool = hp(False, "GELU + LayerNorm + residual encoder with zero-initialised log-variance (off: "
                                "with corruption augmentation it lost 2 points of corrupted-test F1)",
                                grid=[False, True])
    recon_mode: str = hp("full", "what the decoders reconstruct (see V2); V4 keeps full: on the validation preset "
                         "(3 seeds) subset lost 0.7 points of held-out F1 and 1.2 of missing-only F1",
                         grid=["full"], choices=["full", "subset", "sketch"])
    use_contrastive: bool = hp(True, "InfoNCE between projected embeddings of present modality pairs", grid=[True])
    contrastive_weight: float = hp(0.1, "weight of the contrastive loss", grid=[0.05, 0.1, 0.2], interval="[0, inf)")
    contrastive_temperature: float = hp(0.07, "InfoNCE temperature", grid=[0.07], interval="(0, inf)")
    contrastive_dim: int = hp(64, "projection size of the contrastive heads", grid=[64], interval="[1, inf)")
    use_gated_fusion: bool = hp(True, "mix uncertainty weights with a learned gate", grid=[True])
    gate_alpha: float = hp(0.5, "w = alpha * uncertainty + (1 - alpha) * gate", grid=[0.3, 0.5, 0.7], interval="[0, 1]")
    learnable_gate_alpha: bool = hp(False, "learn gate_alpha (initialised at --gate_alpha)", grid=[False])
    focal_gamma: float = hp(0.0, "focal loss gamma (0 = plain cross-entropy; the seed's 2.0 with smoothing 0.1 cost "
                            "2.3 points of held-out F1 on the validation preset)", grid=[0.0, 1.0, 2.0],
                            interval="[0, inf)")
    label_smoothing: float = hp(0.0, "label smoothing epsilon (0 = none)", grid=[0.0, 0.05, 0.1], interval="[0, 1)")


@dataclass
class MrgNetConfig(BaseConfig):
    """MRG-Net: fixed-length pooling, memory-slot encoders, cross-modal routing, memory-guided gated fusion."""

    pool_len: int = hp(8, "tokens per modality after FixedLenPool (L)", grid=[4, 8, 16], interval="[1, inf)")
    pool_mode: str = hp("avg", "FixedLenPool: adaptive avg/max pooling (interpolation below L frames) or "
                        "linear interpolation", grid=["avg", "max", "linear"], choices=["avg", "max", "linear"])
    embed_depth: int = hp(1, "Transformer layers of each modality embedder", grid=[1, 2], interval="[1, inf)")
    memory_heads: int = hp(4, "heads of the memory routers and embedders (must divide hidden_dim)", grid=[2, 4, 8],
                           interval="[1, inf)")
    slots_t: int = hp(64, "memory slots of the text memory encoder", grid=[32, 64, 128], interval="[1, inf)")
    slots_a: int = hp(64, "memory slots of the audio memory encoder (seed: 64 per modality)", grid=[32, 64, 128],
                      interval="[1, inf)")
    slots_v: int = hp(64, "memory slots of the video memory encoder", grid=[32, 64, 128], interval="[1, inf)")
    cross_slots: int = hp(32, "slots of the cross-modal router", grid=[16, 32, 64], interval="[1, inf)")
    gate_slots: int = hp(32, "slots of the fusion gates", grid=[16, 32, 64], interval="[1, inf)")
    kernel_rank: int = hp(16, "rank of the cross-modal kernel generator (0 = full d -> heads*slots*d/heads linear "
                          "layer, as in the seed)", grid=[8, 16, 32], interval="[0, inf)")
    tau_x: float = hp(1.0, "softmax temperature of the cross-modal router", grid=[0.5, 1.0, 2.0], interval="(0, inf)")
    tau_g: float = hp(1.0, "softmax temperature of the fusion gates (over slots)", grid=[0.5, 1.0, 2.0],
                      interval="(0, inf)")
    ffn_ratio: int = hp(4, "FFN width as a multiple of hidden_dim", grid=[2, 4], interval="[1, inf)")
    text_encoder: str = hp("features", "'features': MERBench's pre-extracted text features; 'bert': raw text "
                           "(batch['raw_texts']) through BERT, needs pip install merbench-plugins[bert]",
                           choices=["features", "bert"])
    bert_name: str = hp("bert-base-uncased", "BERT hub name or local directory for --text_encoder bert "
                        "(e.g. bert-base-chinese for MER2023/SIMS)")
    bert_finetune: bool = hp(False, "fine-tune BERT (default: frozen)")
    modality_dropout: float = hp(0.5, "probability that a training sample keeps only a random non-empty proper "
                                 "subset of its modalities (0 = off)", grid=[0.3, 0.5, 0.7], interval="[0, 1]")
    modality_dropout_mode: str = hp("subset", "subset: uniform over proper subsets; independent: per modality",
                                    grid=["subset"], choices=["subset", "independent"])
    corrupt_aug: float = hp(0.3, "probability that a training sample with 2+ modalities gets one of them corrupted "
                            "(0 = off)", grid=[0.0, 0.3, 0.5], interval="[0, 1]")
    corrupt_strength: float = hp(4.0, "largest noise (x feature std) and gain factor of the augmentation", grid=[4.0],
                                 interval="[1, inf)")
    fusion_mean: bool = hp(True, "fuse the mean of the present modalities' gated summaries (scale independent of "
                           "how many are present); off = the seed's plain sum", grid=[True])


@dataclass
class RavdessAVConfig(BaseConfig):
    """RavdessAV: video ResNet-18 over frames + audio ResNet-18 (or small CNN) on the log-mel, fused."""

    lr: float = hp(1e-3, "learning rate (1e-4 with pretrained --video_weights/--audio_weights)",
                   grid=[1e-3, 3e-4, 1e-4], interval="(0, inf)")
    fusion: str = hp("gated", "gated | late | concat | xattn fusion, or a unimodal audio | video baseline",
                     grid=["gated"], choices=["gated", "late", "concat", "xattn", "audio", "video"])
    simple_gate: bool = hp(False, "the seed's original gate (Linear + sigmoid) instead of Linear-ReLU-Dropout-Linear",
                           grid=[False])
    gate_bias: float = hp(-1.0, "initial bias of the gate's last layer: sigmoid(-1): audio weight 0.27, video 0.73",
                          grid=[-1.0])
    use_spec_augment: bool = hp(True, "SpecAugment on the normalised log-mel during training", grid=[True])
    spec_freq_mask: int = hp(20, "widest SpecAugment frequency mask (mel bins)", grid=[20], interval="[0, inf)")
    spec_time_mask: int = hp(40, "widest SpecAugment time mask (frames)", grid=[40], interval="[0, inf)")
    spec_num_masks: int = hp(2, "SpecAugment masks per axis", grid=[2], interval="[0, inf)")
    spec_p: float = hp(0.5, "probability that a training sample is SpecAugmented", grid=[0.5], interval="[0, 1]")
    use_modality_dropout: bool = hp(True, "drop the audio or the video of a training sample (never both)",
                                    grid=[True])
    modality_dropout: float = hp(0.2, "probability to drop each modality of a training sample", grid=[0.1, 0.2, 0.3],
                                 aliases=("modality_dropout_p",), interval="[0, 1]")
    audio_encoder: str = hp("resnet18", "audio branch: ResNet-18 or the seed's small CNN", grid=["resnet18"],
                            choices=["resnet18", "cnn"], switches={"use_resnet_audio": "resnet18"})
    resnet_width: int = hp(64, "base width of the ResNet-18s (64 = standard; pretrained weights need 64)",
                           grid=[64], interval="[1, inf)")
    num_frames: int = hp(8, "video frames per clip (evenly subsampled when the cache holds more)", grid=[8],
                         interval="[1, inf)")
    n_mels: int = hp(64, "mel bins of the cached log-mel", grid=[64], interval="[1, inf)")
    video_flip: bool = hp(True, "random horizontal flip of a training clip", grid=[True])
    xattn_heads: int = hp(4, "heads of the xattn fusion's cross-modal attention", grid=[4], interval="[1, inf)")
    video_weights: str = hp("", "torchvision resnet18 state dict (.pth) for the video branch ('' = random init)")
    audio_weights: str = hp("", "torchvision resnet18 state dict for the audio branch (conv1 summed to 1 channel)")
    ravdess_cache: str = hp("", "RAVDESS NPZ cache written by `ravdess-prep` (default: $RAVDESS_CACHE)")
    ravdess_classes: int = hp(4, "RAVDESS task: 4 (neutral/happy/sad/angry) or 8 emotions", choices=[4, 8],
                              aliases=("num_classes",))
    ravdess_folds: int = hp(6, "actor-independent folds (24 actors / 6 = 4 test actors per fold)", interval="[2, inf)")
    ravdess_val_actors: int = hp(0, "validation actors per fold, taken from the next fold (0 = a fold's worth)",
                                 interval="[0, inf)")

    PRETRAINED_LR = 1e-4           # not a field: the default lr once pretrained weights are loaded

    @classmethod
    def from_args(cls, args=None, **overrides):
        """As :meth:`BaseConfig.from_args`; with --video_weights/--audio_weights and no lr given, lr = 1e-4."""
        cfg = super().from_args(args, **overrides)
        given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
        if overrides.get("lr", given.get("lr")) is None and (cfg.video_weights or cfg.audio_weights):
            cfg.lr = cls.PRETRAINED_LR
        return cfg
