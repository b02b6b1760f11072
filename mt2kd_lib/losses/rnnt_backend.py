"""The single place that chooses the RNN-T loss implementation.

k2 is used when ``import k2`` works (GPU-capable, what icefall uses); otherwise ``fast_rnnt``, which
exposes the same functions with the same arguments. Everything else in mt2kd calls the thin wrappers
below, so switching backends never touches model code.
"""

from typing import Any, Optional, Tuple, Union

from torch import Tensor

try:  # k2 is optional: not pip-installable on most machines.
    import k2 as _backend  # type: ignore[import-not-found]

    BACKEND_NAME = "k2"
except (ImportError, OSError):  # OSError: a k2 build whose shared libs do not match torch
    try:
        import fast_rnnt as _backend  # type: ignore[import-not-found]

        BACKEND_NAME = "fast_rnnt"
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mt2kd needs an RNN-T loss backend: neither 'k2' nor 'fast_rnnt' could be imported "
            f"({exc}). Run tools/install.sh to build fast_rnnt (CPU) into the virtualenv."
        ) from exc


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    reduction: str = "mean",
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """'Simple' RNN-T loss whose joiner is ``am[t] + lm[s]``; with ``return_grad`` also the
    occupation grads ``(px_grad, py_grad)`` needed by :func:`get_rnnt_prune_ranges`."""
    return _backend.rnnt_loss_smoothed(
        lm=lm,
        am=am,
        symbols=symbols,
        termination_symbol=termination_symbol,
        lm_only_scale=lm_only_scale,
        am_only_scale=am_only_scale,
        boundary=boundary,
        rnnt_type=rnnt_type,
        reduction=reduction,
        return_grad=return_grad,
    )


def get_rnnt_prune_ranges(px_grad: Tensor, py_grad: Tensor, boundary: Tensor, s_range: int) -> Tensor:
    """(B, T, s_range) int64 symbol positions to keep per frame."""
    return _backend.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=s_range)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> Tuple[Tensor, Tensor]:
    """Expand ``am`` (B,T,C) and gather ``lm`` (B,S+1,C) to (B,T,s_range,C) each."""
    return _backend.do_rnnt_pruning(am=am, lm=lm, ranges=ranges)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    reduction: str = "mean",
) -> Tensor:
    """RNN-T loss on pruned joiner logits (B, T, s_range, C)."""
    return _backend.rnnt_loss_pruned(
        logits=logits,
        symbols=symbols,
        ranges=ranges,
        termination_symbol=termination_symbol,
        boundary=boundary,
        rnnt_type=rnnt_type,
        reduction=reduction,
    )


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    reduction: str = "mean",
) -> Tensor:
    """Full (unpruned) RNN-T loss on joiner logits (B, T, S+1, C)."""
    return _backend.rnnt_loss(
        logits=logits,
        symbols=symbols,
        termination_symbol=termination_symbol,
        boundary=boundary,
        rnnt_type=rnnt_type,
        reduction=reduction,
    )


def backend_module() -> Any:
    """The imported backend module itself (for diagnostics / version logging)."""
    return _backend


def backend_version() -> str:
    """Version string of the chosen backend, e.g. ``'fast_rnnt 1.3'``."""
    return f"{BACKEND_NAME} {getattr(_backend, '__version__', 'unknown')}"


