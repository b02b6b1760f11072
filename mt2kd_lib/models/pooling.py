"""Length-aware pooling over time for (N, T, C) encoder outputs.

``masked_mean`` is the plain average over valid frames (used by the AT head);
``AttentiveStatsPooling`` is the ECAPA-TDNN channel- and context-dependent
attentive statistics pooling (used by the SV head). Both ignore padded frames
exactly, in training and in eval mode, so a batch's padding never changes a
sequence's result.
"""

from typing import Tuple

import torch
import torch.nn as nn


def lengths_to_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """Return a bool (N, max_len) mask, True on valid frames; checks ``lens`` first."""
    if lens.dim() != 1:
        raise ValueError(f"lens must be 1-D (N,), got shape {tuple(lens.shape)}")
    if lens.dtype.is_floating_point or lens.dtype == torch.bool:
        raise ValueError(f"lens must be an integer tensor, got dtype {lens.dtype}")
    if lens.numel() > 0:
        if int(lens.min()) < 1:
            bad = int(torch.nonzero(lens < 1)[0, 0])
            raise ValueError(f"lens[{bad}]={int(lens[bad])}: every sequence needs >= 1 valid frame")
        if int(lens.max()) > max_len:
            bad = int(torch.nonzero(lens > max_len)[0, 0])
            raise ValueError(f"lens[{bad}]={int(lens[bad])} exceeds the padded length T={max_len}")
    steps = torch.arange(max_len, device=lens.device)
    return steps.unsqueeze(0) < lens.unsqueeze(1)


def _check_x_lens(x: torch.Tensor, lens: torch.Tensor) -> None:
    """Validate the (N, T, C) / (N,) pair every head receives."""
    if x.dim() != 3:
        raise ValueError(f"x must be (N, T, C), got shape {tuple(x.shape)}")
    if lens.shape != (x.size(0),):
        raise ValueError(f"lens must have shape ({x.size(0)},) to match x, got {tuple(lens.shape)}")


def masked_mean(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Average ``x`` (N, T, C) over its first ``lens[n]`` frames -> (N, C)."""
    _check_x_lens(x, lens)
    mask = lengths_to_mask(lens, x.size(1)).unsqueeze(-1)  # (N, T, 1)
    # masked_fill (not multiply) so even inf/NaN padding cannot leak into the sum.
    return x.masked_fill(~mask, 0.0).sum(dim=1) / lens.to(x.dtype).unsqueeze(-1)


def _weighted_stats(
    x: torch.Tensor, w: torch.Tensor, eps: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of ``x`` (N, T, C) along T under weights ``w`` (N, T, C or 1) summing to 1."""
    mean = (w * x).sum(dim=1)
    var = (w * (x - mean.unsqueeze(1)).pow(2)).sum(dim=1)
    # clamp: a constant channel has var 0 and sqrt'(0) is inf.
    return mean, var.clamp(min=eps).sqrt()


class MaskedBatchNorm1d(nn.Module):
    """BatchNorm over (N, C, T) whose batch statistics use only valid frames.

    ``nn.BatchNorm1d`` would count padded frames, making a sequence's output
    depend on how much padding its batch-mates forced on it.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalise x (N, C, T); ``mask`` (N, T) is True on valid frames."""
        if self.training:
            m = mask.unsqueeze(1).to(x.dtype)  # (N, 1, T)
            count = m.sum()
            if count < 2:
                raise ValueError("MaskedBatchNorm1d needs >= 2 valid frames in a training batch")
            mean = (x * m).sum(dim=(0, 2)) / count
            var = (((x - mean[None, :, None]) ** 2) * m).sum(dim=(0, 2)) / count
            with torch.no_grad():
                unbiased = var * count / (count - 1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return y * self.weight[None, :, None] + self.bias[None, :, None]


class AttentiveStatsPooling(nn.Module):
    """ECAPA-TDNN attentive statistics pooling: (N, T, C), (N,) -> (N, 2C) = [mean, std].

    Each channel gets its own softmax attention over frames. With
    ``global_context`` the attention network also sees the utterance-level
    mean and std of every channel (computed over valid frames), as in
    Desplanques et al. 2020, so frame weights can depend on the whole clip.
    """

    def __init__(
        self, in_dim: int, attention_channels: int = 128, global_context: bool = True, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if in_dim < 1 or attention_channels < 1:
            raise ValueError(f"in_dim={in_dim} and attention_channels={attention_channels} must be >= 1")
        self.in_dim = in_dim
        self.global_context = global_context
        self.eps = eps
        ctx_dim = 3 * in_dim if global_context else in_dim
        # 1x1 convs over time == per-frame Linear; TDNN block conv -> ReLU -> BN as in ECAPA.
        self.tdnn = nn.Conv1d(ctx_dim, attention_channels, kernel_size=1)
        self.norm = MaskedBatchNorm1d(attention_channels)
        self.attn = nn.Conv1d(attention_channels, in_dim, kernel_size=1)

    @property
    def out_dim(self) -> int:
        """Width of the pooled vector (mean and std concatenated)."""
        return 2 * self.in_dim

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Pool ``x`` (N, T, C) with valid lengths ``lens`` (N,) -> (N, 2C)."""
        _check_x_lens(x, lens)
        if x.size(2) != self.in_dim:
            raise ValueError(f"x has {x.size(2)} channels, AttentiveStatsPooling expects in_dim={self.in_dim}")
        n, t, _ = x.shape
        mask = lengths_to_mask(lens, t)  # (N, T)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # padding content must not matter
        xt = x.transpose(1, 2)  # (N, C, T)
        if self.global_context:
            uniform = mask.to(x.dtype).unsqueeze(-1) / lens.to(x.dtype)[:, None, None]  # (N, T, 1)
            mean, std = _weighted_stats(x, uniform, self.eps)
            ctx = torch.cat(
                [xt, mean.unsqueeze(-1).expand(-1, -1, t), std.unsqueeze(-1).expand(-1, -1, t)], dim=1
            )
        else:
            ctx = xt
        h = self.norm(torch.relu(self.tdnn(ctx)), mask)
        scores = self.attn(torch.tanh(h))  # (N, C, T)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        w = torch.softmax(scores, dim=2).transpose(1, 2)  # (N, T, C); padded frames get weight 0
        mean, std = _weighted_stats(x, w, self.eps)
        return torch.cat([mean, std], dim=1)
