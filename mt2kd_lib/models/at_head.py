"""Audio-tagging head: per-frame linear classifier + masked mean over time, and its BCE loss."""

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mt2kd_lib.models.pooling import _check_x_lens, lengths_to_mask


class ATHead(nn.Module):
    """Multi-label audio tagging head.

    A Linear maps every frame of ``x`` (N, T, C) to K class logits; the clip
    logits are the mean of the frame logits over the valid frames. Works on
    any frame rate (encoder output or an intermediate stack).
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"in_dim={in_dim} and num_classes={num_classes} must be >= 1")
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.proj = nn.Linear(in_dim, num_classes)

    def forward(
        self, x: torch.Tensor, lens: torch.Tensor, return_frames: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Return clip logits (N, K); with ``return_frames`` also the frame logits (N, T, K)."""
        _check_x_lens(x, lens)
        if x.size(2) != self.in_dim:
            raise ValueError(f"x has {x.size(2)} channels, ATHead expects in_dim={self.in_dim}")
        mask = lengths_to_mask(lens, x.size(1)).unsqueeze(-1)  # (N, T, 1)
        frame_logits = self.proj(x).masked_fill(~mask, 0.0)  # padded frames reported as 0
        clip_logits = frame_logits.sum(dim=1) / lens.to(frame_logits.dtype).unsqueeze(-1)
        if return_frames:
            return clip_logits, frame_logits
        return clip_logits


def at_bce_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy with logits for multi-label tagging.

    ``targets`` (N, K) may be hard multi-hot labels or soft probabilities
    (e.g. a teacher's sigmoid outputs); all must lie in [0, 1].
    ``reduction``: "mean" (over N*K), "sum", or "none" ((N, K) per element).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
    targets = targets.to(logits.dtype)
    bad = ~((targets >= 0) & (targets <= 1))  # also catches NaN
    if bool(bad.any()):
        n, k = (int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"targets[{n}, {k}]={float(targets[n, k])} is outside [0, 1]")
    if not bool(torch.isfinite(logits).all()):
        n, k = (int(i) for i in torch.nonzero(~torch.isfinite(logits))[0])
        raise ValueError(f"logits[{n}, {k}]={float(logits[n, k])} is not finite")
    return F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
