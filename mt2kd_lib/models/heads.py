"""One import point for the task heads (the code lives in pooling.py, at_head.py and sv_head.py)."""

from mt2kd_lib.models.at_head import ATHead, at_bce_loss
from mt2kd_lib.models.pooling import AttentiveStatsPooling, lengths_to_mask, masked_mean
from mt2kd_lib.models.sv_head import AAMSoftmax, SVHead

__all__ = [
    "AAMSoftmax",
    "ATHead",
    "AttentiveStatsPooling",
    "SVHead",
    "at_bce_loss",
    "lengths_to_mask",
    "masked_mean",
]
