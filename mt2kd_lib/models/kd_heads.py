"""Knowledge-distillation heads and their losses, one kind per teacher output (MT2KD stage 1); beside the task heads.

- frame-level embedding teachers (Whisper, 50 Hz): :class:`FrameKDHead` maps ReLU(student) at the student rate
  to ``k`` stacked teacher frames (k = teacher rate / student rate); loss = L1 over valid frames, mean over dims.
- probability teachers (BEATs, 527 classes): an :class:`~mt2kd_lib.models.at_head.ATHead` (per-frame logits,
  mean-pooled); loss = BCE against the teacher's probabilities, mean over classes.
- utterance-embedding teachers (ECAPA): an :class:`~mt2kd_lib.models.sv_head.SVHead` without classifier
  (attentive statistics pooling -> linear); loss = 1 - cosine to the teacher embedding.

Every loss returns one value per utterance so that the caller can apply task-ID masks (a loss counts only for
the cuts that carry that teacher's output) and drop non-finite utterances.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from mt2kd_lib.models.at_head import ATHead, at_bce_loss
from mt2kd_lib.models.pooling import lengths_to_mask
from mt2kd_lib.models.sv_head import SVHead


def frame_stack_factor(student_frame_shift: float, teacher_frame_shift: float) -> int:
    """How many teacher frames one student frame predicts (0.04 s / 0.02 s -> 2); must be a whole number."""
    k = student_frame_shift / teacher_frame_shift
    if abs(k - round(k)) > 1e-3 or round(k) < 1:
        raise ValueError(
            f"student frame shift {student_frame_shift}s is not a whole multiple of the teacher's "
            f"{teacher_frame_shift}s; frame-level KD needs that"
        )
    return int(round(k))


class FrameKDHead(nn.Module):
    """Linear map from ReLU(student frames) to ``stack`` consecutive teacher frames."""

    def __init__(self, student_dim: int, teacher_dim: int, stack: int) -> None:
        super().__init__()
        self.teacher_dim = teacher_dim
        self.stack = stack
        self.proj = nn.Linear(student_dim, teacher_dim * stack)

    def forward(self, x: torch.Tensor, lens: torch.Tensor):
        """(N, T, C), (N,) -> predicted teacher frames (N, T*stack, teacher_dim) and their lengths."""
        n, t, _ = x.shape
        pred = self.proj(F.relu(x)).reshape(n, t * self.stack, self.teacher_dim)
        return pred, lens * self.stack


def frame_l1_loss(pred: torch.Tensor, pred_lens: torch.Tensor, target: torch.Tensor,
                  target_lens: torch.Tensor) -> torch.Tensor:
    """Per-utterance L1 between predicted and teacher frames over the frames both have, mean over dims.

    The two sequences may differ by a few frames at the end (different front-end padding); only the common
    valid part counts. Returns (N,).
    """
    if pred.size(-1) != target.size(-1):
        raise ValueError(f"teacher frames have dim {target.size(-1)}, the KD head predicts {pred.size(-1)}")
    t = min(pred.size(1), target.size(1))
    lens = torch.minimum(pred_lens, target_lens).clamp(max=t)
    mask = lengths_to_mask(lens, t).unsqueeze(-1).to(pred.dtype)
    diff = (pred[:, :t] - target[:, :t].to(pred.dtype)).abs() * mask
    return diff.sum(dim=(1, 2)) / (lens.clamp(min=1).to(pred.dtype) * pred.size(-1))


def prob_bce_loss(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Per-utterance BCE between clip logits (N, K) and teacher probabilities (N, K), mean over classes."""
    if logits.shape != teacher_probs.shape:
        raise ValueError(f"teacher gives {teacher_probs.shape[-1]} classes, the KD head predicts {logits.shape[-1]}")
    return at_bce_loss(logits, teacher_probs.clamp(0.0, 1.0), reduction="none").mean(dim=1)


def cosine_embedding_loss(pred: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-utterance 1 - cos(pred, teacher embedding)."""
    if pred.shape != teacher.shape:
        raise ValueError(f"teacher embedding has dim {teacher.shape[-1]}, the KD head predicts {pred.shape[-1]}")
    return 1.0 - F.cosine_similarity(pred, teacher.to(pred.dtype), dim=-1, eps=1e-6)


def make_kd_head(kind: str, student_dim: int, teacher_dim: int, stack: int = 1) -> nn.Module:
    """The head for a teacher output kind: "frame" (embedding frames), "probabilities", or "utterance"."""
    if kind == "frame":
        return FrameKDHead(student_dim, teacher_dim, stack)
    if kind == "probabilities":
        return ATHead(student_dim, teacher_dim)
    if kind == "utterance":
        return SVHead(student_dim, emb_dim=teacher_dim, num_speakers=None)
    raise ValueError(f"unknown KD head kind {kind!r}; expected frame, probabilities or utterance")
