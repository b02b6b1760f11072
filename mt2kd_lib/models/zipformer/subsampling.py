"""Convolutional front-end of Zipformer2: 100 Hz fbank -> ~50 Hz embeddings, T' = (T - 7) // 2."""

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from mt2kd_lib.models.zipformer.scaling import (
    Balancer,
    BiasNorm,
    FloatLike,
    ScaledConv2d,
    ScaleGrad,
    ScheduledFloat,
    SharedDropout,
    SwooshL,
    SwooshR,
    Whiten,
    _copy_floatlike,
)


class ConvNeXt(nn.Module):
    """ConvNeXt block on (N, C, T, F): depthwise 7x7 conv -> 1x1 up (x3) -> SwooshL -> 1x1 down,
    residual, with per-utterance layer drop in training.

    Runs channels-last internally (the 1x1 convs become matmuls): oneDNN's NCHW depthwise-conv
    backward is slow and erratic on CPU, the NHWC one is several times faster.
    """

    def __init__(self, channels: int, hidden_ratio: int = 3, kernel_size: Tuple[int, int] = (7, 7),
                 layerdrop_rate: Optional[FloatLike] = None) -> None:
        super().__init__()
        self.padding = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        self.channels = channels
        self.hidden = channels * hidden_ratio
        if layerdrop_rate is None:
            layerdrop_rate = ScheduledFloat((0.0, 0.2), (20000.0, 0.015))
        self.layerdrop_rate = _copy_floatlike(layerdrop_rate)
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size, groups=channels,
                                        padding=self.padding)
        self.pointwise_conv1 = nn.Conv2d(channels, self.hidden, kernel_size=1)
        self.hidden_balancer = Balancer(self.hidden, channel_dim=-1, min_positive=0.3,
                                        max_positive=1.0, min_abs=0.75, max_abs=5.0)
        self.activation = SwooshL()
        self.pointwise_conv2 = ScaledConv2d(self.hidden, channels, kernel_size=1, initial_scale=0.01)
        self.out_balancer = Balancer(channels, channel_dim=-1, min_positive=0.4, max_positive=0.6,
                                     min_abs=1.0, max_abs=6.0)
        self.out_whiten = Whiten(num_groups=1, whitening_limit=5.0, prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, T, F) -> (N, T, F, C) (channels last, contiguous)."""
        x = x.contiguous(memory_format=torch.channels_last)
        bypass = x.permute(0, 2, 3, 1)  # (N, T, F, C), contiguous
        y = self._pointwise(self.depthwise_conv(x).permute(0, 2, 3, 1))
        rate = float(self.layerdrop_rate) if self.training else 0.0
        if rate > 0.0:
            keep = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) > rate).to(y.dtype)
            y = y * keep
        return self.out_whiten(self.out_balancer(bypass + y))

    def _pointwise(self, y: Tensor) -> Tensor:
        """(N, T, F, C) depthwise-conv output -> 1x1 up -> SwooshL -> 1x1 down."""
        y = nn.functional.linear(y, self.pointwise_conv1.weight.view(self.hidden, self.channels),
                                 self.pointwise_conv1.bias)
        y = self.activation(self.hidden_balancer(y))
        return nn.functional.linear(y, self.pointwise_conv2.weight.view(self.channels, self.hidden),
                                    self.pointwise_conv2.bias)

    def streaming_forward(self, x: Tensor, cached_left_pad: Tensor) -> Tuple[Tensor, Tensor]:
        """Inference on one chunk: x (N, C, T + R, F) ends with R = padding[0] look-ahead frames;
        cached_left_pad (N, C, R, F) holds the previous chunk's last R frames (zeros at the start,
        as the full pass's zero padding). Returns ((N, T, F, C), new cache)."""
        r = self.padding[0]
        t = x.shape[2] - r
        bypass = x[:, :, :t].permute(0, 2, 3, 1)
        x = torch.cat([cached_left_pad, x], dim=2)  # (N, C, R + T + R, F)
        new_cache = x[:, :, t: t + r]
        y = nn.functional.conv2d(x, self.depthwise_conv.weight, self.depthwise_conv.bias,
                                 padding=(0, self.padding[1]), groups=self.channels)
        return self.out_whiten(self.out_balancer(bypass + self._pointwise(y.permute(0, 2, 3, 1)))), new_cache


class Conv2dSubsampling(nn.Module):
    """(N, T, idim) -> (N, (T - 7) // 2, odim).

    conv3x3(1->8, time unpadded) -> conv3x3 stride 2 (8->32) -> conv3x3 stride (1, 2) (32->128)
    -> ConvNeXt -> Linear(128 * F', odim) -> BiasNorm -> dropout.

    Frames beyond each utterance's valid length are zeroed before the ConvNeXt (whose 7-frame time
    kernel would otherwise read them), so batching with padding does not change valid outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, layer1_channels: int = 8,
                 layer2_channels: int = 32, layer3_channels: int = 128,
                 dropout: FloatLike = 0.1) -> None:
        super().__init__()
        if in_channels < 7:
            raise ValueError(f"Conv2dSubsampling needs in_channels >= 7, got {in_channels}")
        self.in_channels = in_channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1_channels, kernel_size=3, padding=(0, 1)),
            ScaleGrad(0.2),
            Balancer(layer1_channels, channel_dim=1, max_abs=1.0),
            SwooshR(),
            nn.Conv2d(layer1_channels, layer2_channels, kernel_size=3, stride=2, padding=0),
            Balancer(layer2_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
            nn.Conv2d(layer2_channels, layer3_channels, kernel_size=3, stride=(1, 2)),
            Balancer(layer3_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
        )
        self.convnext = ConvNeXt(layer3_channels, kernel_size=(7, 7))
        self.out_width = (((in_channels - 1) // 2) - 1) // 2
        self.layer3_channels = layer3_channels
        self.out = nn.Linear(self.out_width * layer3_channels, out_channels)
        self.out_whiten = Whiten(num_groups=1,
                                 whitening_limit=ScheduledFloat((0.0, 4.0), (20000.0, 8.0), default=4.0),
                                 prob=(0.025, 0.25), grad_scale=0.02)
        self.out_norm = BiasNorm(out_channels)
        self.dropout = SharedDropout(dropout, shared_dim=1)

    @staticmethod
    def output_lengths(x_lens: Tensor) -> Tensor:
        """Number of 50 Hz frames for ``x_lens`` 100 Hz frames."""
        return torch.div(x_lens - 7, 2, rounding_mode="floor")

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (N, T, idim), x_lens: (N,) -> ((N, (T-7)//2, odim), (N,) lengths)."""
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"Conv2dSubsampling expects (N, T, {self.in_channels}), got {tuple(x.shape)}")
        if x.shape[1] < 9:
            raise ValueError(f"need at least 9 input frames, got T={x.shape[1]}")
        out_lens = self.output_lengths(x_lens)
        # channels-last all the way: oneDNN convs (and their backward) are faster in NHWC on CPU,
        # and the ConvNeXt below needs NHWC anyway
        x = self.conv(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (N, C, T', F')
        t_out = x.shape[2]
        if int(out_lens.min()) < t_out:
            valid = torch.arange(t_out, device=x.device).unsqueeze(0) < out_lens.unsqueeze(1)
            x = x * valid[:, None, :, None].to(x.dtype)
        x = self.convnext(x)  # (N, T', F', C)
        return self._project(x), out_lens

    def _project(self, x: Tensor) -> Tensor:
        """ConvNeXt output (N, T', F', C) -> (N, T', odim)."""
        n, t, f, c = x.shape
        # self.out expects channel-major (C, F') flattening; permuting its (small) weight to
        # (F', C) order instead of the (large) activation saves a copy forward and backward
        w = self.out.weight.view(-1, c, f).transpose(1, 2).reshape(-1, f * c)
        x = nn.functional.linear(x.reshape(n, t, f * c), w, self.out.bias)
        x = self.out_whiten(x)
        x = self.out_norm(x)
        return self.dropout(x)

    @property
    def lookahead(self) -> int:
        """50 Hz frames of right context the ConvNeXt needs (its time padding)."""
        return self.convnext.padding[0]

    def get_init_states(self, batch_size: int = 1, device: torch.device = torch.device("cpu")) -> Tensor:
        """Zero left-context cache of the ConvNeXt, (N, layer3_channels, lookahead, F')."""
        return torch.zeros(batch_size, self.layer3_channels, self.lookahead, self.out_width, device=device)

    def streaming_forward(self, x: Tensor, x_lens: Tensor, cached_left_pad: Tensor
                          ) -> Tuple[Tensor, Tensor, Tensor]:
        """One chunk: x (N, 2 * C + 7 + 2 * lookahead, idim) -> ((N, C, odim), valid lengths (N,),
        new cache). Consecutive chunks overlap by 7 + 2 * lookahead fbank frames (the convs' receptive
        field and the ConvNeXt's look-ahead), so chunk outputs equal the full pass's frames.

        ``x_lens`` counts the valid fbank frames of this chunk (fewer at the end of an utterance);
        the ConvNeXt sees zeros beyond them, as in the full pass.
        """
        conv_lens = self.output_lengths(x_lens)
        x = self.conv(x.unsqueeze(1))  # (N, C, T', F')
        valid = torch.arange(x.shape[2], device=x.device).unsqueeze(0) < conv_lens.unsqueeze(1)
        x = x * valid[:, None, :, None].to(x.dtype)
        x, new_cache = self.convnext.streaming_forward(x, cached_left_pad)
        # the look-ahead frames belong to the next chunk; at an utterance's end there are none
        out_lens = torch.clamp(conv_lens, min=0, max=x.shape[1])
        return self._project(x), out_lens, new_cache
