"""Audio front end written in plain torch (no torchaudio): resampling, mel filterbank, log-mel, SpecAugment.

The RAVDESS pipeline turns each 48 kHz wav into 16 kHz mono and a 64-mel x 188-frame log-mel
(3.0 s, hop 256, centred STFT: 1 + 48000 // 256 = 188 frames). SpecAugment (Park et al., 2019)
masks bands and time spans of the *normalised* log-mel during training only.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------
# mel scale and filterbank


def hz_to_mel(freq, mel_scale: str = "htk"):
    """Hz -> mel. ``htk``: 2595 log10(1 + f/700); ``slaney``: linear below 1 kHz, logarithmic above."""
    freq = torch.as_tensor(freq, dtype=torch.float64)
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    linear = freq / f_sp
    log = min_log_mel + torch.log(freq.clamp_min(min_log_hz) / min_log_hz) / logstep
    return torch.where(freq >= min_log_hz, log, linear)


def mel_to_hz(mel, mel_scale: str = "htk"):
    """Inverse of :func:`hz_to_mel`."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    linear = mel * f_sp
    log = min_log_hz * torch.exp(logstep * (mel - min_log_mel))
    return torch.where(mel >= min_log_mel, log, linear)


def mel_band_edges(n_mels: int, f_min: float, f_max: float, mel_scale: str = "htk") -> torch.Tensor:
    """[n_mels + 2] Hz: lower edge, the n_mels centre frequencies, upper edge (equally spaced in mel)."""
    mels = torch.linspace(float(hz_to_mel(f_min, mel_scale)), float(hz_to_mel(f_max, mel_scale)), n_mels + 2,
                          dtype=torch.float64)
    return mel_to_hz(mels, mel_scale)


def mel_center_frequencies(n_mels: int, f_min: float, f_max: float, mel_scale: str = "htk") -> torch.Tensor:
    """[n_mels] centre frequency of each mel band in Hz."""
    return mel_band_edges(n_mels, f_min, f_max, mel_scale)[1:-1]


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: Optional[float] = None,
                   mel_scale: str = "htk", norm: Optional[str] = None) -> torch.Tensor:
    """[n_freqs, n_mels] triangular filters over the STFT bins 0 .. sample_rate/2.

    ``norm='slaney'`` divides each triangle by its width in Hz (equal area); None keeps peak 1.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, "
                         f"sample_rate={sample_rate}")
    bin_hz = torch.linspace(0.0, sample_rate / 2.0, n_freqs, dtype=torch.float64)          # [n_freqs]
    edges = mel_band_edges(n_mels, f_min, f_max, mel_scale)                                # [n_mels + 2]
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]                              # [n_mels] each
    rising = (bin_hz[:, None] - lower) / (center - lower)                                  # [n_freqs, n_mels]
    falling = (upper - bin_hz[:, None]) / (upper - center)
    fb = torch.minimum(rising, falling).clamp_min(0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (upper - lower))
    elif norm is not None:
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    return fb.float()


class LogMelSpectrogram(nn.Module):
    """Waveform [B, N] (or [N]) -> log-mel [B, n_mels, 1 + N // hop] with ``torch.stft`` and a Hann window."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 256,
                 win_length: Optional[int] = None, n_mels: int = 64, f_min: float = 0.0,
                 f_max: Optional[float] = None, mel_scale: str = "htk", norm: Optional[str] = None,
                 log_offset: float = 1e-6):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.win_length = win_length or n_fft
        self.log_offset = log_offset
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max,
                                                          mel_scale, norm), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        squeeze = wave.dim() == 1
        wave = wave.reshape(1, -1) if squeeze else wave
        spec = torch.stft(wave.float(), self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)                                 # [B, n_fft/2+1, frames]
        mel = torch.matmul(self.filterbank.t(), power)                              # [B, n_mels, frames]
        logmel = torch.log(mel + self.log_offset)
        return logmel[0] if squeeze else logmel


# ---------------------------------------------------------------------------------------------------
# resampling


# Kaiser-windowed sinc (torchaudio's "kaiser_best" beta 14.77, side lobes near -150 dB, with 96 zero
# crossings instead of 64), cut-off at 0.95 of the output Nyquist. 48 -> 16 kHz: flat (< 0.01 dB) to 7.2 kHz,
# -1.4 dB at 7.5 kHz, below -140 dB from 8.0 kHz on (tests/test_ravdess.py measures it).
RESAMPLE_ZERO_CROSSINGS = 96
RESAMPLE_ROLLOFF = 0.95
RESAMPLE_BETA = 14.769656459379492


def _kaiser(t: torch.Tensor, half_width: float, beta: float) -> torch.Tensor:
    """Kaiser window evaluated at (fractional) offsets ``t``; zero beyond ``half_width``."""
    x = (1.0 - (t / half_width) ** 2).clamp_min(0.0).sqrt()
    return torch.i0(beta * x) / torch.i0(torch.tensor(beta, dtype=t.dtype)) * (t.abs() <= half_width)


def _sinc_resample_kernel(up: int, down: int, zero_crossings: int = RESAMPLE_ZERO_CROSSINGS,
                          rolloff: float = RESAMPLE_ROLLOFF, beta: float = RESAMPLE_BETA):
    """Polyphase Kaiser-windowed sinc kernels [up, 1, down + 2 * width] (float64) and the half width in input samples."""
    cutoff = min(1.0, up / down) * rolloff                    # low-pass, in units of the input Nyquist
    width = int(math.ceil(zero_crossings / cutoff))
    taps = torch.arange(-width, down + width, dtype=torch.float64)                   # input offsets
    phase = torch.arange(up, dtype=torch.float64)[:, None] * down / up               # [up, 1] output times
    t = taps[None, :] - phase                                                        # [up, taps]
    kernel = cutoff * torch.sinc(cutoff * t) * _kaiser(t, width, beta)
    return kernel[:, None, :], width


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of [..., N] from ``orig_sr`` to ``new_sr`` (Kaiser-windowed sinc, polyphase).

    One strided ``conv1d`` computes all output phases at once: for 48 kHz -> 16 kHz the kernel is
    a single low-pass phase applied every 3rd sample. float64 input stays float64 (measurements);
    anything else is computed in float32.
    """
    if orig_sr == new_sr:
        return wave
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    kernel, width = _sinc_resample_kernel(up, down)
    dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
    shape, n = wave.shape[:-1], wave.shape[-1]
    x = wave.reshape(-1, 1, n).to(dtype)
    x = F.pad(x, (width, width + down))
    out = F.conv1d(x, kernel.to(x.device, dtype), stride=down)                      # [M, up, blocks]
    out = out.transpose(1, 2).reshape(x.size(0), -1)                                # interleave phases
    n_out = int(math.ceil(n * up / down))
    return out[:, :n_out].reshape(*shape, n_out)


# ---------------------------------------------------------------------------------------------------
# SpecAugment


def _span_masks(batch: int, length: int, num_masks: int, max_width: int, device) -> torch.Tensor:
    """[B, length] bool: union of ``num_masks`` spans per row, widths uniform in 0..max_width."""
    max_width = min(max_width, length)
    width = torch.randint(0, max_width + 1, (batch, num_masks), device=device)
    start = (torch.rand(batch, num_masks, device=device) * (length - width + 1)).long()  # start + width <= length
    pos = torch.arange(length, device=device)
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])             # [B, masks, length]
    return inside.any(dim=1)


class SpecAugment(nn.Module):
    """Frequency and time masking of [B, 1, F, T] (or [B, F, T]) spectrograms, training only.

    With probability ``p`` a sample gets ``num_masks`` frequency bands (width 0..``freq_mask``) and
    ``num_masks`` time spans (width 0..``time_mask``) set to ``fill``; vectorised over the batch.
    Apply it after input normalisation so that ``fill=0`` means "average", not "very loud/quiet".
    """

    def __init__(self, freq_mask: int = 20, time_mask: int = 40, num_masks: int = 2, p: float = 0.5,
                 fill: float = 0.0):
        super().__init__()
        self.freq_mask, self.time_mask, self.num_masks = int(freq_mask), int(time_mask), int(num_masks)
        self.p, self.fill = float(p), float(fill)

    def sample_masks(self, batch: int, n_freq: int, n_time: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """([B, F], [B, T]) bool masks; rows not selected by ``p`` are all False."""
        applied = torch.rand(batch, device=device) < self.p                                   # [B]
        freq = _span_masks(batch, n_freq, self.num_masks, self.freq_mask, device) & applied[:, None]
        time = _span_masks(batch, n_time, self.num_masks, self.time_mask, device) & applied[:, None]
        return freq, time

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0 or self.num_masks <= 0:
            return spec
        b, n_freq, n_time = spec.size(0), spec.size(-2), spec.size(-1)
        freq, time = self.sample_masks(b, n_freq, n_time, spec.device)
        mask = freq[:, :, None] | time[:, None, :]                                           # [B, F, T]
        if spec.dim() == 4:
            mask = mask[:, None]                                                              # [B, 1, F, T]
        return spec.masked_fill(mask, self.fill)

    def extra_repr(self) -> str:
        return f"freq_mask={self.freq_mask}, time_mask={self.time_mask}, num_masks={self.num_masks}, p={self.p}"
