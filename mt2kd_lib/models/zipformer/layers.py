"""Non-attention sub-modules of Zipformer2: feed-forward, convolution (optionally chunk-causal),
learned bypass, and the simple down/up-sampling used between stacks.  Layout: (T, N, C)."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mt2kd_lib.models.zipformer.attention import _append_cache, whitening_schedule
from mt2kd_lib.models.zipformer.scaling import (
    ActivationDropoutAndLinear,
    Balancer,
    FloatLike,
    ScheduledFloat,
    Whiten,
    _copy_floatlike,
    contiguous_grad,
    limit_param_value,
)


class FeedforwardModule(nn.Module):
    """Linear -> SwooshL -> dropout (shared over time) -> Linear."""

    def __init__(self, embed_dim: int, feedforward_dim: int, dropout: FloatLike) -> None:
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, feedforward_dim)
        self.hidden_balancer = Balancer(feedforward_dim, channel_dim=-1, min_positive=0.3,
                                        max_positive=1.0, min_abs=0.75, max_abs=5.0)
        self.out_proj = ActivationDropoutAndLinear(feedforward_dim, embed_dim, activation="SwooshL",
                                                   dropout_p=dropout, dropout_shared_dim=0,
                                                   bias=True, initial_scale=0.1)
        self.out_whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(7.5),
                                 prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_whiten(self.out_proj(self.hidden_balancer(self.in_proj(x))))


class ChunkCausalDepthwiseConv1d(nn.Module):
    """Depthwise conv that is causal across chunks: a causal conv of half width over the past
    (left padding only) plus a full-width conv applied within each chunk, whose output is scaled by
    learned position-in-chunk corrections near the chunk edges.  Input (N, C, T)."""

    def __init__(self, channels: int, kernel_size: int, initial_scale: float = 1.0,
                 bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        half = (kernel_size + 1) // 2
        self.kernel_size = kernel_size
        self.causal_conv = nn.Conv1d(channels, channels, half, groups=channels, padding=0, bias=True)
        self.chunkwise_conv = nn.Conv1d(channels, channels, kernel_size, groups=channels,
                                        padding=kernel_size // 2, bias=bias)
        # row 0: corrections near the chunk's left edge, row 1: near its right edge (added to 1.0)
        self.chunkwise_conv_scale = nn.Parameter(torch.zeros(2, channels, kernel_size))
        with torch.no_grad():
            self.causal_conv.weight.mul_(initial_scale)
            self.chunkwise_conv.weight.mul_(initial_scale)
            nn.init.uniform_(self.causal_conv.bias, -0.1 * initial_scale, 0.1 * initial_scale)

    def _chunk_scale(self, chunk_size: int) -> Tensor:
        left, right = self.chunkwise_conv_scale[0], self.chunkwise_conv_scale[1]
        k = self.kernel_size
        if chunk_size < k:
            left, right = left[:, :chunk_size], right[:, -chunk_size:]
        else:
            pad = left.new_zeros(left.shape[0], chunk_size - k)
            left, right = torch.cat((left, pad), dim=-1), torch.cat((pad, right), dim=-1)
        return 1.0 + left + right  # (C, chunk_size)

    def forward(self, x: Tensor, chunk_size: int = -1) -> Tensor:
        N, C, T = x.shape
        left_pad = self.kernel_size // 2
        if chunk_size <= 0 or chunk_size > T:
            chunk_size = T
        right_pad = (-T) % chunk_size
        x = F.pad(x, (left_pad, right_pad))
        x_causal = self.causal_conv(x[..., : left_pad + T])
        xc = x[..., left_pad:]
        nc = xc.shape[2] // chunk_size
        xc = xc.reshape(N, C, nc, chunk_size).permute(0, 2, 1, 3).reshape(N * nc, C, chunk_size)
        xc = self.chunkwise_conv(xc) * self._chunk_scale(chunk_size)
        xc = xc.reshape(N, nc, C, chunk_size).permute(0, 2, 1, 3).reshape(N, C, nc * chunk_size)
        return xc[..., :T] + x_causal

    def streaming_forward(self, x: Tensor, cache: Tensor) -> Tuple[Tensor, Tensor]:
        """x (N, C, T) is one whole chunk; cache (N, C, kernel_size // 2) the frames before it ->
        ((N, C, T), new cache)."""
        x, new_cache = _append_cache(cache, x, dim=2)
        x_causal = self.causal_conv(x)
        xc = self.chunkwise_conv(x[..., cache.shape[2]:])
        return xc * self._chunk_scale(xc.shape[2]) + x_causal, new_cache


class ConvolutionModule(nn.Module):
    """in_proj -> x * sigmoid(s) -> (mask padding) -> depthwise conv -> SwooshR -> out_proj."""

    def __init__(self, channels: int, kernel_size: int, causal: bool) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"cnn_module_kernel must be odd, got {kernel_size}")
        self.causal = causal
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.balancer1 = Balancer(channels, channel_dim=-1,
                                  min_positive=ScheduledFloat((0.0, 0.05), (8000.0, 0.025)),
                                  max_positive=1.0, min_abs=1.5,
                                  max_abs=ScheduledFloat((0.0, 5.0), (8000.0, 10.0), default=1.0))
        if causal:
            self.depthwise_conv: nn.Module = ChunkCausalDepthwiseConv1d(channels, kernel_size)
        else:
            self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, groups=channels,
                                            padding=kernel_size // 2)
        self.balancer2 = Balancer(channels, channel_dim=1,
                                  min_positive=ScheduledFloat((0.0, 0.1), (8000.0, 0.05)),
                                  max_positive=1.0,
                                  min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0)
        self.whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(7.5),
                             prob=(0.025, 0.25), grad_scale=0.01)
        self.out_proj = ActivationDropoutAndLinear(channels, channels, activation="SwooshR",
                                                   dropout_p=0.0, initial_scale=0.05)

    def forward(self, x: Tensor, src_key_padding_mask: Optional[Tensor] = None,
                chunk_size: int = -1) -> Tensor:
        """x: (T, N, C); src_key_padding_mask: (N, T) True at padding."""
        x, s = self.in_proj(x).chunk(2, dim=-1)
        x = x * torch.sigmoid(self.balancer1(s))
        x = x.permute(1, 2, 0)  # (N, C, T)
        if src_key_padding_mask is not None:
            # zero padding so the conv sees the same zeros as for an unpadded utterance
            x = x.masked_fill(src_key_padding_mask.unsqueeze(1), 0.0)
        if self.causal:
            x = self.depthwise_conv(x, chunk_size=chunk_size)
        else:
            x = self.depthwise_conv(x)
        x = contiguous_grad(self.balancer2(x))
        x = x.permute(2, 0, 1)  # (T, N, C)
        return self.out_proj(self.whiten(x))

    def streaming_forward(self, x: Tensor, cache: Tensor, src_key_padding_mask: Tensor
                          ) -> Tuple[Tensor, Tensor]:
        """Causal modules only. x (T, N, C) one chunk; cache (N, C, kernel_size // 2);
        src_key_padding_mask (N, T) -> ((T, N, C), new cache)."""
        if not self.causal:
            raise RuntimeError("streaming needs a causal ConvolutionModule (causal=True)")
        x, s = self.in_proj(x).chunk(2, dim=-1)
        x = x * torch.sigmoid(s)
        x = x.permute(1, 2, 0).masked_fill(src_key_padding_mask.unsqueeze(1), 0.0)  # (N, C, T)
        x, new_cache = self.depthwise_conv.streaming_forward(x, cache)
        return self.out_proj(x.permute(2, 0, 1)), new_cache


class BypassModule(nn.Module):
    """out = src_orig + (src - src_orig) * scale, with a learned per-channel scale limited to
    [scale_min, scale_max] in training and per-utterance random layer skipping (scale -> 0)."""

    def __init__(self, embed_dim: int, skip_rate: FloatLike = 0.0,
                 scale_min: FloatLike = ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0),
                 scale_max: FloatLike = 1.0) -> None:
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.skip_rate = _copy_floatlike(skip_rate)
        self.scale_min = _copy_floatlike(scale_min)
        self.scale_max = _copy_floatlike(scale_max)

    def _scale(self, batch_size: int) -> Tensor:
        if not self.training:
            return self.bypass_scale
        ans = limit_param_value(self.bypass_scale, float(self.scale_min), float(self.scale_max))
        skip_rate = float(self.skip_rate)
        if skip_rate != 0.0:
            keep = torch.rand(batch_size, 1, device=ans.device) > skip_rate
            ans = ans * keep.to(ans.dtype)  # (N, C)
        return ans

    def forward(self, src_orig: Tensor, src: Tensor) -> Tensor:
        return src_orig + (src - src_orig) * self._scale(src.shape[1])


def fill_padding_with_last_valid(x: Tensor, src_key_padding_mask: Optional[Tensor]) -> Tensor:
    """Replace padded frames of x (T, N, C) by each utterance's last valid frame.

    An utterance processed alone is right-padded by repeating its last frame before downsampling;
    doing the same inside a padded batch keeps valid outputs independent of the padding.
    """
    if src_key_padding_mask is None:
        return x
    lengths = (~src_key_padding_mask).sum(dim=1).clamp(min=1)  # (N,)
    last = x[lengths - 1, torch.arange(x.shape[1], device=x.device)]  # (N, C)
    return torch.where(src_key_padding_mask.t().unsqueeze(-1), last.unsqueeze(0), x)


class SimpleDownsample(nn.Module):
    """Downsample (T, N, C) -> (ceil(T/ds), N, C) by a learned softmax-weighted sum of each group
    of ``ds`` frames (the sequence is right-padded by repeating its last frame)."""

    def __init__(self, downsample: int) -> None:
        super().__init__()
        self.downsample = downsample
        self.bias = nn.Parameter(torch.zeros(downsample))

    def forward(self, src: Tensor) -> Tensor:
        T, N, C = src.shape
        ds = self.downsample
        d_len = (T + ds - 1) // ds
        pad = d_len * ds - T
        if pad > 0:
            src = torch.cat((src, src[-1:].expand(pad, N, C)), dim=0)
        w = self.bias.softmax(dim=0)
        # (d_len, ds, N*C) weighted over the ds axis with one batched matmul
        return torch.matmul(w, src.reshape(d_len, ds, N * C)).reshape(d_len, N, C)


class SimpleUpsample(nn.Module):
    """Repeat each frame ``upsample`` times: (T, N, C) -> (T*upsample, N, C)."""

    def __init__(self, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample

    def forward(self, src: Tensor) -> Tensor:
        T, N, C = src.shape
        return src.unsqueeze(1).expand(T, self.upsample, N, C).reshape(T * self.upsample, N, C)


def sequence_dropout(x: Tensor, rate: float, training: bool) -> Tensor:
    """Zero a whole module output for a random subset of utterances (x: (T, N, C))."""
    if not training or rate == 0.0:
        return x
    keep = (torch.rand(x.shape[1], 1, device=x.device) > rate).to(x.dtype)
    return x * keep

