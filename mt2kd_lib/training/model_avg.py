"""icefall's running model average: ``model_avg`` in every checkpoint, and the average over an interval of batches.

During training, every ``average_period`` batches, ``model_avg`` (float64) becomes the mean of the model's weights
at batches P, 2P, ..., B (icefall's ``update_averaged_model``). Two checkpoints then give the mean over the batches
between them: ``(avg_end * B_end - avg_start * B_start) / (B_end - B_start)``, which is what icefall's
``--use-averaged-model`` decodes. Short CPU runs end on a flat learning rate, so the last weights are noisy; the
mean of the last epoch's weights is not (RESULTS_NOTES.md).
"""

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

State = Dict[str, torch.Tensor]


def new_model_avg(model: nn.Module) -> State:
    """The average at batch 0: a float64 copy of the model's floating-point weights."""
    return {k: v.detach().to("cpu", torch.float64).clone()
            for k, v in model.state_dict().items() if v.is_floating_point()}


def update_model_avg(model_avg: State, model: nn.Module, batch_idx_train: int, average_period: int) -> None:
    """Fold the current weights in (call when ``batch_idx_train`` is a multiple of ``average_period``)."""
    weight_cur = average_period / batch_idx_train
    cur = model.state_dict()
    with torch.no_grad():
        for k, avg in model_avg.items():
            avg.mul_(1.0 - weight_cur).add_(cur[k].detach().to(avg.device, torch.float64), alpha=weight_cur)


def _period(ckpt: Dict[str, Any]) -> int:
    return int(ckpt.get("params", {}).get("average_period", 0) or 0)


def has_model_avg(ckpt: Dict[str, Any]) -> bool:
    """Whether a loaded checkpoint carries a usable ``model_avg`` (trained with --average-period > 0)."""
    return "model_avg" in ckpt and _period(ckpt) > 0


def _averaged_until(ckpt: Dict[str, Any], path: Path) -> int:
    """The last batch folded into this checkpoint's ``model_avg``."""
    period = _period(ckpt)
    if not has_model_avg(ckpt):
        raise ValueError(f"{path}: no model_avg in this checkpoint (trained with --average-period 0, or by an older "
                         "mt2kd); evaluate it with --use-averaged-model false")
    return (int(ckpt["params"]["batch_idx_train"]) // period) * period


def average_between(end_path: Union[str, Path], start_path: Optional[Union[str, Path]] = None,
                    end_ckpt: Optional[Dict[str, Any]] = None) -> State:
    """State dict of the mean weights over the batches after ``start_path`` up to ``end_path`` (both checkpoints
    of one run; no ``start_path``: since batch 0). Non-float tensors come from ``end_path``'s model.
    ``end_ckpt``: ``end_path`` already loaded by the caller (it is not read again)."""
    end_path = Path(end_path)
    end = end_ckpt if end_ckpt is not None else torch.load(end_path, map_location="cpu", weights_only=False)
    b_end = _averaged_until(end, end_path)
    b_start, avg_start = 0, None
    if start_path is not None:
        start = torch.load(start_path, map_location="cpu", weights_only=False)
        b_start, avg_start = _averaged_until(start, Path(start_path)), start["model_avg"]
    if b_end <= b_start:
        raise ValueError(f"{end_path}: no averaging update after {start_path} (batches {b_start}..{b_end}); "
                         "average over more epochs, or lower --average-period")
    w_end, w_start = b_end / (b_end - b_start), -b_start / (b_end - b_start)
    out = dict(end["model"])
    for k, avg in end["model_avg"].items():
        mean = avg * w_end if avg_start is None else avg * w_end + avg_start[k] * w_start
        out[k] = mean.to(end["model"][k].dtype)
    return out
