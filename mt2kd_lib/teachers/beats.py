"""BEATs audio-tagging teacher, written from the published model description (microsoft/unilm ``beats``).

Architecture (the official module and parameter names are kept so official checkpoints load by name):

* features: kaldi fbank, 128 bins, 25 ms / 10 ms, povey window, pre-emphasis 0.97, DC removal, snip_edges, no
  dither, on the waveform scaled by 2**15, then ``(x - 15.41663) / (2 * 6.55582)``. The official code calls
  ``torchaudio.compliance.kaldi.fbank``; torchaudio is not a dependency here, so :func:`kaldi_fbank` is a torch
  implementation of the same computation (checked against kaldi-native-fbank in the tests; kaldi-native-fbank itself
  refuses 128 bins from 20 Hz with a 512-point FFT because the lowest filters are narrower than one FFT bin);
* ``patch_embedding``: Conv2d(1, embed_dim, k=s=input_patch_size) over (time, freq); patches ordered time-major;
* ``layer_norm`` over patches, optional ``post_extract_proj`` to encoder_embed_dim;
* ``encoder``: x + GELU(SamePad(weight-normed grouped Conv1d ``pos_conv``)), then (post-LN) ``encoder.layer_norm``,
  then transformer layers whose attention adds a T5-style bucketed relative position bias (``relative_attention_bias``
  of layer 0, shared) scaled per query by a learned gate (``grep_linear``, ``grep_a``); deep_norm residual scaling
  ``alpha = (2 * layers) ** 0.25`` in post-LN layers;
* ``predictor`` (fine-tuned models): Linear to ``predictor_class`` logits per patch, averaged over patches, sigmoid.

Checkpoint: the official ``{"cfg": {BEATsConfig fields}, "model": state_dict}``, loaded strictly.
Outputs: ``output="probabilities"`` gives the utterance-level class probabilities (527 for AudioSet);
``output="hidden"`` gives frame-level hidden states: the encoder output (or that of ``layer``) averaged over the
frequency patches of each time patch, at ``input_patch_size * 10 ms`` (160 ms) per frame.
"""

import math
from functools import lru_cache
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mt2kd_lib.teachers.base import Teacher, TeacherSpec

FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
NUM_MEL_BINS = 128
SAMPLE_RATE = 16000
WIN = 400  # 25 ms
HOP = 160  # 10 ms


@dataclass
class BEATsConfig:
    """The BEATsConfig fields (official names and defaults) this implementation uses."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: Dict) -> "BEATsConfig":
        """Take the known fields; training-only fields (dropouts, layerdrop...) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in known})


@lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int, padded_window: int = 512, sample_rate: int = SAMPLE_RATE,
                    low_freq: float = 20.0) -> torch.Tensor:
    """Kaldi's triangular mel filters ``(num_bins, padded_window // 2 + 1)`` (Nyquist column zero).

    Unlike Kaldi's C++ code (and kaldi-native-fbank), filters narrower than one FFT bin are allowed (they come out
    empty) as in ``torchaudio.compliance.kaldi``: BEATs' 128 bins from 20 Hz with a 512-point FFT need this.
    """
    mel = lambda f: 1127.0 * torch.log(1.0 + f / 700.0)  # noqa: E731
    nyquist = sample_rate / 2.0
    mel_low, mel_high = mel(torch.tensor(low_freq)), mel(torch.tensor(nyquist))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left, centre, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    fft_mel = mel(sample_rate / padded_window * torch.arange(padded_window // 2, dtype=torch.float32)).unsqueeze(0)
    up = (fft_mel - left) / (centre - left)
    down = (right - fft_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


def kaldi_fbank(wave: torch.Tensor, num_bins: int = NUM_MEL_BINS) -> torch.Tensor:
    """Kaldi fbank of ``(B, N)`` waveforms -> ``(B, 1 + (N - 400) // 160, num_bins)`` (float32).

    Same recipe as ``torchaudio.compliance.kaldi.fbank`` defaults used by BEATs: 25 ms frames every 10 ms with
    snip_edges, no dither, DC removal, pre-emphasis 0.97 (first sample against itself), povey window
    (``hann(periodic=False) ** 0.85``), zero-padded to a 512-point FFT, power spectrum, 20 Hz..8 kHz mel filters,
    ``log(max(energy, float32 eps))``, no energy term. Scale the waveform (BEATs: by 2**15) before calling.
    """
    if wave.shape[-1] < WIN:
        raise ValueError(f"kaldi_fbank: {wave.shape[-1]} samples is shorter than one 25 ms frame ({WIN})")
    frames = wave.float().unfold(-1, WIN, HOP)  # (B, T, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - 0.97 * prev
    window = torch.hann_window(WIN, periodic=False, dtype=torch.float32, device=wave.device).pow(0.85)
    frames = F.pad(frames * window, (0, 512 - WIN))
    power = torch.fft.rfft(frames).abs().pow(2)  # (B, T, 257)
    mel = power @ kaldi_mel_banks(num_bins).to(wave.device).t()
    return torch.clamp(mel, min=torch.finfo(torch.float32).eps).log()


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation over dim 2 stored as ``weight_g``/``weight_v`` (the official key names)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.padding = kernel // 2
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Norm over all dims except the kernel axis, as torch.nn.utils.weight_norm(dim=2).
        norm = self.weight_v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        weight = self.weight_g * self.weight_v / norm
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


def relative_position_bucket(rel: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5 buckets: exact for small |distance|, log-spaced up to max_distance, sign in the top half."""
    half = num_buckets // 2
    bucket = (rel > 0).long() * half
    dist = rel.abs()
    max_exact = half // 2
    far = max_exact + (
        torch.log(dist.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).long()
    far = far.clamp(max=half - 1)
    return bucket + torch.where(dist < max_exact, dist, far)


class BeatsAttention(nn.Module):
    """Multi-head self-attention with the gated relative position bias."""

    def __init__(self, cfg: BEATsConfig, has_rel_bias: bool) -> None:
        super().__init__()
        d, h = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        if d % h:
            raise ValueError(f"BEATs: encoder_embed_dim {d} not divisible by encoder_attention_heads {h}")
        self.num_heads, self.head_dim = h, d // h
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        if has_rel_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, h)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, h, 1, 1))

    def compute_bias(self, length: int) -> torch.Tensor:
        """Relative position bias ``(H, L, L)`` from this layer's bucket embedding."""
        pos = torch.arange(length, device=self.relative_attention_bias.weight.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, pos_bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x: ``(B, L, D)``; pos_bias: ``(H, L, L)`` or None."""
        b, n, d = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)  # (B, H, L, L)
        if pos_bias is not None:
            bias = pos_bias.unsqueeze(0)
            if self.gru_rel_pos:
                # Per-query gate from the unscaled query: two sigmoids of 4-sums of grep_linear outputs.
                g = torch.sigmoid(self.grep_linear(q).view(b, self.num_heads, n, 2, 4).sum(-1))
                gate_a, gate_b = g[..., :1], g[..., 1:]
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
            scores = scores + bias
        attn = F.softmax(scores.float(), dim=-1).type_as(v)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out)


class BeatsLayer(nn.Module):
    """One transformer layer (post-LN with deep_norm scaling, or pre-LN)."""

    def __init__(self, cfg: BEATsConfig, has_rel_bias: bool) -> None:
        super().__init__()
        if cfg.activation_fn not in ("gelu", "relu"):
            raise ValueError(f"BEATs: activation_fn {cfg.activation_fn!r} not supported (gelu, relu)")
        d = cfg.encoder_embed_dim
        self.self_attn = BeatsAttention(cfg, has_rel_bias)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = F.gelu if cfg.activation_fn == "gelu" else F.relu
        self.layer_norm_first = cfg.layer_norm_first
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0

    def forward(self, x: torch.Tensor, pos_bias: Optional[torch.Tensor]) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), pos_bias)
            return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, pos_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(self.act(self.fc1(x))))


class BeatsEncoder(nn.Module):
    """Conv positional embedding + transformer layers (official ``encoder.*`` names)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups))
        self.trim_last = cfg.conv_pos % 2 == 0  # "SamePad": an even kernel yields one extra frame
        self.layers = nn.ModuleList(
            [BeatsLayer(cfg, has_rel_bias=cfg.relative_position_embedding) for _ in range(cfg.encoder_layers)]
        )
        if cfg.relative_position_embedding:
            # One bias table shared by all layers; the state dict still lists it under every layer.
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.layer_norm = nn.LayerNorm(d)
        self.layer_norm_first = cfg.layer_norm_first
        self.rel_pos = cfg.relative_position_embedding

    def forward(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """x: ``(B, L, D)``; returns the final output or that of layer ``layer`` (0-based)."""
        conv = self.pos_conv(x.transpose(1, 2))
        if self.trim_last:
            conv = conv[:, :, :-1]
        x = x + F.gelu(conv).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        pos_bias = self.layers[0].self_attn.compute_bias(x.shape[1]) if self.rel_pos else None
        for i, blk in enumerate(self.layers):
            x = blk(x, pos_bias)
            if i == layer:
                return x
        return self.layer_norm(x) if self.layer_norm_first else x


class BEATs(nn.Module):
    """BEATs model with the official parameter names."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        if cfg.layer_norm_first and cfg.deep_norm:
            raise ValueError("BEATs: deep_norm and layer_norm_first cannot both be set")
        self.cfg = cfg
        self.patch_embedding = nn.Conv2d(
            1, cfg.embed_dim, kernel_size=cfg.input_patch_size, stride=cfg.input_patch_size, bias=cfg.conv_bias
        )
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        if cfg.embed_dim != cfg.encoder_embed_dim:
            self.post_extract_proj = nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
        else:
            self.post_extract_proj = None
        self.encoder = BeatsEncoder(cfg)
        self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model else None

    def forward(self, fbank: torch.Tensor, layer: int = -1) -> Tuple[torch.Tensor, int]:
        """fbank: normalised ``(B, T, 128)``. Returns patch features ``(B, T'*F', D)`` and F' (freq patches)."""
        x = self.patch_embedding(fbank.unsqueeze(1))  # (B, C, T', F')
        freq_patches = x.shape[3]
        x = self.layer_norm(x.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x, layer=layer), freq_patches


def load_beats_checkpoint(checkpoint: Union[str, Path]) -> Tuple[BEATs, BEATsConfig]:
    """Build BEATs from an official checkpoint and load its weights strictly (eval mode, CPU)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"BEATs checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"BEATs checkpoint {path} could not be read by torch.load: {e}") from e
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "model" not in ckpt:
        keys = sorted(ckpt.keys()) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"BEATs checkpoint {path} is not in the official format (dict with 'cfg', 'model'); found {keys}"
        )
    cfg = BEATsConfig.from_dict(ckpt["cfg"])
    model = BEATs(cfg)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"BEATs checkpoint {path}: state dict does not match the official layout for its cfg; "
            f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}"
        )
    return model.eval(), cfg


class BeatsTeacher(Teacher):
    """AudioSet tagging probabilities (utterance) or frame-level hidden states from an official BEATs checkpoint."""

    def __init__(
        self,
        checkpoint: Union[str, Path],
        output: str = "probabilities",
        layer: int = -1,
        device: Union[str, torch.device] = "cpu",
        name: str = "beats",
    ) -> None:
        self.model, self.cfg = load_beats_checkpoint(checkpoint)
        if output not in ("probabilities", "hidden"):
            raise ValueError(f"BEATs teacher {name}: output {output!r} must be 'probabilities' or 'hidden'")
        if output == "probabilities" and self.model.predictor is None:
            raise ValueError(
                f"BEATs checkpoint {checkpoint} is not fine-tuned (cfg.finetuned_model false, no predictor): "
                "it cannot give probabilities; use output='hidden'"
            )
        if output == "probabilities" and layer != -1:
            raise ValueError(f"BEATs teacher {name}: layer must be -1 for output='probabilities'")
        if layer != -1 and not 0 <= layer < self.cfg.encoder_layers:
            raise ValueError(f"BEATs teacher {name}: layer {layer} not in -1 or 0..{self.cfg.encoder_layers - 1}")
        self.output, self.layer = output, layer
        patch = self.cfg.input_patch_size
        min_dur = (WIN + (patch - 1) * HOP) / SAMPLE_RATE  # one patch of fbank frames
        if output == "probabilities":
            self.spec = TeacherSpec(name, "at", "probabilities", "utterance", self.cfg.predictor_class,
                                    min_duration=min_dur)
        else:
            self.spec = TeacherSpec(name, "at", "embedding", "frame", self.cfg.encoder_embed_dim,
                                    frame_shift=patch * HOP / SAMPLE_RATE, min_duration=min_dur)
        self.to(device)

    def to(self, device: Union[str, torch.device]) -> "BeatsTeacher":
        super().to(device)
        self.model.to(self.device)
        return self

    def num_frames(self, num_samples: int) -> int:
        """Time patches for ``num_samples``: snip_edges fbank frames // patch size."""
        if num_samples < WIN:
            return 0
        return (1 + (num_samples - WIN) // HOP) // self.cfg.input_patch_size

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` waveforms in [-1, 1] -> normalised fbank ``(B, T, 128)`` as the official preprocess."""
        fb = kaldi_fbank(wave.to(self.device) * 32768.0, NUM_MEL_BINS)
        return (fb - FBANK_MEAN) / (2 * FBANK_STD)

    @torch.no_grad()
    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """``(B, T, 128)`` normalised fbank -> ``(B, 527)`` probabilities or ``(B, T', D)`` hidden states."""
        x, freq_patches = self.model(fbank.to(self.device), layer=self.layer)
        if self.output == "probabilities":
            # Official extract_features without padding: mean of per-patch logits, then sigmoid.
            return torch.sigmoid(self.model.predictor(x).mean(dim=1))
        b, n, d = x.shape
        return x.view(b, n // freq_patches, freq_patches, d).mean(dim=2)

    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        """Each input is processed at its own length (equal lengths share a forward pass), so no padding effects."""
        def forward(same_length: List[np.ndarray]) -> np.ndarray:
            wave = torch.from_numpy(np.stack(same_length).astype(np.float32))
            return self.forward_fbank(self.features(wave)).float().cpu().numpy()

        return self.infer_by_length(audios, forward)
