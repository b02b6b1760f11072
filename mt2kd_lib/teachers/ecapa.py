"""ECAPA-TDNN speaker-verification teacher compatible with SpeechBrain's ``embedding_model.ckpt``.

Model (SpeechBrain ``lobes/models/ECAPA_TDNN.py`` layout, written from its description): ``blocks.0`` TDNNBlock
(Conv1d -> ReLU -> BatchNorm), ``blocks.1..N-2`` SERes2NetBlocks (tdnn1, Res2Net with ``scale-1`` dilated TDNNs,
tdnn2, squeeze-excitation, residual with optional 1x1 ``shortcut``), ``mfa`` TDNN over the concatenated SE-Res2Net
outputs, ``asp`` attentive statistics pooling with global context, ``asp_bn`` BatchNorm, ``fc`` 1x1 conv to the
embedding (192 for spkrec-ecapa-voxceleb). Every SpeechBrain Conv1d pads "same" with *reflect* padding of
``dilation * (kernel - 1) // 2`` frames on each side. The architecture (channels, kernels, Res2Net scale, SE and
attention channels, embedding size, input size) is read from the tensor shapes of the checkpoint; the dilations are
not stored there and default to SpeechBrain's ``[1, 2, 3, 4, 1]``.

Feature pipeline (SpeechBrain ``Fbank(n_mels=80)`` + ``InputNormalization(norm_type="sentence", std_norm=False)``):

1. STFT: n_fft 400, win 400 (25 ms), hop 160 (10 ms), periodic Hamming window, ``center=True`` with zero padding,
   power spectrum ``|X|^2`` -> ``1 + num_samples // 160`` frames;
2. 80 triangular mel filters between 0 and 8000 Hz: centres equally spaced on the mel scale
   ``2595 log10(1 + f/700)``; each filter is symmetric with half-width equal to the spacing to its left neighbour
   (SpeechBrain's ``band``), evaluated on ``linspace(0, 8000, 201)``;
3. ``10 * log10(max(fbank, 1e-10))``, then floored at (utterance max - 80 dB);
4. subtract the per-utterance mean over time (no variance normalisation).

The waveform is used at its [-1, 1] float scale, as SpeechBrain loads it.
"""

from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mt2kd_lib.teachers.base import Teacher, TeacherSpec

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def speechbrain_fbank_matrix(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> torch.Tensor:
    """``(n_fft//2+1, n_mels)`` triangular filters as SpeechBrain's Filterbank (f_min=0, f_max=sr/2)."""
    f_max = float(sample_rate // 2)
    mel = torch.linspace(float(_hz_to_mel(torch.tensor(0.0))), float(_hz_to_mel(torch.tensor(f_max))), n_mels + 2)
    hz = _mel_to_hz(mel)
    band = (hz[1:] - hz[:-1])[:-1]  # left spacing of each filter, used on both sides
    centre = hz[1:-1]
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    slope = (freqs[None, :] - centre[:, None]) / band[:, None]
    return torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0).t()


class EcapaFeatures(nn.Module):
    """SpeechBrain Fbank + sentence mean normalisation for one or more equal-length waveforms."""

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.register_buffer("window", torch.hamming_window(N_FFT), persistent=False)
        self.register_buffer("fbank", speechbrain_fbank_matrix(n_mels), persistent=False)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """wav ``(B, N)`` -> SpeechBrain Fbank output ``(B, 1 + N // 160, n_mels)`` in dB (before normalisation)."""
        spec = torch.stft(wav, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="constant",
                          return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, F, T)
        mel = power.transpose(1, 2) @ self.fbank
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        return torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav ``(B, N)`` -> sentence-mean-normalised features ``(B, 1 + N // 160, n_mels)``."""
        db = self.log_mel(wav)
        return db - db.mean(dim=1, keepdim=True)


class SbConv1d(nn.Module):
    """SpeechBrain Conv1d: reflect "same" padding, then the conv stored at ``.conv`` (keys ``*.conv.weight``)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation)
        self.pad = dilation * (kernel - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode="reflect")
        return self.conv(x)


class SbBatchNorm1d(nn.Module):
    """SpeechBrain BatchNorm1d wrapper (keys ``*.norm.weight``, ``*.norm.running_mean``...)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels, eps=1e-5, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    """Conv1d -> ReLU -> BatchNorm."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = SbConv1d(cin, cout, kernel, dilation)
        self.norm = SbBatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))


class Res2NetBlock(nn.Module):
    """Split channels in ``scale`` chunks; chunk i>0 goes through a TDNN after adding the previous output."""

    def __init__(self, channels: int, scale: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList([TDNNBlock(width, width, kernel, dilation) for _ in range(scale - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = []
        y = None
        for i, xi in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 0:
                y = xi
            elif i == 1:
                y = self.blocks[0](xi)
            else:
                y = self.blocks[i - 1](xi + y)
            ys.append(y)
        return torch.cat(ys, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation over time (whole utterance: no padding inside a batch here)."""

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = SbConv1d(channels, se_channels, 1)
        self.conv2 = SbConv1d(se_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(s))))


class SERes2NetBlock(nn.Module):
    """TDNN -> Res2Net -> TDNN -> SE, plus (projected) residual."""

    def __init__(self, cin: int, cout: int, scale: int, se_channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(cin, cout, 1, 1)
        self.res2net_block = Res2NetBlock(cout, scale, kernel, dilation)
        self.tdnn2 = TDNNBlock(cout, cout, 1, 1)
        self.se_block = SEBlock(cout, se_channels)
        self.shortcut = SbConv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x) if self.shortcut is not None else x
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + residual


class AttentiveStatisticsPooling(nn.Module):
    """Channel-wise attention over time -> weighted mean and std, concatenated."""

    def __init__(self, channels: int, attention_channels: int, global_context: bool) -> None:
        super().__init__()
        self.global_context = global_context
        self.tdnn = TDNNBlock(channels * 3 if global_context else channels, attention_channels, 1, 1)
        self.conv = SbConv1d(attention_channels, channels, 1)

    @staticmethod
    def _stats(x: torch.Tensor, w: torch.Tensor):
        mean = (w * x).sum(dim=2)
        std = torch.sqrt((w * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2).clamp(min=1e-12))
        return mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[2]
        if self.global_context:
            mean, std = self._stats(x, torch.full_like(x[:, :1], 1.0 / length))
            attn_in = torch.cat([x, mean.unsqueeze(2).expand_as(x), std.unsqueeze(2).expand_as(x)], dim=1)
        else:
            attn_in = x
        attn = F.softmax(self.conv(torch.tanh(self.tdnn(attn_in))), dim=2)
        mean, std = self._stats(x, attn)
        return torch.cat([mean, std], dim=1).unsqueeze(2)


class ECAPA_TDNN(nn.Module):
    """The embedding model; ``forward`` takes features ``(B, T, F)`` and returns ``(B, lin_neurons)``."""

    def __init__(
        self,
        input_size: int,
        channels: Sequence[int],
        kernel_sizes: Sequence[int],
        dilations: Sequence[int],
        attention_channels: int,
        res2net_scale: int,
        se_channels: int,
        global_context: bool,
        lin_neurons: int,
    ) -> None:
        super().__init__()
        if not len(channels) == len(kernel_sizes) == len(dilations):
            raise ValueError(
                f"ECAPA: channels {channels}, kernel_sizes {kernel_sizes}, dilations {dilations} differ in length"
            )
        self.blocks = nn.ModuleList([TDNNBlock(input_size, channels[0], kernel_sizes[0], dilations[0])])
        for i in range(1, len(channels) - 1):
            self.blocks.append(SERes2NetBlock(channels[i - 1], channels[i], res2net_scale, se_channels,
                                              kernel_sizes[i], dilations[i]))
        self.mfa = TDNNBlock(sum(channels[1:-1]), channels[-1], kernel_sizes[-1], dilations[-1])
        self.asp = AttentiveStatisticsPooling(channels[-1], attention_channels, global_context)
        self.asp_bn = SbBatchNorm1d(channels[-1] * 2)
        self.fc = SbConv1d(channels[-1] * 2, lin_neurons, 1)
        self.max_pad = max(d * (k - 1) // 2 for k, d in zip(kernel_sizes, dilations))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        x = self.fc(self.asp_bn(self.asp(x)))
        return x.squeeze(2)


def _need(sd: Dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"ECAPA checkpoint {path}: missing key {key!r} (not a SpeechBrain embedding_model.ckpt?)")
    return sd[key]


def ecapa_from_state_dict(sd: Dict[str, torch.Tensor], path: Path,
                          dilations: Sequence[int] = (1, 2, 3, 4, 1)) -> ECAPA_TDNN:
    """Infer the architecture from tensor shapes, build it and load the weights strictly."""
    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")) if any(
        k.startswith("blocks.") for k in sd) else 0
    if n_blocks < 2:
        raise ValueError(f"ECAPA checkpoint {path}: expected blocks.0..blocks.N (TDNN + SE-Res2Net), found {n_blocks}")
    w0 = _need(sd, "blocks.0.conv.conv.weight", path)
    channels = [w0.shape[0]]
    kernels = [w0.shape[2]]
    for i in range(1, n_blocks):
        channels.append(_need(sd, f"blocks.{i}.tdnn1.conv.conv.weight", path).shape[0])
        kernels.append(_need(sd, f"blocks.{i}.res2net_block.blocks.0.conv.conv.weight", path).shape[2])
    mfa = _need(sd, "mfa.conv.conv.weight", path)
    channels.append(mfa.shape[0])
    kernels.append(mfa.shape[2])
    if len(dilations) != len(channels):
        raise ValueError(f"ECAPA checkpoint {path}: {len(channels)} conv stages but dilations {list(dilations)}")
    scale = 1 + sum(1 for k in sd if k.startswith("blocks.1.res2net_block.blocks.") and k.endswith(".conv.conv.weight"))
    asp_in = _need(sd, "asp.tdnn.conv.conv.weight", path).shape[1]
    model = ECAPA_TDNN(
        input_size=w0.shape[1],
        channels=channels,
        kernel_sizes=kernels,
        dilations=list(dilations),
        attention_channels=_need(sd, "asp.tdnn.conv.conv.weight", path).shape[0],
        res2net_scale=scale,
        se_channels=_need(sd, "blocks.1.se_block.conv1.conv.weight", path).shape[0],
        global_context=asp_in == 3 * channels[-1],
        lin_neurons=_need(sd, "fc.conv.weight", path).shape[0],
    )
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"ECAPA checkpoint {path}: state dict does not match SpeechBrain's ECAPA_TDNN layout; "
            f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}"
        )
    return model.eval()


class EcapaTeacher(Teacher):
    """Utterance-level speaker embedding (192-d for the public VoxCeleb model)."""

    def __init__(
        self,
        checkpoint: Union[str, Path],
        device: Union[str, torch.device] = "cpu",
        dilations: Sequence[int] = (1, 2, 3, 4, 1),
        name: str = "ecapa",
    ) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"ECAPA checkpoint {path} does not exist")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"ECAPA checkpoint {path} could not be read by torch.load: {e}") from e
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ValueError(
                f"ECAPA checkpoint {path} is not a state dict of tensors (SpeechBrain embedding_model.ckpt)"
            )
        self.model = ecapa_from_state_dict(sd, path, dilations)
        n_mels = self.model.blocks[0].conv.conv.in_channels
        self.feats = EcapaFeatures(n_mels)
        # Reflect padding needs more frames than the widest pad; frames = 1 + N // 160.
        min_samples = max(self.model.max_pad, 1) * HOP
        self.spec = TeacherSpec(name, "sv", "embedding", "utterance", self.model.fc.conv.out_channels,
                                min_duration=min_samples / SAMPLE_RATE)
        self.to(device)

    def to(self, device: Union[str, torch.device]) -> "EcapaTeacher":
        super().to(device)
        self.model.to(self.device)
        self.feats.to(self.device)
        return self

    @torch.no_grad()
    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` equal-length waveforms -> ``(B, D)`` embeddings."""
        return self.model(self.feats(wav.to(self.device)))

    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        """Equal-length inputs share a forward pass; nothing is padded."""
        def forward(same_length: List[np.ndarray]) -> np.ndarray:
            return self.embed(torch.from_numpy(np.stack(same_length).astype(np.float32))).float().cpu().numpy()

        return self.infer_by_length(audios, forward)
