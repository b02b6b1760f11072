"""Building blocks of the Zipformer2 family (pure torch, no k2).

Follows the published icefall ``scaling.py`` design:

* :class:`ScheduledFloat` -- a float that is a piecewise-linear function of the training batch count
  (used for dropout / skip rates / constraint limits); ``set_batch_count`` writes the count.
* :func:`swoosh_l` / :func:`swoosh_r` -- the Swoosh activations with a cheap custom backward.
* :class:`Balancer` and :class:`Whiten` -- identity in forward, in backward they add a small gradient
  term that pushes per-channel statistics (sign balance, rms) or the feature covariance (whiteness)
  towards allowed ranges.
* :class:`BiasNorm` -- LayerNorm replacement with a learned bias used only for the scale and a scalar
  learned log-scale.
* ``ScaledLinear`` / ``ScaledConv2d`` -- ordinary layers with down-scaled initialisation.
"""

import math
import random
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ScheduledFloat(nn.Module):
    """A float that depends piecewise-linearly on the batch count.

    It is an ``nn.Module`` only so that it shows up in ``model.modules()`` and receives the batch count
    from :func:`set_batch_count`.  Use it as ``float(self.some_rate)``.  When the batch count is unset,
    the module is in eval mode, or scripting, ``default`` is returned.
    """

    def __init__(self, *points: Tuple[float, float], default: float = 0.0) -> None:
        super().__init__()
        if len(points) == 0:
            raise ValueError("ScheduledFloat needs at least one (batch_count, value) point")
        pts = [(float(x), float(y)) for x, y in points]
        for (x0, _), (x1, _) in zip(pts[:-1], pts[1:]):
            if not x1 > x0:
                raise ValueError(f"ScheduledFloat points must have increasing x, got {pts}")
        self.points = pts
        self.default = float(default)
        self.batch_count: Optional[float] = None
        self.name: Optional[str] = None

    def value_at(self, x: float) -> float:
        """The schedule's value at batch count ``x`` (clamped to the end points)."""
        pts = self.points
        if x <= pts[0][0]:
            return pts[0][1]
        if x >= pts[-1][0]:
            return pts[-1][1]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            if x0 <= x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        raise AssertionError("unreachable")

    def __float__(self) -> float:
        if self.batch_count is None or not self.training or torch.jit.is_scripting():
            return self.default
        return self.value_at(self.batch_count)

    def extra_repr(self) -> str:
        return f"batch_count={self.batch_count}, points={self.points}, default={self.default}"


FloatLike = Union[float, ScheduledFloat]


def set_batch_count(model: nn.Module, batch_count: float) -> None:
    """Tell every module that has a ``batch_count`` attribute (schedules) the current batch count."""
    for m in model.modules():
        if hasattr(m, "batch_count"):
            m.batch_count = batch_count


def _copy_floatlike(x: FloatLike) -> FloatLike:
    """Each module needs its own ScheduledFloat instance (so modules() sees them separately)."""
    if isinstance(x, ScheduledFloat):
        return ScheduledFloat(*x.points, default=x.default)
    return float(x)


# ----------------------------------------------------------------------------------------------
# Swoosh activations
# ----------------------------------------------------------------------------------------------


def _swoosh_value(x: Tensor, offset: float, const: float) -> Tensor:
    """softplus(x - offset) - 0.08 x - const, with in-place steps.

    The activations of the subsampling front-end have up to ~1e8 elements; every freshly allocated
    full-size temporary costs a page-faulting pass over memory on CPU, so use one output buffer.
    """
    y = F.softplus(x - offset)
    return y.add_(x, alpha=-0.08).sub_(const)


class _SwooshFunction(torch.autograd.Function):
    """swoosh(x) = softplus(x - offset) - 0.08 x - const; backward only needs x (one saved tensor)."""

    @staticmethod
    def forward(ctx, x: Tensor, offset: float, const: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.offset = offset
        return _swoosh_value(x, offset, const)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # (sigmoid(x - offset) - 0.08) * grad, in a single buffer
        d = torch.sub(x, ctx.offset)
        return d.sigmoid_().sub_(0.08).mul_(grad), None, None


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035."""
    if not x.requires_grad:
        return _swoosh_value(x, 4.0, 0.035)
    return _SwooshFunction.apply(x, 4.0, 0.035)


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687."""
    if not x.requires_grad:
        return _swoosh_value(x, 1.0, 0.313261687)
    return _SwooshFunction.apply(x, 1.0, 0.313261687)


class SwooshL(nn.Module):
    """Module wrapper of :func:`swoosh_l`."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class SwooshR(nn.Module):
    """Module wrapper of :func:`swoosh_r`."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


# ----------------------------------------------------------------------------------------------
# Scaled-init layers and dropout
# ----------------------------------------------------------------------------------------------


def _scale_init(m: nn.Module, initial_scale: float) -> nn.Module:
    with torch.no_grad():
        m.weight.mul_(initial_scale)
        if getattr(m, "bias", None) is not None:
            nn.init.uniform_(m.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return m


def ScaledLinear(in_features: int, out_features: int, bias: bool = True,
                 initial_scale: float = 1.0) -> nn.Linear:
    """An ``nn.Linear`` whose initial weights are multiplied by ``initial_scale`` (small bias init)."""
    return _scale_init(nn.Linear(in_features, out_features, bias=bias), initial_scale)


def ScaledConv2d(*args, initial_scale: float = 1.0, **kwargs) -> nn.Conv2d:
    """An ``nn.Conv2d`` whose initial weights are multiplied by ``initial_scale``."""
    return _scale_init(nn.Conv2d(*args, **kwargs), initial_scale)


class SharedDropout(nn.Module):
    """Dropout whose mask is shared along ``shared_dim`` (e.g. the time axis), rate may be scheduled."""

    def __init__(self, p: FloatLike, shared_dim: Optional[int] = None) -> None:
        super().__init__()
        self.p = _copy_floatlike(p)
        self.shared_dim = shared_dim

    def forward(self, x: Tensor) -> Tensor:
        p = float(self.p)
        if not self.training or p == 0.0:
            return x
        if self.shared_dim is None:
            return F.dropout(x, p, training=True)
        shape = list(x.shape)
        shape[self.shared_dim] = 1
        mask = (torch.rand(shape, device=x.device, dtype=x.dtype) > p).to(x.dtype)
        return x * (mask * (1.0 / (1.0 - p)))


class ActivationDropoutAndLinear(nn.Module):
    """activation (SwooshL/SwooshR) -> dropout shared over ``dropout_shared_dim`` -> ScaledLinear."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "SwooshL",
                 dropout_p: FloatLike = 0.0, dropout_shared_dim: Optional[int] = 0,
                 bias: bool = True, initial_scale: float = 1.0) -> None:
        super().__init__()
        if activation not in ("SwooshL", "SwooshR"):
            raise ValueError(f"unknown activation {activation!r}; expected SwooshL or SwooshR")
        self.activation = swoosh_l if activation == "SwooshL" else swoosh_r
        self.dropout = SharedDropout(dropout_p, dropout_shared_dim)
        self.linear = ScaledLinear(in_channels, out_channels, bias=bias, initial_scale=initial_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.dropout(self.activation(x)))


# ----------------------------------------------------------------------------------------------
# Gradient-only helpers
# ----------------------------------------------------------------------------------------------


class _ScaleGradFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * ctx.alpha, None


class ScaleGrad(nn.Module):
    """Identity in forward; multiplies the gradient by ``alpha`` in backward."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        if not x.requires_grad or torch.jit.is_scripting():
            return x
        return _ScaleGradFunction.apply(x, self.alpha)


class _ContiguousGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad.contiguous()


def contiguous_grad(x: Tensor) -> Tensor:
    """Identity; makes the gradient flowing back into x contiguous.

    Used on conv outputs that are later transposed: oneDNN convolution backward is many times
    slower with a permuted grad_output on CPU.
    """
    if not x.requires_grad:
        return x
    return _ContiguousGrad.apply(x)


class _LimitParamValue(torch.autograd.Function):
    """Identity; in backward flips gradient signs that would push x further outside [min, max]."""

    @staticmethod
    def forward(ctx, x: Tensor, min_val: float, max_val: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.min_val, ctx.max_val = min_val, max_val
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # gradient descent moves x by -grad: below min we need grad <= 0, above max grad >= 0.
        flip = ((grad > 0) & (x < ctx.min_val)) | ((grad < 0) & (x > ctx.max_val))
        return torch.where(flip, -grad, grad), None, None


def limit_param_value(x: Tensor, min: float, max: float, prob: float = 0.6,
                      training: bool = True) -> Tensor:
    """Softly keep a parameter in [min, max] via its gradient (applied with probability ``prob``)."""
    if training and x.requires_grad and random.random() < prob:
        return _LimitParamValue.apply(x, min, max)
    return x


class _WithLoss(torch.autograd.Function):
    """Returns x; adds ``y.sum()`` to the loss (its gradient w.r.t. y is ones)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        ctx.y_shape = y.shape
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, torch.ones(ctx.y_shape, dtype=grad.dtype, device=grad.device)


def penalize_abs_values_gt(x: Tensor, limit: float, penalty: float) -> Tensor:
    """Returns x; in backward adds the gradient of ``penalty * relu(|x| - limit)``."""
    if not x.requires_grad:
        return x
    over = (x.abs() > limit).to(x.dtype)
    aux = penalty * (x.sign() * over) * x  # derivative is penalty*sign(x) where over the limit
    return _WithLoss.apply(x, aux)


# ----------------------------------------------------------------------------------------------
# Balancer
# ----------------------------------------------------------------------------------------------


def _proportion_positive_to_mean(p: float) -> float:
    """Convert a 'proportion of positive values' limit into a limit on mean/stddev (Gaussian)."""
    x = -1.0 + 2.0 * p
    eps = 1.0e-10
    atanh = (math.log(1 + x + eps) - math.log(1 - x + eps)) / 2.0
    return 0.8139535143 * atanh  # crude inverse-erf * sqrt(2)


def _channels_innermost(x: Tensor, channel_dim: int) -> bool:
    """Whether x's channel axis is (or, for a strided view, should be treated as) innermost."""
    return x.movedim(channel_dim, -1).stride(-1) == 1 or x.shape[channel_dim] == x.numel()


def _channel_view(t: Tensor, channel_dim: int, innermost: bool) -> Tensor:
    """A (P, C, Q) view (or contiguous copy) of t with the channel axis in the middle: (P, C, 1)
    with channels innermost, else (P, C, Q) of the row-major layout."""
    C = t.shape[channel_dim]
    if innermost:
        return t.movedim(channel_dim, -1).reshape(-1, C, 1)
    return t.reshape(int(math.prod(t.shape[:channel_dim])), C, -1)


def _from_channel_view(v: Tensor, like: Tensor, channel_dim: int, innermost: bool) -> Tensor:
    """Inverse of :func:`_channel_view` (returns a tensor shaped like ``like``)."""
    if innermost:
        return v.reshape(like.movedim(channel_dim, -1).shape).movedim(-1, channel_dim)
    return v.reshape(like.shape)


def _channel_moments(v: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and mean square of a (P, C, Q) tensor over P and Q, as float64 (C,).

    Reads v once per moment without full-size temporaries.
    """
    P, C, Q = v.shape
    if Q == 1:
        x2 = v[:, :, 0]
        # column reductions are slow in torch on CPU; ones-vector matmuls over row blocks that
        # stay in cache are not (the block's square is a small temporary)
        rows = max(1, (1 << 18) // C)
        ones = torch.ones(1, min(rows, P), dtype=v.dtype, device=v.device)
        s = torch.zeros(C, dtype=torch.float64, device=v.device)
        sq = torch.zeros(C, dtype=torch.float64, device=v.device)
        for i in range(0, P, rows):
            blk = x2[i:i + rows]
            o = ones if blk.shape[0] == ones.shape[1] else ones[:, :blk.shape[0]]
            s += (o @ blk)[0]
            sq += (o @ (blk * blk))[0]
    else:
        s = v.sum(dim=(0, 2)).to(torch.float64)
        sq = torch.linalg.vector_norm(v, dim=(0, 2)).to(torch.float64) ** 2
    n = P * Q
    return s / n, sq / n


def _balancer_coefficients(v: Tensor, min_mean: float, max_mean: float, min_rms: float,
                           max_rms: float, grad_scale: float) -> Optional[Tuple[Tensor, Tensor]]:
    """Per-channel (a, b) such that the Balancer's scaled loss gradient is ``a + b * x``.

    The Balancer loss depends on x only through the per-channel mean and mean square, so its
    gradient w.r.t. x is d_loss/d_mean / n + d_loss/d_meansq * 2x / n: affine in x per channel.
    Differentiating the loss w.r.t. the (C,) moments instead of w.r.t. the full tensor gives the
    same values as autograd through x at a fraction of the cost; the rms of ``a + b x`` used for
    normalisation also has a closed form in the moments.  v: (P, C, Q) as from
    :func:`_channel_view`; returns (1, C, 1) float32 tensors, or None when every channel is within
    its limits (the gradient is then unchanged).
    """
    mean, mean_sq = _channel_moments(v)
    with torch.enable_grad():
        mu = mean.detach().requires_grad_(True)
        u = mean_sq.detach().requires_grad_(True)
        stddev = (u - mu * mu).clamp(min=1.0e-20).sqrt()
        rms = u.clamp(min=1.0e-20).sqrt()
        m = mu / stddev
        m_loss = (m - m.clamp(min=min_mean, max=max_mean)).abs()
        r_loss = (rms.clamp(min=min_rms, max=max_rms) / rms).log().abs()
        g_mu, g_u = torch.autograd.grad((m_loss + r_loss).sum(), (mu, u))
    n = v.shape[0] * v.shape[2]
    a, b = g_mu / n, g_u * (2.0 / n)
    if not bool(((a != 0) | (b != 0)).any()):
        return None
    # mean over the channel of (a + b x)^2, from the moments
    ms = (a * a + 2.0 * a * b * mean + b * b * mean_sq).clamp(min=0.0)
    scale = grad_scale / ms.sqrt().clamp(min=1.0e-20)
    return ((a * scale).to(torch.float32).reshape(1, -1, 1),
            (b * scale).to(torch.float32).reshape(1, -1, 1))


class _BalancerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, min_mean: float, max_mean: float, min_rms: float,  # type: ignore[override]
                max_rms: float, grad_scale: float, channel_dim: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.config = (min_mean, max_mean, min_rms, max_rms, grad_scale, channel_dim)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        min_mean, max_mean, min_rms, max_rms, grad_scale, channel_dim = ctx.config
        # work in x's own memory layout (channels-last or -first) so every pass is sequential
        innermost = _channels_innermost(x, channel_dim)
        xv = _channel_view(x.detach().to(torch.float32), channel_dim, innermost)
        coef = _balancer_coefficients(xv, min_mean, max_mean, min_rms, max_rms, grad_scale)
        if coef is None:
            return x_grad, None, None, None, None, None, None
        a, b = coef
        g = _channel_view(x_grad.to(torch.float32), channel_dim, innermost)
        # g + |g| * (a + b x): the correction is proportional to the local gradient magnitude
        out = torch.addcmul(a, xv, b)
        out.mul_(g.abs()).add_(g)
        out = _from_channel_view(out, x, channel_dim, innermost)
        return out.to(x_grad.dtype), None, None, None, None, None, None


class Balancer(nn.Module):
    """Identity in forward; in backward nudges each channel's sign balance and rms into a range.

    Args:
      num_channels: size of the channel axis.
      channel_dim: the channel axis (negative values count from the end).
      min_positive / max_positive: allowed proportion of positive values per channel.
      min_abs / max_abs: allowed mean absolute value per channel.
      grad_scale: size of the added gradient relative to |x_grad|.
      prob: probability of acting on a given forward call (default: scheduled 0.5 -> 0.125).
    """

    def __init__(self, num_channels: int, channel_dim: int, min_positive: FloatLike = 0.05,
                 max_positive: FloatLike = 0.95, min_abs: FloatLike = 0.2,
                 max_abs: FloatLike = 100.0, grad_scale: FloatLike = 0.04,
                 prob: Optional[FloatLike] = None) -> None:
        super().__init__()
        if prob is None:
            prob = ScheduledFloat((0.0, 0.5), (8000.0, 0.125), default=0.4)
        self.prob = _copy_floatlike(prob)
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.min_positive = _copy_floatlike(min_positive)
        self.max_positive = _copy_floatlike(max_positive)
        self.min_abs = _copy_floatlike(min_abs)
        self.max_abs = _copy_floatlike(max_abs)
        self.grad_scale = _copy_floatlike(grad_scale)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or not x.requires_grad or not self.training:
            return x
        if random.random() >= float(self.prob):
            return x
        channel_dim = self.channel_dim if self.channel_dim >= 0 else self.channel_dim + x.ndim
        if x.shape[channel_dim] != self.num_channels:
            raise ValueError(f"Balancer expected {self.num_channels} channels on dim {channel_dim}, "
                             f"got shape {tuple(x.shape)}")
        return _BalancerFunction.apply(
            x,
            _proportion_positive_to_mean(float(self.min_positive)),
            _proportion_positive_to_mean(float(self.max_positive)),
            1.25331413732 * float(self.min_abs),  # mean |x| -> rms for Gaussian data
            1.25331413732 * float(self.max_abs),
            float(self.grad_scale),
            channel_dim,
        )


# ----------------------------------------------------------------------------------------------
# Whiten
# ----------------------------------------------------------------------------------------------


def whitening_metric(x: Tensor, num_groups: int) -> Tensor:
    """>= 1.0, equal to 1.0 iff the centred covariance of each channel group is a multiple of I
    (with the same multiple for all groups).  x: (*, num_channels)."""
    x = x.reshape(-1, x.shape[-1])
    num_frames, num_channels = x.shape
    if num_channels % num_groups != 0:
        raise ValueError(f"num_channels={num_channels} not divisible by num_groups={num_groups}")
    cpg = num_channels // num_groups
    x = x.reshape(num_frames, num_groups, cpg).transpose(0, 1)
    x = x - x.mean(dim=1, keepdim=True)
    covar = torch.matmul(x.transpose(1, 2), x)  # (groups, cpg, cpg)
    mean_diag = torch.diagonal(covar, dim1=1, dim2=2).mean()
    mean_sq = (covar ** 2).sum() / (num_groups * cpg)
    return mean_sq / (mean_diag ** 2 + 1.0e-20)


class _WhitenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, module: "Whiten") -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.module = module
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        w: Whiten = ctx.module
        with torch.enable_grad():
            xd = x.detach().to(torch.float32).requires_grad_(True)
            metric = whitening_metric(xd, w.num_groups)
            if metric.item() < float(w.whitening_limit):
                w.prob = w.min_prob  # already white enough: check less often
                return x_grad, None
            w.prob = w.max_prob
            (penalty_grad,) = torch.autograd.grad(metric, xd)
        scale = float(w.grad_scale) * x_grad.to(torch.float32).norm() / (penalty_grad.norm() + 1.0e-20)
        return x_grad + (penalty_grad * scale).to(x_grad.dtype), None


class Whiten(nn.Module):
    """Identity in forward; in backward, when the features' whitening metric exceeds
    ``whitening_limit``, adds a gradient (``grad_scale`` times |x_grad|) that makes them whiter."""

    def __init__(self, num_groups: int, whitening_limit: FloatLike,
                 prob: Union[float, Tuple[float, float]], grad_scale: FloatLike) -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if float(whitening_limit) < 1.0:
            raise ValueError(f"whitening_limit must be >= 1, got {float(whitening_limit)}")
        self.num_groups = num_groups
        self.whitening_limit = _copy_floatlike(whitening_limit)
        self.grad_scale = _copy_floatlike(grad_scale)
        if isinstance(prob, (int, float)):
            prob = (float(prob), float(prob))
        self.min_prob, self.max_prob = prob
        if not 0 < self.min_prob <= self.max_prob <= 1:
            raise ValueError(f"bad Whiten prob {prob}")
        self.prob = self.max_prob

    def forward(self, x: Tensor) -> Tensor:
        if (torch.jit.is_scripting() or not x.requires_grad or not self.training
                or float(self.grad_scale) == 0.0 or random.random() > self.prob):
            return x
        return _WhitenFunction.apply(x, self)


# ----------------------------------------------------------------------------------------------
# BiasNorm
# ----------------------------------------------------------------------------------------------


class BiasNorm(nn.Module):
    """y = x * exp(log_scale) / rms(x - bias) over the channel axis.

    The learned ``bias`` only enters the scale computation, which lets the model keep a large
    constant channel without defeating the normalisation (the failure mode of LayerNorm noted in
    the Zipformer paper); ``log_scale`` is softly limited to [log_scale_min, log_scale_max].
    """

    def __init__(self, num_channels: int, channel_dim: int = -1, log_scale: float = 1.0,
                 log_scale_min: float = -1.5, log_scale_max: float = 1.5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.log_scale = nn.Parameter(torch.tensor(log_scale))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        channel_dim = self.channel_dim if self.channel_dim >= 0 else self.channel_dim + x.ndim
        if x.shape[channel_dim] != self.num_channels:
            raise ValueError(f"BiasNorm expected {self.num_channels} channels, got shape {tuple(x.shape)}")
        log_scale = limit_param_value(self.log_scale, self.log_scale_min, self.log_scale_max,
                                      training=self.training)
        bias = self.bias.reshape([-1] + [1] * (x.ndim - 1 - channel_dim))
        scales = torch.rsqrt(torch.mean((x - bias) ** 2, dim=channel_dim, keepdim=True)) * log_scale.exp()
        return x * scales


def convert_num_channels(x: Tensor, num_channels: int) -> Tensor:
    """Truncate or zero-pad the last axis of x to ``num_channels``."""
    if num_channels <= x.shape[-1]:
        return x[..., :num_channels]
    pad = torch.zeros(*x.shape[:-1], num_channels - x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.cat((x, pad), dim=-1)


def make_pad_mask(lengths: Tensor, max_len: Optional[int] = None) -> Tensor:
    """(N,) lengths -> (N, max_len) bool mask, True at padding positions."""
    if max_len is None:
        max_len = int(lengths.max().item())
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


__all__: Sequence[str] = [
    "ScheduledFloat", "FloatLike", "set_batch_count", "swoosh_l", "swoosh_r", "SwooshL", "SwooshR",
    "ScaledLinear", "ScaledConv2d", "contiguous_grad", "SharedDropout", "ActivationDropoutAndLinear", "ScaleGrad",
    "limit_param_value", "penalize_abs_values_gt", "Balancer", "Whiten", "whitening_metric",
    "BiasNorm", "convert_num_channels", "make_pad_mask",
]
