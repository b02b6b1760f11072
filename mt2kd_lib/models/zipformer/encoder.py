"""Zipformer2 encoder stacks (U-Net-like multi-rate Transformer variant, Yao et al. 2023).

Input and output are (T, N, C) at the 50 Hz rate of the Conv2dSubsampling output; each stack runs
at 50 / ds Hz (ds in e.g. 1, 2, 4, 8, 4, 2) and the final output is downsampled by 2 (25 Hz).
"""

import random
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from mt2kd_lib.models.zipformer.attention import (
    CompactRelPositionalEncoding,
    NonlinAttention,
    RelPositionMultiheadAttentionWeights,
    SelfAttention,
    whitening_schedule,
)
from mt2kd_lib.models.zipformer.layers import (
    BypassModule,
    ConvolutionModule,
    FeedforwardModule,
    SimpleDownsample,
    SimpleUpsample,
    fill_padding_with_last_valid,
    sequence_dropout,
)
from mt2kd_lib.models.zipformer.scaling import (
    Balancer,
    BiasNorm,
    FloatLike,
    ScheduledFloat,
    Whiten,
    _copy_floatlike,
    convert_num_channels,
)


class Zipformer2EncoderLayer(nn.Module):
    """One Zipformer2 block (the published 'double' layout):

    ff1 -> NonlinAttention -> SelfAttention1 -> Conv1 -> ff2 -> mid-bypass -> SelfAttention2 -> Conv2
    -> ff3 -> BiasNorm -> bypass, where both SelfAttentions (and NonlinAttention, head 0) reuse one
    set of relative-position attention weights.  Skip rates are ScheduledFloats (training only).
    """

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int,
                 pos_head_dim: int, value_head_dim: int, feedforward_dim: int,
                 dropout: FloatLike = 0.1, cnn_module_kernel: int = 31, causal: bool = False) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.bypass = BypassModule(embed_dim, skip_rate=ScheduledFloat((0.0, 0.5), (4000.0, 0.02), default=0))
        self.bypass_mid = BypassModule(embed_dim)
        self.attention_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0)
        self.conv_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0)
        self.const_attention_rate = ScheduledFloat((0.0, 0.25), (4000.0, 0.025), default=0)
        self.ff2_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))

        self.self_attn_weights = RelPositionMultiheadAttentionWeights(
            embed_dim, pos_dim=pos_dim, num_heads=num_heads, query_head_dim=query_head_dim,
            pos_head_dim=pos_head_dim, dropout=0.0)
        self.self_attn1 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = FeedforwardModule(embed_dim, (feedforward_dim * 3) // 4, dropout)
        self.feed_forward2 = FeedforwardModule(embed_dim, feedforward_dim, dropout)
        self.feed_forward3 = FeedforwardModule(embed_dim, (feedforward_dim * 5) // 4, dropout)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        self.conv_module2 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        self.norm = BiasNorm(embed_dim)

        self.balancer1 = Balancer(embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55,
                                  min_abs=0.2, max_abs=4.0)
        self.balancer_na = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                    min_abs=ScheduledFloat((0.0, 0.004), (4000.0, 0.02)), prob=0.05)
        self.balancer_ff2 = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                     min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.1), default=0.0),
                                     max_abs=2.0, prob=0.05)
        self.balancer_ff3 = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                     min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.2), default=0.0),
                                     max_abs=4.0, prob=0.05)
        self.whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(4.0, ratio=3.0),
                             prob=(0.025, 0.25), grad_scale=0.01)
        self.balancer2 = Balancer(embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55,
                                  min_abs=0.1, max_abs=4.0)

    def forward(self, src: Tensor, pos_emb: Tensor, chunk_size: int = -1,
                attn_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """src: (T, N, C); pos_emb: (1, 2T-1, pos_dim); attn_mask: bool broadcastable to
        (H, N, T, T) (chunk + key-padding, True = masked); src_key_padding_mask: (N, T)."""
        src_orig = src
        training = self.training
        attention_skip_rate = float(self.attention_skip_rate) if training else 0.0
        conv_skip_rate = float(self.conv_skip_rate) if training else 0.0

        attn_weights = self.self_attn_weights(src, pos_emb=pos_emb, mask=attn_mask)

        src = src + self.feed_forward1(src)

        # one per-utterance keep mask shared by the three attention-type modules
        attn_keep = None
        if training and attention_skip_rate > 0.0:
            attn_keep = (torch.rand(src.shape[1], 1, device=src.device) > attention_skip_rate).to(src.dtype)

        selected = attn_weights[0:1]
        if training and random.random() < float(self.const_attention_rate):
            # constant (averaging) attention over the allowed positions, to encourage NonlinAttention
            # to also learn averaging-like behaviour
            selected = (selected > 0.0).to(selected.dtype)
            selected = selected / selected.sum(dim=-1, keepdim=True)

        na = self.balancer_na(self.nonlin_attention(src, selected))
        src = src + (na if attn_keep is None else na * attn_keep)

        sa = self.self_attn1(src, attn_weights)
        src = src + (sa if attn_keep is None else sa * attn_keep)

        src = src + sequence_dropout(
            self.conv_module1(src, src_key_padding_mask=src_key_padding_mask, chunk_size=chunk_size),
            conv_skip_rate, training)

        src = src + sequence_dropout(self.balancer_ff2(self.feed_forward2(src)),
                                     float(self.ff2_skip_rate) if training else 0.0, training)

        src = self.bypass_mid(src_orig, src)

        sa = self.self_attn2(src, attn_weights)
        src = src + (sa if attn_keep is None else sa * attn_keep)

        src = src + sequence_dropout(
            self.conv_module2(src, src_key_padding_mask=src_key_padding_mask, chunk_size=chunk_size),
            conv_skip_rate, training)

        src = src + sequence_dropout(self.balancer_ff3(self.feed_forward3(src)),
                                     float(self.ff3_skip_rate) if training else 0.0, training)

        src = self.norm(self.balancer1(src))
        src = self.bypass(src_orig, src)
        return self.whiten(self.balancer2(src))

    def get_init_states(self, left_context_len: int, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> List[Tensor]:
        """Zero caches, in icefall's (and sherpa-onnx's) order: cached_key (L, N, H*dq),
        cached_nonlin_attn (1, N, L, 3C/4), cached_val1, cached_val2 (L, N, H*dv),
        cached_conv1, cached_conv2 (N, C, kernel // 2)."""
        L, N = left_context_len, batch_size
        aw = self.self_attn_weights
        key_dim = aw.num_heads * aw.query_head_dim
        value_dim = self.self_attn1.in_proj.out_features
        conv = self.conv_module1.depthwise_conv.kernel_size // 2
        z = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        return [z(L, N, key_dim), z(1, N, L, self.nonlin_attention.hidden_channels), z(L, N, value_dim),
                z(L, N, value_dim), z(N, self.embed_dim, conv), z(N, self.embed_dim, conv)]

    def streaming_forward(self, src: Tensor, pos_emb: Tensor, states: List[Tensor],
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Inference on one chunk (eval mode): src (T, N, C); pos_emb (1, 2T-1+L, pos_dim);
        ``states`` as :meth:`get_init_states`; src_key_padding_mask (N, L+T) covers the cached and
        the current frames. Returns (out (T, N, C), new states)."""
        cached_key, cached_na, cached_val1, cached_val2, cached_conv1, cached_conv2 = states
        L = cached_key.shape[0]
        chunk_mask = src_key_padding_mask[:, L:]
        src_orig = src
        attn_weights, cached_key = self.self_attn_weights.streaming_forward(
            src, pos_emb, cached_key, src_key_padding_mask)
        src = src + self.feed_forward1(src)
        na, cached_na = self.nonlin_attention.streaming_forward(src, attn_weights[0:1], cached_na)
        src = src + na
        sa, cached_val1 = self.self_attn1.streaming_forward(src, attn_weights, cached_val1)
        src = src + sa
        conv, cached_conv1 = self.conv_module1.streaming_forward(src, cached_conv1, chunk_mask)
        src = src + conv
        src = src + self.feed_forward2(src)
        src = self.bypass_mid(src_orig, src)
        sa, cached_val2 = self.self_attn2.streaming_forward(src, attn_weights, cached_val2)
        src = src + sa
        conv, cached_conv2 = self.conv_module2.streaming_forward(src, cached_conv2, chunk_mask)
        src = src + conv
        src = src + self.feed_forward3(src)
        src = self.bypass(src_orig, self.norm(src))
        return src, [cached_key, cached_na, cached_val1, cached_val2, cached_conv1, cached_conv2]


def chunk_attention_mask(seq_len: int, chunk_size: int, left_context_chunks: int,
                         device: torch.device) -> Tensor:
    """(T, T) bool mask, True = masked: frame t may see its own chunk and ``left_context_chunks``
    previous chunks (all previous ones if left_context_chunks < 0)."""
    c = torch.arange(seq_len, device=device) // chunk_size
    src_c, tgt_c = c.unsqueeze(0), c.unsqueeze(1)
    mask = src_c > tgt_c
    if left_context_chunks >= 0:
        mask = mask | (src_c < tgt_c - left_context_chunks)
    return mask


class Zipformer2Encoder(nn.Module):
    """A stack of Zipformer2EncoderLayer at one frame rate, with its own positional encoding.

    Layer-drop: layer i's bypass skip rate goes from ``initial_layerdrop_rate`` to
    ``final_layerdrop_rate`` over its share of [warmup_begin, warmup_end] batches.
    """

    def __init__(self, layers: Sequence[Zipformer2EncoderLayer], pos_dim: int,
                 warmup_begin: float, warmup_end: float, initial_layerdrop_rate: float = 0.5,
                 final_layerdrop_rate: float = 0.05) -> None:
        super().__init__()
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15, length_factor=1.0)
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        if not 0 <= warmup_begin <= warmup_end:
            raise ValueError(f"bad warmup range [{warmup_begin}, {warmup_end}]")
        delta = (warmup_end - warmup_begin) / max(1, self.num_layers)
        cur = warmup_begin
        for layer in self.layers:
            layer.bypass.skip_rate = ScheduledFloat((cur, initial_layerdrop_rate),
                                                    (cur + delta, final_layerdrop_rate), default=0.0)
            cur += delta

    def forward(self, src: Tensor, chunk_size: int = -1, feature_mask: Union[Tensor, float] = 1.0,
                left_context_chunks: int = -1,
                src_key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """src: (T, N, C) at this stack's rate; chunk_size in this stack's frames (-1: none);
        src_key_padding_mask: (N, T)."""
        T = src.shape[0]
        pos_emb = self.encoder_pos(src)
        mask: Optional[Tensor] = None
        if chunk_size > 0:
            mask = chunk_attention_mask(T, chunk_size, left_context_chunks, src.device)[None, None]
        if src_key_padding_mask is not None:
            kp = src_key_padding_mask[None, :, None, :]  # (1, N, 1, T)
            mask = kp if mask is None else (mask | kp)
        output = src * feature_mask if isinstance(feature_mask, Tensor) else src
        for layer in self.layers:
            output = layer(output, pos_emb, chunk_size=chunk_size, attn_mask=mask,
                           src_key_padding_mask=src_key_padding_mask)
            if isinstance(feature_mask, Tensor):
                output = output * feature_mask
        return output

    def get_init_states(self, left_context_len: int, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> List[Tensor]:
        return [t for layer in self.layers for t in layer.get_init_states(left_context_len, batch_size, device)]

    def streaming_forward(self, src: Tensor, states: List[Tensor], left_context_len: int,
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """src (T, N, C) one chunk at this stack's rate; 6 states per layer; src_key_padding_mask
        (N, left_context_len + T)."""
        pos_emb = self.encoder_pos(src, left_context_len)
        new_states: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            src, st = layer.streaming_forward(src, pos_emb, states[6 * i: 6 * i + 6], src_key_padding_mask)
            new_states += st
        return src, new_states


class DownsampledZipformer2Encoder(nn.Module):
    """Runs a Zipformer2Encoder at 1/ds of the input rate: downsample -> encoder -> upsample ->
    learned bypass combination with the input."""

    def __init__(self, encoder: Zipformer2Encoder, dim: int, downsample: int) -> None:
        super().__init__()
        self.downsample_factor = downsample
        self.downsample = SimpleDownsample(downsample)
        self.encoder = encoder
        self.num_layers = encoder.num_layers
        self.upsample = SimpleUpsample(downsample)
        self.out_combiner = BypassModule(dim)

    def forward(self, src: Tensor, chunk_size: int = -1, feature_mask: Union[Tensor, float] = 1.0,
                left_context_chunks: int = -1,
                src_key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """src: (T, N, C) at the input rate; src_key_padding_mask: (N, T) at the input rate."""
        ds = self.downsample_factor
        src_orig = src
        src = self.downsample(fill_padding_with_last_valid(src, src_key_padding_mask))
        mask = None if src_key_padding_mask is None else src_key_padding_mask[:, ::ds]
        src = self.encoder(src, chunk_size=chunk_size // ds if chunk_size > 0 else -1,
                           feature_mask=feature_mask, left_context_chunks=left_context_chunks,
                           src_key_padding_mask=mask)
        src = self.upsample(src)[: src_orig.shape[0]]
        return self.out_combiner(src_orig, src)

    def get_init_states(self, left_context_len: int, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> List[Tensor]:
        return self.encoder.get_init_states(left_context_len, batch_size, device)

    def streaming_forward(self, src: Tensor, states: List[Tensor], left_context_len: int,
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """src (T, N, C) one chunk at the input rate (T divisible by the factor); left_context_len at
        the downsampled rate; src_key_padding_mask (N, ds * left_context_len + T) at the input rate."""
        ds = self.downsample_factor
        src_orig = src
        src = self.downsample(fill_padding_with_last_valid(src, src_key_padding_mask[:, ds * left_context_len:]))
        src, new_states = self.encoder.streaming_forward(src, states, left_context_len,
                                                         src_key_padding_mask[:, ::ds])
        return self.out_combiner(src_orig, self.upsample(src)), new_states


def _to_tuple(x: Union[int, Sequence[int]], n: int, name: str) -> Tuple[int, ...]:
    if isinstance(x, int):
        return (x,) * n
    x = tuple(int(v) for v in x)
    if len(x) == 1:
        return x * n
    if len(x) != n:
        raise ValueError(f"{name} has {len(x)} entries, expected 1 or {n} (one per stack)")
    return x


class Zipformer2(nn.Module):
    """The multi-stack Zipformer2 encoder.

    Args mirror icefall's: per-stack tuples (or single ints) for encoder_dim, num_encoder_layers,
    encoder_unmasked_dim, query/pos/value head dims, num_heads, feedforward_dim, cnn_module_kernel.
    ``causal`` enables chunk-causal convolutions and chunked attention masks; in training
    ``chunk_size`` / ``left_context_frames`` (50 Hz frames) are drawn at random per batch,
    in eval the first entries are used (-1 = full context).
    """

    def __init__(self, output_downsampling_factor: int = 2,
                 downsampling_factor: Sequence[int] = (2, 4),
                 encoder_dim: Union[int, Sequence[int]] = 384,
                 num_encoder_layers: Union[int, Sequence[int]] = 4,
                 encoder_unmasked_dim: Union[int, Sequence[int]] = 256,
                 query_head_dim: Union[int, Sequence[int]] = 24,
                 pos_head_dim: Union[int, Sequence[int]] = 4,
                 value_head_dim: Union[int, Sequence[int]] = 12,
                 num_heads: Union[int, Sequence[int]] = 8,
                 feedforward_dim: Union[int, Sequence[int]] = 1536,
                 cnn_module_kernel: Union[int, Sequence[int]] = 31,
                 pos_dim: int = 192,
                 dropout: Optional[FloatLike] = None,
                 warmup_batches: float = 4000.0,
                 causal: bool = False,
                 chunk_size: Sequence[int] = (-1,),
                 left_context_frames: Sequence[int] = (-1,)) -> None:
        super().__init__()
        if output_downsampling_factor != 2:
            raise ValueError(f"only output_downsampling_factor=2 is supported, got {output_downsampling_factor}")
        if dropout is None:
            dropout = ScheduledFloat((0.0, 0.3), (20000.0, 0.1))
        n = len(downsampling_factor)
        self.downsampling_factor = tuple(int(d) for d in downsampling_factor)
        self.encoder_dim = _to_tuple(encoder_dim, n, "encoder_dim")
        self.encoder_unmasked_dim = _to_tuple(encoder_unmasked_dim, n, "encoder_unmasked_dim")
        self.num_encoder_layers = _to_tuple(num_encoder_layers, n, "num_encoder_layers")
        query_head_dim = _to_tuple(query_head_dim, n, "query_head_dim")
        pos_head_dim = _to_tuple(pos_head_dim, n, "pos_head_dim")
        value_head_dim = _to_tuple(value_head_dim, n, "value_head_dim")
        self.num_heads = _to_tuple(num_heads, n, "num_heads")
        feedforward_dim = _to_tuple(feedforward_dim, n, "feedforward_dim")
        self.cnn_module_kernel = _to_tuple(cnn_module_kernel, n, "cnn_module_kernel")
        for u, d in zip(self.encoder_unmasked_dim, self.encoder_dim):
            if u > d:
                raise ValueError(f"encoder_unmasked_dim {u} > encoder_dim {d}")
        self.causal = causal
        self.chunk_size = list(chunk_size)
        self.left_context_frames = list(left_context_frames)
        if not causal and any(c > 0 for c in self.chunk_size):
            raise ValueError(f"chunk_size {self.chunk_size} requires causal=True")
        self.output_downsampling_factor = output_downsampling_factor
        for c in self.chunk_size:
            if c > 0:
                self.check_chunk_size(c)

        encoders: List[nn.Module] = []
        for i in range(n):
            layers = [
                Zipformer2EncoderLayer(
                    embed_dim=self.encoder_dim[i], pos_dim=pos_dim, num_heads=self.num_heads[i],
                    query_head_dim=query_head_dim[i], pos_head_dim=pos_head_dim[i],
                    value_head_dim=value_head_dim[i], feedforward_dim=feedforward_dim[i],
                    dropout=_copy_floatlike(dropout), cnn_module_kernel=self.cnn_module_kernel[i],
                    causal=causal)
                for _ in range(self.num_encoder_layers[i])
            ]
            # stacks warm up one after another, letting earlier parts learn first
            encoder: nn.Module = Zipformer2Encoder(
                layers, pos_dim=pos_dim,
                warmup_begin=warmup_batches * (i + 1) / (n + 1),
                warmup_end=warmup_batches * (i + 2) / (n + 1),
                final_layerdrop_rate=0.035 * (self.downsampling_factor[i] ** 0.5))
            if self.downsampling_factor[i] != 1:
                encoder = DownsampledZipformer2Encoder(encoder, dim=self.encoder_dim[i],
                                                       downsample=self.downsampling_factor[i])
            encoders.append(encoder)
        self.encoders = nn.ModuleList(encoders)
        self.downsample_output = SimpleDownsample(output_downsampling_factor)

    def get_feature_masks(self, x: Tensor) -> List[Union[Tensor, float]]:
        """Training only: per-utterance masks that zero channels above encoder_unmasked_dim
        (in two steps) for ~12.5% / ~25% of utterances, consistent across stacks."""
        n = len(self.encoder_dim)
        if not self.training:
            return [1.0] * n
        N = x.shape[1]
        p = 0.125
        mask1 = (torch.rand(1, N, 1, device=x.device) > p).to(x.dtype)
        mask2 = mask1 * (torch.rand(1, N, 1, device=x.device) > p).to(x.dtype)
        masks: List[Union[Tensor, float]] = []
        for i in range(n):
            c = self.encoder_dim[i]
            u1 = self.encoder_unmasked_dim[i]
            u2 = u1 + (c - u1) // 2
            m = torch.ones(1, N, c, dtype=x.dtype, device=x.device)
            m[:, :, u1:u2] = m[:, :, u1:u2] * mask1
            m[:, :, u2:] = m[:, :, u2:] * mask2
            masks.append(m)
        return masks

    def check_chunk_size(self, chunk_size: int) -> None:
        """Raise ValueError unless ``chunk_size`` (50 Hz frames) splits evenly at every stack's rate
        and at the 25 Hz output."""
        factors = sorted(set(self.downsampling_factor) | {self.output_downsampling_factor})
        bad = [d for d in factors if chunk_size % d != 0]
        if chunk_size <= 0 or bad:
            raise ValueError(f"chunk_size {chunk_size} (50 Hz frames) must be a positive multiple of every "
                             f"downsampling factor {tuple(factors)} (stacks and the 25 Hz output); "
                             f"not divisible by {bad}")

    def get_init_states(self, left_context_frames: int, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> List[Tensor]:
        """Zero caches of every layer (6 per layer, stacks in order) for ``left_context_frames``
        (50 Hz) of left context; stack i keeps left_context_frames // ds_i frames."""
        if not self.causal:
            raise RuntimeError("streaming needs a causal Zipformer2 (causal=True, e.g. the tiny-causal preset)")
        self.check_left_context(left_context_frames)
        return [t for ds, module in zip(self.downsampling_factor, self.encoders)
                for t in module.get_init_states(left_context_frames // ds, batch_size, device)]

    def check_left_context(self, left_context_frames: int) -> None:
        bad = [d for d in self.downsampling_factor if left_context_frames % d != 0]
        if left_context_frames <= 0 or bad:
            raise ValueError(f"left_context_frames {left_context_frames} (50 Hz frames) must be a positive "
                             f"multiple of every downsampling factor {self.downsampling_factor}")

    def streaming_forward(self, x: Tensor, x_lens: Tensor, states: List[Tensor],
                          src_key_padding_mask: Tensor
                          ) -> Tuple[Tensor, Tensor, List[Tensor], List[Tensor]]:
        """Inference on one chunk (eval mode, causal model).

        x: (T, N, encoder_dim[0]) at 50 Hz, T = the chunk size; x_lens: (N,) valid frames of it;
        states: as :meth:`get_init_states` (6 per layer); src_key_padding_mask: (N, L + T) at 50 Hz,
        L = left_context_frames, True for cached frames that do not exist yet and for padding.

        Returns (out (T/2, N, max(encoder_dim)), out_lens (N,), new states, per-stack outputs (T, N, d_i)).
        """
        if not self.causal:
            raise RuntimeError("streaming_forward needs a causal Zipformer2 (causal=True)")
        self.check_chunk_size(x.shape[0])
        left_frames = src_key_padding_mask.shape[1] - x.shape[0]
        self.check_left_context(left_frames)
        outputs: List[Tensor] = []
        new_states: List[Tensor] = []
        offset = 0
        for i, module in enumerate(self.encoders):
            ds = self.downsampling_factor[i]
            n = 6 * module.num_layers
            x = convert_num_channels(x, self.encoder_dim[i])
            # each stack takes the 50 Hz mask; downsampled ones reduce it themselves
            x, st = module.streaming_forward(x, states[offset: offset + n], left_frames // ds,
                                             src_key_padding_mask)
            offset += n
            new_states += st
            outputs.append(x)
        x = self._full_dim_output(outputs)
        x = self.downsample_output(fill_padding_with_last_valid(x, src_key_padding_mask[:, left_frames:]))
        lengths = torch.div(x_lens + 1, 2, rounding_mode="floor")
        return x, lengths, new_states, outputs

    def get_chunk_info(self) -> Tuple[int, int]:
        """(chunk_size, left_context_chunks) for this forward, in 50 Hz frames / chunks."""
        if not self.causal:
            return -1, -1
        pick = random.choice if self.training else (lambda xs: xs[0])
        chunk_size = int(pick(self.chunk_size))
        if chunk_size <= 0:
            return -1, -1
        left_frames = int(pick(self.left_context_frames))
        if left_frames < 0:
            return chunk_size, -1
        return chunk_size, max(1, left_frames // chunk_size)

    def _full_dim_output(self, outputs: List[Tensor]) -> Tensor:
        """Concatenate, for each channel index, the most recent stack output that has it."""
        pieces = [outputs[-1]]
        cur = self.encoder_dim[-1]
        for i in range(len(outputs) - 2, -1, -1):
            d = self.encoder_dim[i]
            if d > cur:
                pieces.append(outputs[i][..., cur:d])
                cur = d
        return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]

    def forward(self, x: Tensor, x_lens: Tensor, src_key_padding_mask: Optional[Tensor] = None,
                chunk_size: Optional[int] = None,
                left_context_chunks: Optional[int] = None) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """x: (T, N, encoder_dim[0]) at 50 Hz; x_lens: (N,); src_key_padding_mask: (N, T) or None.
        ``chunk_size`` / ``left_context_chunks`` override the random/default choice (causal only).

        Returns (out (ceil(T/2), N, max(encoder_dim)), out_lens (N,), per-stack outputs (T, N, d_i)).
        """
        if chunk_size is None:
            chunk_size, lc = self.get_chunk_info()
            left_context_chunks = lc if left_context_chunks is None else left_context_chunks
        elif chunk_size > 0:
            if not self.causal:
                raise ValueError("chunk_size > 0 requires a causal Zipformer2")
            self.check_chunk_size(chunk_size)
        if left_context_chunks is None:
            left_context_chunks = -1
        feature_masks = self.get_feature_masks(x)
        outputs: List[Tensor] = []
        for i, module in enumerate(self.encoders):
            x = convert_num_channels(x, self.encoder_dim[i])
            # both stack types take the 50 Hz padding mask; downsampled ones reduce it themselves
            x = module(x, chunk_size=chunk_size, feature_mask=feature_masks[i],
                       left_context_chunks=left_context_chunks,
                       src_key_padding_mask=src_key_padding_mask)
            outputs.append(x)
        x = self._full_dim_output(outputs)
        x = self.downsample_output(fill_padding_with_last_valid(x, src_key_padding_mask))
        lengths = torch.div(x_lens + 1, 2, rounding_mode="floor")
        return x, lengths, outputs
