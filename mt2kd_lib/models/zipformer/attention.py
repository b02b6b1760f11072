"""Attention parts of Zipformer2: compact relative positional encoding, relative-position
multi-head attention *weights* (computed once per layer), and the two consumers of those weights:
:class:`SelfAttention` and :class:`NonlinAttention`.

Layout convention: sequences are (T, N, C); attention weights are (H, N, T_tgt, T_src).
"""

import math
import random
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from mt2kd_lib.models.zipformer.scaling import (
    Balancer,
    FloatLike,
    ScaledLinear,
    ScheduledFloat,
    SharedDropout,
    Whiten,
    _copy_floatlike,
    penalize_abs_values_gt,
)


def whitening_schedule(x: float, ratio: float = 2.0) -> ScheduledFloat:
    """Whitening limit that relaxes from x to ratio*x over the first 20k batches."""
    return ScheduledFloat((0.0, x), (20000.0, ratio * x), default=x)


class CompactRelPositionalEncoding(nn.Module):
    """Relative positional encoding for offsets -(T-1)..(T-1).

    Offsets are compressed logarithmically and then mapped by atan to a finite interval before the
    Fourier features, so that large offsets that differ slightly get nearly identical encodings
    (the last channel is a constant 1 acting as a bias).
    """

    def __init__(self, embed_dim: int, dropout_rate: FloatLike, max_len: int = 1000,
                 length_factor: float = 1.0) -> None:
        super().__init__()
        if embed_dim % 2 != 0:
            raise ValueError(f"pos embed_dim must be even, got {embed_dim}")
        if length_factor < 1.0:
            raise ValueError(f"length_factor must be >= 1, got {length_factor}")
        self.embed_dim = embed_dim
        self.length_factor = length_factor
        self.dropout = SharedDropout(dropout_rate)
        self.pe: Optional[Tensor] = None
        self._extend(max_len, torch.device("cpu"), torch.float32)

    def _extend(self, T: int, device: torch.device, dtype: torch.dtype) -> None:
        if self.pe is not None and self.pe.shape[0] >= 2 * T - 1:
            if self.pe.device != device or self.pe.dtype != dtype:
                self.pe = self.pe.to(device=device, dtype=dtype)
            return
        x = torch.arange(-(T - 1), T, device=device, dtype=torch.float32).unsqueeze(1)
        freqs = 1 + torch.arange(self.embed_dim // 2, device=device, dtype=torch.float32)
        compression_length = self.embed_dim ** 0.5
        # d(x_compressed)/dx == 1 at 0; grows only logarithmically for large |x|
        x_compressed = compression_length * x.sign() * (
            (x.abs() + compression_length).log() - math.log(compression_length))
        length_scale = self.length_factor * self.embed_dim / (2.0 * math.pi)
        x_atan = (x_compressed / length_scale).atan()
        pe = torch.zeros(x.shape[0], self.embed_dim, device=device)
        pe[:, 0::2] = (x_atan * freqs).cos()
        pe[:, 1::2] = (x_atan * freqs).sin()
        pe[:, -1] = 1.0
        self.pe = pe.to(dtype)

    def forward(self, x: Tensor, left_context_len: int = 0) -> Tensor:
        """x: (T, N, *) -> (1, 2T-1+L, embed_dim), L = left_context_len (cached frames before x);
        row r encodes relative offset r - (T-1+L)."""
        T = x.shape[0]
        self._extend(T + left_context_len, x.device, x.dtype)
        assert self.pe is not None
        center = self.pe.shape[0] // 2
        pos_emb = self.pe[center - T - left_context_len + 1: center + T]  # offsets -(T-1+L) .. (T-1)
        return self.dropout(pos_emb.unsqueeze(0))


def rel_to_abs(pos_scores: Tensor, left_context_len: int = 0) -> Tensor:
    """(..., T, 2T-1+L) relative scores -> (..., T, T+L) with out[i, j] = in[i, T-1-i+j], i.e. the
    score of query i (key position L+i) for key j uses the encoding of offset j - (L+i).
    L = left_context_len cached keys precede the T queries (0 in the full pass).

    Done with a flat slice and reshape (no gather / as_strided), so the backward is a cheap copy.
    """
    *lead, T, P = pos_scores.shape
    L = left_context_len
    if P != 2 * T - 1 + L:
        raise ValueError(f"expected last dim 2T-1+L={2 * T - 1 + L}, got {P}")
    if T == 1:
        return pos_scores
    flat = pos_scores.reshape(*lead, T * P)
    # element (i, T-1-i+j) sits at flat index i*P + T-1-i+j = (T-1) + i*(P-1) + j
    flat = flat[..., T - 1: T - 1 + T * (P - 1)]
    return flat.reshape(*lead, T, P - 1)[..., :T + L]


class RelPositionMultiheadAttentionWeights(nn.Module):
    """Computes softmax attention weights (H, N, T, T) with query/key content scores plus
    relative-position scores (a small per-head positional query dotted with projected encodings).

    ``mask`` (broadcastable to (H, N, T, T), True = masked) combines key padding and chunk masks.
    """

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int,
                 pos_head_dim: int, dropout: float = 0.0,
                 pos_emb_skip_rate: FloatLike = ScheduledFloat((0.0, 0.5), (4000.0, 0.0))) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.dropout = dropout
        self.pos_emb_skip_rate = _copy_floatlike(pos_emb_skip_rate)
        in_proj_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        # initial_scale takes over the usual head_dim**-0.5 factor, split between query and key.
        self.in_proj = ScaledLinear(embed_dim, in_proj_dim, bias=True,
                                    initial_scale=query_head_dim ** -0.25)
        self.whiten_keys = Whiten(num_groups=num_heads, whitening_limit=whitening_schedule(3.0),
                                  prob=(0.025, 0.25), grad_scale=0.025)
        # keys' bias is mathematically irrelevant; keep it from drifting through roundoff.
        self.balance_keys = Balancer(query_head_dim * num_heads, channel_dim=-1, min_positive=0.4,
                                     max_positive=0.6, min_abs=0.0, max_abs=100.0, prob=0.025)
        self.linear_pos = ScaledLinear(pos_dim, num_heads * pos_head_dim, bias=False,
                                       initial_scale=0.05)

    def forward(self, x: Tensor, pos_emb: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x: (T, N, C); pos_emb: (1, 2T-1, pos_dim); mask: bool, broadcastable to (H, N, T, T)."""
        T, N, _ = x.shape
        H, dq, dp = self.num_heads, self.query_head_dim, self.pos_head_dim
        x = self.in_proj(x)
        q = x[..., : H * dq]
        k = x[..., H * dq: 2 * H * dq]
        p = x[..., 2 * H * dq:]
        k = self.whiten_keys(self.balance_keys(k))

        q = q.reshape(T, N, H, dq).permute(2, 1, 0, 3)  # (H, N, T, dq)
        k = k.reshape(T, N, H, dq).permute(2, 1, 3, 0)  # (H, N, dq, T)
        scores = torch.matmul(q, k)  # (H, N, T, T)

        use_pos = not self.training or random.random() >= float(self.pos_emb_skip_rate)
        if use_pos:
            p = p.reshape(T, N, H, dp).permute(2, 1, 0, 3)  # (H, N, T, dp)
            pe = self.linear_pos(pos_emb)  # (1, 2T-1, H*dp)
            pe = pe.reshape(-1, 2 * T - 1, H, dp).permute(2, 0, 3, 1)  # (H, 1, dp, 2T-1)
            scores = scores + rel_to_abs(torch.matmul(p, pe))

        if self.training and random.random() < 0.1:
            # failsafe against implausibly large scores
            scores = penalize_abs_values_gt(scores, limit=25.0, penalty=1.0e-04)

        if mask is not None:
            # -1000 (not -inf) so fully masked rows stay finite
            scores = scores.masked_fill(mask, -1000.0)
        weights = scores.softmax(dim=-1)
        if self.training and self.dropout > 0.0:
            weights = nn.functional.dropout(weights, p=self.dropout)
        return weights


    def streaming_forward(self, x: Tensor, pos_emb: Tensor, cached_key: Tensor,
                          key_padding_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Inference on one chunk: x (T, N, C); pos_emb (1, 2T-1+L, pos_dim); cached_key (L, N, H*dq),
        the keys of the L frames before the chunk; key_padding_mask (N, L+T), True = masked.

        Returns (weights (H, N, T, L+T), new cached_key (L, N, H*dq))."""
        T, N, _ = x.shape
        L = cached_key.shape[0]
        H, dq, dp = self.num_heads, self.query_head_dim, self.pos_head_dim
        x = self.in_proj(x)
        q = x[..., : H * dq]
        k = torch.cat([cached_key, x[..., H * dq: 2 * H * dq]], dim=0)  # (L+T, N, H*dq)
        p = x[..., 2 * H * dq:]
        new_cached_key = k[T:]
        q = q.reshape(T, N, H, dq).permute(2, 1, 0, 3)  # (H, N, T, dq)
        k = k.reshape(L + T, N, H, dq).permute(2, 1, 3, 0)  # (H, N, dq, L+T)
        scores = torch.matmul(q, k)  # (H, N, T, L+T)
        p = p.reshape(T, N, H, dp).permute(2, 1, 0, 3)  # (H, N, T, dp)
        pe = self.linear_pos(pos_emb)
        pe = pe.reshape(-1, 2 * T - 1 + L, H, dp).permute(2, 0, 3, 1)  # (H, 1, dp, 2T-1+L)
        scores = scores + rel_to_abs(torch.matmul(p, pe), L)
        scores = scores.masked_fill(key_padding_mask[None, :, None, :], -1000.0)
        return scores.softmax(dim=-1), new_cached_key


def _append_cache(cache: Tensor, x: Tensor, dim: int) -> Tuple[Tensor, Tensor]:
    """cat(cache, x) along ``dim`` and the last ``cache.shape[dim]`` entries of it (the new cache)."""
    full = torch.cat([cache, x], dim=dim)
    return full, full.narrow(dim, x.shape[dim], cache.shape[dim])


class SelfAttention(nn.Module):
    """Weighted sum of projected values using precomputed attention weights."""

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, num_heads * value_head_dim, bias=True)
        self.out_proj = ScaledLinear(num_heads * value_head_dim, embed_dim, bias=True,
                                     initial_scale=0.05)
        self.whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(7.5, ratio=3.0),
                             prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor, attn_weights: Tensor) -> Tensor:
        """x: (T, N, C); attn_weights: (H, N, T, T) -> (T, N, C)."""
        T, N, _ = x.shape
        H = attn_weights.shape[0]
        v = self.in_proj(x).reshape(T, N, H, -1).permute(2, 1, 0, 3)  # (H, N, T, dv)
        o = torch.matmul(attn_weights, v)  # (H, N, T, dv)
        o = o.permute(2, 1, 0, 3).reshape(T, N, -1)
        return self.whiten(self.out_proj(o))

    def streaming_forward(self, x: Tensor, attn_weights: Tensor, cached_val: Tensor
                          ) -> Tuple[Tensor, Tensor]:
        """x: (T, N, C); attn_weights (H, N, T, L+T); cached_val (L, N, H*dv), the values of the L
        frames before the chunk -> ((T, N, C), new cached_val)."""
        T, N, _ = x.shape
        H = attn_weights.shape[0]
        v, new_cache = _append_cache(cached_val, self.in_proj(x), dim=0)
        v = v.reshape(v.shape[0], N, H, -1).permute(2, 1, 0, 3)  # (H, N, L+T, dv)
        o = torch.matmul(attn_weights, v).permute(2, 1, 0, 3).reshape(T, N, -1)
        return self.out_proj(o), new_cache


class NonlinAttention(nn.Module):
    """Like a convolution module but with attention weights (head 0 only) in place of the conv:
    out = W_o( (A @ (x * tanh(s))) * y ), where [s, x, y] = W_in(input)."""

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_proj = nn.Linear(channels, hidden_channels * 3, bias=True)
        self.balancer = Balancer(hidden_channels, channel_dim=-1,
                                 min_positive=ScheduledFloat((0.0, 0.25), (20000.0, 0.05)),
                                 max_positive=ScheduledFloat((0.0, 0.75), (20000.0, 0.95)),
                                 min_abs=0.5, max_abs=5.0)
        self.out_proj = ScaledLinear(hidden_channels, channels, bias=True, initial_scale=0.05)
        self.whiten1 = Whiten(num_groups=1, whitening_limit=whitening_schedule(5.0),
                              prob=(0.025, 0.25), grad_scale=0.01)
        self.whiten2 = Whiten(num_groups=1, whitening_limit=whitening_schedule(5.0, ratio=3.0),
                              prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor, attn_weights: Tensor) -> Tensor:
        """x: (T, N, C); attn_weights: (H', N, T, T) (typically H'=1) -> (T, N, C)."""
        T, N, _ = x.shape
        s, v, y = self.in_proj(x).chunk(3, dim=-1)
        s = torch.tanh(self.balancer(s))
        v = self.whiten1(v) * s
        H = attn_weights.shape[0]
        v = v.reshape(T, N, H, -1).permute(2, 1, 0, 3)  # (H, N, T, d)
        v = torch.matmul(attn_weights, v)
        v = v.permute(2, 1, 0, 3).reshape(T, N, -1)
        return self.whiten2(self.out_proj(v * y))

    def streaming_forward(self, x: Tensor, attn_weights: Tensor, cached_x: Tensor
                          ) -> Tuple[Tensor, Tensor]:
        """x: (T, N, C); attn_weights (1, N, T, L+T); cached_x (1, N, L, hidden), the gated values of
        the L frames before the chunk -> ((T, N, C), new cached_x)."""
        T, N, _ = x.shape
        s, v, y = self.in_proj(x).chunk(3, dim=-1)
        v = v * torch.tanh(s)
        v, new_cache = _append_cache(cached_x, v.permute(1, 0, 2).unsqueeze(0), dim=2)  # (1, N, L+T, h)
        v = torch.matmul(attn_weights, v)  # (1, N, T, h)
        v = v.squeeze(0).permute(1, 0, 2)  # (T, N, h)
        return self.out_proj(v * y), new_cache
