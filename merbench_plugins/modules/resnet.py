"""ResNet-18 with torchvision's parameter names, a loader for torchvision-format weights, and a small audio CNN.

Parameter names match ``torchvision.models.resnet18().state_dict()`` (conv1, bn1, layer1.0.conv1, ...,
layerN.0.downsample.0/1), so a user-supplied torchvision checkpoint loads without torchvision. The
classifier ``fc`` is not built: the encoders return feature maps and the fusion model owns its heads.
"""
from typing import Dict, Iterable, List, Sequence

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; ``downsample`` (1x1 conv + BN) when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 trunk: [B, C_in, H, W] -> feature map [B, 8 * width, H / 32, W / 32].

    ``width`` 64 is the standard network (512 output channels); tests use 8 to stay fast.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        self.in_channels, self.width = in_channels, width
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = [width, 2 * width, 4 * width, 8 * width]
        in_ch = width
        for i, (ch, n) in enumerate(zip(channels, blocks)):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(*[BasicBlock(in_ch if j == 0 else ch, ch, stride if j == 0 else 1) for j in range(n)])
            setattr(self, f"layer{i + 1}", layer)
            in_ch = ch
        self.out_channels = channels[-1]
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))       # [B, w, H/4, W/4]
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)                                       # [B, 8w, H/32, W/32]


class SmallAudioCNN(nn.Module):
    """The seed's small audio CNN (~163K parameters): four Conv3x3-BN-ReLU-MaxPool2 stages.

    [B, 1, F, T] -> [B, 128, F / 16, T / 16]; kept as the ``--audio_encoder cnn`` baseline.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (24, 48, 96, 128)):
        super().__init__()
        stages, prev = [], in_channels
        for ch in channels:
            stages += [nn.Conv2d(prev, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            prev = ch
        self.features = nn.Sequential(*stages)
        self.out_channels = prev

    def forward(self, x):
        return self.features(x)


# ---------------------------------------------------------------------------------------------------
# torchvision-format weights


def _short_list(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _load_file(path) -> Dict[str, torch.Tensor]:
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except TypeError:  # torch < 1.13 has no weights_only
            obj = torch.load(path, map_location="cpu")
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file not found: {path}") from None
    except Exception as err:
        raise ValueError(f"cannot read weights file {path}: {type(err).__name__}: {err}. Expected a torch.save()d "
                         f"state dict, e.g. torch.save(torchvision.models.resnet18(weights='DEFAULT').state_dict(), "
                         f"'resnet18.pth')") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_torchvision_resnet(model: ResNet18, source, name: str = "resnet18") -> List[str]:
    """Load torchvision ResNet-18 weights (a path or a state dict) into ``model``; returns the skipped keys.

    ``fc.*`` is dropped, ``module.`` prefixes (DataParallel) are stripped, and for a 1-channel model
    the 3-channel ``conv1`` kernel is summed over its input channels (timm's choice: a grey image then
    gives the response the pretrained batch-norm statistics saw for that image in RGB). Any other missing key,
    unexpected key or shape mismatch raises ``ValueError`` listing them all.
    """
    state = _load_file(source) if not isinstance(source, dict) else dict(source)
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    skipped = sorted(k for k in state if k.startswith("fc."))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.dim() == 4 and conv1.size(1) != model.in_channels and model.in_channels == 1:
        state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)      # grey g: conv(sum W_c, g) = conv(W, [g, g, g])
    own = model.state_dict()
    # very old checkpoints have no BN step counters; they carry no weights, so their absence is harmless
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(f"{k} (file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
                        for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing in the file: {_short_list(missing)}")
        if unexpected:
            parts.append(f"not in the model: {_short_list(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch: {_short_list(mismatched)}")
        raise ValueError(f"{name} weights do not fit a torchvision ResNet-18 (width {model.width}, "
                         f"{model.in_channels} input channel(s)): " + "; ".join(parts) +
                         ". Pass a torchvision resnet18 state dict and keep the default resnet_width=64.")
    model.load_state_dict(state, strict=False)
    return skipped
