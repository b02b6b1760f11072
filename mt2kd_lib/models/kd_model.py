"""Stage 1 of MT2KD: a Zipformer2 student with one KD head per teacher.

``KDModel.forward(batch, batch_idx_train) -> (loss, info)`` follows the same interface as
:class:`~mt2kd_lib.models.student.StudentModel`, so the one trainer runs both. Teacher targets arrive in the
batch as custom fields collated by :class:`~mt2kd_lib.data.dataset.MultiTaskDataset` (``<field>``,
``<field>_mask`` and, for frame-level teachers, ``<field>_lens``).

Task-ID masking (the paper's default): a teacher's loss counts only on cuts whose ``origin`` is that teacher's
task (ASR teacher on speech-corpus cuts, ...). With ``mask_by_task: false`` every cut that carries the
teacher's output is used.
"""

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mt2kd_lib.data.frames import ENCODER_FRAME_SHIFT
from mt2kd_lib.models.kd_heads import (cosine_embedding_loss, frame_l1_loss, frame_stack_factor, make_kd_head,
                                       prob_bce_loss)
from mt2kd_lib.losses.transducer_schedule import finite_or_skip
from mt2kd_lib.models.encoder_presets import build_encoder
from mt2kd_lib.models.kd_mvq_head import MvqKDHead, mvq_ce_loss
from mt2kd_lib.models.zipformer.model import EncoderWithEmbed

logger = logging.getLogger(__name__)

STUDENT_FRAME_SHIFT = ENCODER_FRAME_SHIFT
KINDS = {"frame", "mvq", "probabilities", "utterance"}
FRAME_KINDS = {"frame", "mvq"}  # mvq: the frames stored as codebook indexes (teachers/mvq.py), learnt with CE


@dataclass
class KDTeacherConfig:
    """One teacher as the student sees it: which batch field holds its output, and how to learn it."""

    name: str
    task: str  # asr / at / sv: the cut origin it applies to under task-ID masking
    field: str
    kind: str  # frame / mvq / probabilities / utterance
    dim: int
    frame_shift: Optional[float] = None  # frame-level teachers only
    scale: float = 1.0
    input_stack: Optional[int] = None  # read an intermediate encoder stack (50 Hz) instead of the output
    num_codebooks: Optional[int] = None  # mvq only
    codebook_size: int = 256

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"teacher {self.name}: kind {self.kind!r} not in {sorted(KINDS)}")
        if self.kind in FRAME_KINDS and not self.frame_shift:
            raise ValueError(f"teacher {self.name}: a frame-level teacher needs frame_shift")
        if self.kind == "mvq" and not self.num_codebooks:
            raise ValueError(f"teacher {self.name}: an mvq teacher needs num_codebooks")


class KDModel(nn.Module):
    def __init__(self, encoder: EncoderWithEmbed, teachers: List[KDTeacherConfig], mask_by_task: bool = True):
        super().__init__()
        if not teachers:
            raise ValueError("KDModel needs at least one teacher")
        self.encoder = encoder
        self.teachers = teachers
        self.mask_by_task = mask_by_task
        heads = {}
        for t in teachers:
            if t.input_stack is None:
                in_dim, shift = encoder.output_dim, STUDENT_FRAME_SHIFT
            else:
                in_dim, shift = encoder.stack_dims[t.input_stack], STUDENT_FRAME_SHIFT / 2
            stack = frame_stack_factor(shift, t.frame_shift) if t.kind in FRAME_KINDS else 1
            if t.kind == "mvq":
                heads[t.name] = MvqKDHead(in_dim, t.num_codebooks, t.codebook_size, stack)
            else:
                heads[t.name] = make_kd_head(t.kind, in_dim, t.dim, stack)
        self.kd_heads = nn.ModuleDict(heads)
        self.nonfinite_counter: Counter = Counter()

    @property
    def config(self) -> Dict[str, Any]:
        return {"mask_by_task": self.mask_by_task, "teachers": [asdict(t) for t in self.teachers]}

    def forward(self, batch: Dict[str, Any], batch_idx_train: int = 0) -> Tuple[Tensor, Dict[str, float]]:
        features, feature_lens = batch["features"], batch["feature_lens"].to(batch["features"].device)
        need_stacks = any(t.input_stack is not None for t in self.teachers)
        if need_stacks:
            out, out_lens, stacks = self.encoder.forward_with_stacks(features, feature_lens)
        else:
            (out, out_lens), stacks = self.encoder(features, feature_lens), None
        ids: List[str] = list(batch["cut_ids"])
        ok = torch.isfinite(out.detach()).flatten(1).all(dim=1)
        info: Dict[str, float] = {"utterances": float(len(ids)), "skipped_utts": 0.0}
        if not bool(ok.all()):
            finite_or_skip(torch.where(ok, 0.0, float("nan")), "encoder_out", self.nonfinite_counter, ids, logger)
            info["skipped_utts"] += float((~ok).sum())
        loss = out.masked_fill(~ok[:, None, None], 0.0).sum() * 0.0  # keeps the graph connected for DDP
        origins = batch.get("origin") or batch["task"]
        for t in self.teachers:
            x, lens = (out, out_lens) if t.input_stack is None else stacks[t.input_stack]
            mask = batch.get(f"{t.field}_mask")
            if mask is None:
                continue
            mask = mask.to(ok.device) & ok
            if self.mask_by_task:
                mask &= torch.tensor([o == t.task for o in origins], device=ok.device)
            loss = loss + t.scale * self._teacher_loss(t, batch, x, lens, mask.nonzero().flatten(), ids, info)
        info["loss"] = float(loss.detach())
        info["frames"] = float(out_lens[ok].sum()) if bool(ok.any()) else 0.0
        return loss, info

    def _per_utt(self, t: KDTeacherConfig, batch, x, lens, idx) -> Tensor:
        head = self.kd_heads[t.name]
        target = batch[t.field].to(x.device)[idx]
        if t.kind == "frame":
            pred, pred_lens = head(x[idx], lens[idx])
            return frame_l1_loss(pred, pred_lens, target, batch[f"{t.field}_lens"].to(x.device)[idx])
        if t.kind == "mvq":
            logits, logit_lens = head(x[idx], lens[idx])
            try:
                return mvq_ce_loss(logits, logit_lens, target, batch[f"{t.field}_lens"].to(x.device)[idx])
            except ValueError as e:
                raise ValueError(f"teacher {t.name} (field {t.field}): {e}") from e
        if t.kind == "probabilities":
            return prob_bce_loss(head(x[idx], lens[idx]), target)
        return cosine_embedding_loss(head.embed(x[idx], lens[idx]), target)

    def _teacher_loss(self, t: KDTeacherConfig, batch, x, lens, idx, ids, info) -> Tensor:
        info[f"kd_{t.name}_utts"] = 0.0
        info[f"kd_{t.name}_loss"] = 0.0
        min_utts = 2 if (t.kind == "utterance" and self.training) else 1  # the SV head's batch-norm
        if idx.numel() < min_utts:
            return x.new_zeros(())
        per_utt = self._per_utt(t, batch, x, lens, idx)
        finite = torch.isfinite(per_utt.detach())
        if not bool(finite.all()):
            finite_or_skip(per_utt, f"kd_{t.name}", self.nonfinite_counter, [ids[i] for i in idx.tolist()], logger)
            info["skipped_utts"] += float((~finite).sum())
            idx = idx[finite.to(idx.device)]
            if idx.numel() < min_utts:
                return x.new_zeros(())
            per_utt = self._per_utt(t, batch, x, lens, idx)  # without the non-finite terms in the graph
        info[f"kd_{t.name}_utts"] = float(idx.numel())
        info[f"kd_{t.name}_loss"] = float(per_utt.detach().sum())
        return per_utt.sum()


def build_kd_model(cfg: Dict[str, Any]) -> KDModel:
    """From a config ``{encoder: <preset or dict>, kd: {mask_by_task, teachers: [KDTeacherConfig fields]}}``."""
    kd = cfg.get("kd") or {}
    teachers = [KDTeacherConfig(**t) for t in kd.get("teachers", [])]
    return KDModel(build_encoder(cfg["encoder"]), teachers, mask_by_task=bool(kd.get("mask_by_task", True)))
