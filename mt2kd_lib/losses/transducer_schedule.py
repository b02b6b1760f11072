"""Warm-up schedule of the two transducer losses and the non-finite-loss guard used by trainers."""

import logging
from typing import MutableMapping, Optional, Sequence, Tuple

import torch


def transducer_loss_scales(batch_idx_train: int, warm_step: int, simple_loss_scale: float = 0.5) -> Tuple[float, float]:
    """icefall's schedule: ``(simple_scale, pruned_scale)`` for the current training batch.

    The simple loss weight goes linearly 1.0 -> ``simple_loss_scale`` and the pruned loss weight
    0.1 -> 1.0 over ``warm_step`` batches (the pruned loss is unreliable until the simple loss has
    found sensible pruning bounds), then both stay constant.
    """
    if warm_step <= 0:
        raise ValueError(f"transducer_loss_scales: warm_step must be > 0, got {warm_step}")
    if batch_idx_train < 0:
        raise ValueError(f"transducer_loss_scales: batch_idx_train must be >= 0, got {batch_idx_train}")
    if not 0.0 <= simple_loss_scale <= 1.0:
        raise ValueError(f"transducer_loss_scales: simple_loss_scale must be in [0, 1], got {simple_loss_scale}")
    if batch_idx_train >= warm_step:
        return simple_loss_scale, 1.0
    frac = batch_idx_train / warm_step
    return 1.0 - frac * (1.0 - simple_loss_scale), 0.1 + 0.9 * frac


def finite_or_skip(
    loss: torch.Tensor,
    what: str,
    counter: Optional[MutableMapping[str, int]] = None,
    ids: Optional[Sequence[str]] = None,
    logger: Optional[logging.Logger] = None,
) -> bool:
    """Return True when every element of ``loss`` is finite; otherwise log, count and return False.

    Args:
      loss: a scalar batch loss or a per-utterance (N,) loss.
      what: name of the loss for the log line and the counter key (e.g. "pruned_loss").
      counter: mapping (e.g. ``collections.Counter``) whose ``counter[what]`` is incremented per
        skipped batch; the trainer logs/saves it.
      ids: optional cut ids aligned with a per-utterance ``loss`` so the log names offending utterances.
      logger: where to log (default: this module's logger).
    The caller must skip the batch (no backward/step) on False: training on inf/NaN would corrupt
    the weights.
    """
    with torch.no_grad():
        finite = torch.isfinite(loss.detach())
        if bool(finite.all()):
            return True
        bad = (~finite).flatten().nonzero().flatten().tolist()
        values = loss.detach().flatten()[bad].tolist()
    if counter is not None:
        counter[what] = counter.get(what, 0) + 1
    if ids is not None and loss.dim() == 1 and len(ids) == loss.numel():
        where = ", ".join(f"{ids[i]}={v}" for i, v in zip(bad, values))
    elif loss.dim() == 0:
        where = f"value={values[0]}"
    else:
        where = ", ".join(f"#{i}={v}" for i, v in zip(bad, values))
    total = counter.get(what, 0) if counter is not None else "?"
    (logger or logging.getLogger(__name__)).warning(
        f"Non-finite {what} ({where}); skipping this batch (skipped so far for {what}: {total})"
    )
    return False
