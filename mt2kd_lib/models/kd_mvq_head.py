"""KD head for MVQ targets: predict a frame-level teacher's codebook indexes (icefall's codebook loss).

The dump stores, per teacher frame, ``num_codebooks`` indexes into codebooks of ``codebook_size`` centres
(:mod:`mt2kd_lib.teachers.mvq`). The head maps ReLU(student frames) to ``stack`` teacher frames per student frame
(as :class:`~mt2kd_lib.losses.kd.FrameKDHead` does for the float frames) and gives logits over each codebook; the
loss is a cross-entropy per codebook, averaged over codebooks and the valid frames of each utterance. The codebooks
are predicted independently (icefall's JointCodebookLoss also conditions each codebook on the previous ones; the
plain version is what it reduces to without that refinement).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from mt2kd_lib.models.pooling import lengths_to_mask


class MvqKDHead(nn.Module):
    """Linear map from ReLU(student frames) to codebook logits of ``stack`` consecutive teacher frames."""

    def __init__(self, student_dim: int, num_codebooks: int, codebook_size: int = 256, stack: int = 1) -> None:
        super().__init__()
        if num_codebooks <= 0 or codebook_size <= 1:
            raise ValueError(f"MVQ head needs num_codebooks > 0 and codebook_size > 1, got {num_codebooks}, "
                             f"{codebook_size}")
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.stack = stack
        self.proj = nn.Linear(student_dim, stack * num_codebooks * codebook_size)

    def forward(self, x: torch.Tensor, lens: torch.Tensor):
        """(N, T, C), (N,) -> logits (N, T*stack, num_codebooks, codebook_size) and their lengths."""
        n, t, _ = x.shape
        logits = self.proj(F.relu(x)).reshape(n, t * self.stack, self.num_codebooks, self.codebook_size)
        return logits, lens * self.stack


def mvq_ce_loss(logits: torch.Tensor, logit_lens: torch.Tensor, indexes: torch.Tensor,
                index_lens: torch.Tensor) -> torch.Tensor:
    """Per-utterance cross-entropy of the teacher's codebook indexes, mean over codebooks and common valid frames.

    Args:
        logits: (N, T, num_codebooks, codebook_size) from :class:`MvqKDHead`.
        indexes: (N, T', num_codebooks) integer (uint8 as stored) teacher indexes; T and T' may differ by a few
            frames at the end (front-end padding): only the frames both have count.
    Returns:
        (N,) losses.
    """
    if indexes.dim() != 3 or indexes.size(-1) != logits.size(2):
        raise ValueError(f"teacher codebook indexes have shape {tuple(indexes.shape)} (frames x codebooks), the MVQ "
                         f"KD head predicts {logits.size(2)} codebooks")
    t = min(logits.size(1), indexes.size(1))
    lens = torch.minimum(logit_lens, index_lens).clamp(max=t)
    target = indexes[:, :t].long()
    if bool((target >= logits.size(-1)).any()):
        raise ValueError(f"teacher codebook index {int(target.max())} >= codebook size {logits.size(-1)}")
    ce = F.cross_entropy(logits[:, :t].reshape(-1, logits.size(-1)), target.reshape(-1), reduction="none")
    ce = ce.reshape(target.shape)  # (N, t, num_codebooks)
    mask = lengths_to_mask(lens, t).unsqueeze(-1).to(ce.dtype)
    return (ce * mask).sum(dim=(1, 2)) / (lens.clamp(min=1).to(ce.dtype) * logits.size(2))
