"""``StudentModel``: one Zipformer2 encoder with optional ASR (pruned RNN-T), AT and SV heads.

Task-ID masking: every head's loss is computed only on the cuts whose mask (``asr_mask``/``at_mask``/
``sv_mask`` from :class:`mt2kd_lib.data.dataset.MultiTaskDataset`) is set, so one mixed-task batch trains
each head on its own data. Losses are summed over utterances (icefall convention; the trainer normalises
them for logging by the ``*_frames``/``*_utts`` counts in ``info``).

Non-finite losses never reach the optimiser: utterances whose encoder output or per-utterance loss is
inf/NaN are detected (:func:`finite_or_skip`, which logs and counts them), masked out and counted in
``info["skipped_utts"]``; the remaining utterances' losses are recomputed without them.
"""

import logging
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mt2kd_lib.losses.transducer_schedule import finite_or_skip, transducer_loss_scales
from mt2kd_lib.models.at_head import ATHead, at_bce_loss
from mt2kd_lib.models.sv_head import SVHead
from mt2kd_lib.models.transducer.transducer import TransducerHead
from mt2kd_lib.models.zipformer.model import EncoderWithEmbed

logger = logging.getLogger(__name__)


@dataclass
class LossConfig:
    """Loss weights and transducer settings (icefall defaults for the transducer)."""

    warm_step: int = 2000  # transducer warm-up (simple 1.0 -> simple_loss_scale, pruned 0.1 -> 1.0)
    simple_loss_scale: float = 0.5
    prune_range: int = 5
    lm_scale: float = 0.25
    am_scale: float = 0.0
    ctc_scale: float = 0.2  # used only when the ASR head has a CTC branch
    asr_scale: float = 1.0
    at_scale: float = 1.0
    sv_scale: float = 1.0

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "LossConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown loss config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class StudentModel(nn.Module):
    """Encoder + optional heads; ``forward(batch, batch_idx_train) -> (loss, info)``.

    Args:
      encoder: the Zipformer2 encoder (:func:`mt2kd_lib.models.encoder_presets.build_encoder`).
      asr_head / at_head / sv_head: heads; a missing head ignores its task's cuts.
      at_input_stack / sv_input_stack: read that encoder stack's 50 Hz output instead of the final 25 Hz
        output (the head's ``in_dim`` must then equal ``encoder.stack_dims[i]``).
      loss_cfg: loss weights and transducer settings.
    """

    def __init__(
        self,
        encoder: EncoderWithEmbed,
        asr_head: Optional[TransducerHead] = None,
        at_head: Optional[ATHead] = None,
        sv_head: Optional[SVHead] = None,
        at_input_stack: Optional[int] = None,
        sv_input_stack: Optional[int] = None,
        loss_cfg: Optional[LossConfig] = None,
    ) -> None:
        super().__init__()
        if asr_head is None and at_head is None and sv_head is None:
            raise ValueError("StudentModel needs at least one head (asr, at or sv)")
        self.encoder = encoder
        self.asr_head = asr_head
        self.at_head = at_head
        self.sv_head = sv_head
        self.at_input_stack = at_input_stack
        self.sv_input_stack = sv_input_stack
        self.loss_cfg = loss_cfg or LossConfig()
        self._check_dims()
        # Cumulative counts of skipped utterances per reason (also reported per batch in ``info``).
        self.nonfinite_counter: Counter = Counter()

    def _check_dims(self) -> None:
        if self.asr_head is not None and self.asr_head.encoder_dim != self.encoder.output_dim:
            raise ValueError(f"asr head encoder_dim {self.asr_head.encoder_dim} != encoder output_dim "
                             f"{self.encoder.output_dim}")
        for name, head, stack in (("at", self.at_head, self.at_input_stack), ("sv", self.sv_head, self.sv_input_stack)):
            if head is None:
                continue
            if stack is None:
                want = self.encoder.output_dim
            else:
                if not 0 <= stack < len(self.encoder.stack_dims):
                    raise ValueError(f"{name}_input_stack={stack} outside 0..{len(self.encoder.stack_dims) - 1}")
                want = self.encoder.stack_dims[stack]
            if head.in_dim != want:
                raise ValueError(f"{name} head in_dim {head.in_dim} != {want} (dim of its encoder input, "
                                 f"stack {stack})")

    @property
    def tasks(self) -> List[str]:
        return [t for t, h in (("asr", self.asr_head), ("at", self.at_head), ("sv", self.sv_head)) if h is not None]

    # ----------------------------------------------------------------- encoder
    def encode(self, features: Tensor, feature_lens: Tensor, need_stacks: bool = False
               ) -> Tuple[Tensor, Tensor, Optional[List[Tuple[Tensor, Tensor]]]]:
        """(out (N, T', D), out_lens, per-stack outputs or None)."""
        if need_stacks:
            return self.encoder.forward_with_stacks(features, feature_lens)
        out, out_lens = self.encoder(features, feature_lens)
        return out, out_lens, None

    def _head_input(self, stack: Optional[int], out: Tensor, out_lens: Tensor,
                    stacks: Optional[List[Tuple[Tensor, Tensor]]]) -> Tuple[Tensor, Tensor]:
        if stack is None:
            return out, out_lens
        x, lens = stacks[stack]
        return x, lens

    def _need_stacks(self) -> bool:
        return (self.at_head is not None and self.at_input_stack is not None) or (
            self.sv_head is not None and self.sv_input_stack is not None)

    # ----------------------------------------------------------------- inference helpers
    def asr_encoder_out(self, features: Tensor, feature_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """Encoder output for transducer decoding."""
        out, out_lens, _ = self.encode(features, feature_lens)
        return out, out_lens

    def at_logits(self, features: Tensor, feature_lens: Tensor) -> Tensor:
        """AT clip logits (N, K)."""
        if self.at_head is None:
            raise RuntimeError("this model has no AT head")
        out, out_lens, stacks = self.encode(features, feature_lens, self.at_input_stack is not None)
        x, lens = self._head_input(self.at_input_stack, out, out_lens, stacks)
        return self.at_head(x, lens)

    def sv_embeddings(self, features: Tensor, feature_lens: Tensor) -> Tensor:
        """Speaker embeddings (N, emb_dim)."""
        if self.sv_head is None:
            raise RuntimeError("this model has no SV head")
        out, out_lens, stacks = self.encode(features, feature_lens, self.sv_input_stack is not None)
        x, lens = self._head_input(self.sv_input_stack, out, out_lens, stacks)
        return self.sv_head.embed(x, lens)

    # ----------------------------------------------------------------- training
    def forward(self, batch: Dict[str, Any], batch_idx_train: int = 0) -> Tuple[Tensor, Dict[str, float]]:
        """Sum of the heads' losses on their masked cuts, and an ``info`` dict of floats.

        ``batch`` needs ``features``, ``feature_lens``, ``cut_ids`` and, per head, ``asr_mask`` + ``tokens``
        (see :func:`mt2kd_lib.data.dataset.add_tokens`), ``at_mask`` + ``at_targets``, ``sv_mask`` +
        ``speaker_idx``.
        """
        features, feature_lens = batch["features"], batch["feature_lens"]
        device = features.device
        ids: List[str] = list(batch["cut_ids"])
        out, out_lens, stacks = self.encode(features, feature_lens.to(device), self._need_stacks())

        # Utterances whose encoder output is non-finite are excluded from every head.
        ok = torch.isfinite(out.detach()).flatten(1).all(dim=1)
        if stacks is not None:
            for s, _ in stacks:
                ok &= torch.isfinite(s.detach()).flatten(1).all(dim=1)
        info: Dict[str, float] = {"utterances": float(len(ids)), "skipped_utts": 0.0}
        if not bool(ok.all()):
            finite_or_skip(torch.where(ok, 0.0, float("nan")), "encoder_out", self.nonfinite_counter, ids, logger)
            info["skipped_utts"] += float((~ok).sum())

        # A zero that keeps the graph connected (DDP needs every rank to run backward).
        loss = out.masked_fill(~ok[:, None, None], 0.0).sum() * 0.0
        if self.asr_head is not None and "asr_mask" in batch:
            loss = loss + self.loss_cfg.asr_scale * self._asr_loss(batch, out, out_lens, ok, ids, batch_idx_train, info)
        if self.at_head is not None and "at_mask" in batch:
            x, lens = self._head_input(self.at_input_stack, out, out_lens, stacks)
            loss = loss + self.loss_cfg.at_scale * self._at_loss(batch, x, lens, ok, ids, info)
        if self.sv_head is not None and "sv_mask" in batch:
            x, lens = self._head_input(self.sv_input_stack, out, out_lens, stacks)
            loss = loss + self.loss_cfg.sv_scale * self._sv_loss(batch, x, lens, ok, ids, info)
        info["loss"] = float(loss.detach())
        info["frames"] = float(out_lens[ok].sum()) if bool(ok.any()) else 0.0
        return loss, info

    def _select(self, mask: Tensor, ok: Tensor) -> Tensor:
        return (mask.to(ok.device) & ok).nonzero().flatten()

    def _asr_loss(self, batch, out, out_lens, ok, ids, batch_idx_train, info) -> Tensor:
        cfg = self.loss_cfg
        idx = self._select(batch["asr_mask"], ok)
        info.update(asr_utts=0.0, asr_frames=0.0, simple_loss=0.0, pruned_loss=0.0)
        if idx.numel() == 0:
            return out.new_zeros(())
        if "tokens" not in batch:
            raise ValueError("batch has ASR cuts but no 'tokens' (call mt2kd_lib.data.dataset.add_tokens)")
        s_scale, p_scale = transducer_loss_scales(batch_idx_train, cfg.warm_step, cfg.simple_loss_scale)

        def per_utt(sel: Tensor):
            y = [batch["tokens"][i] for i in sel.tolist()]
            losses = self.asr_head(out[sel], out_lens[sel], y, prune_range=cfg.prune_range,
                                   am_scale=cfg.am_scale, lm_scale=cfg.lm_scale, reduction="none")
            total = s_scale * losses.simple + p_scale * losses.pruned
            if losses.ctc is not None:
                total = total + cfg.ctc_scale * losses.ctc.to(total.device)
            return total, losses

        total, losses = per_utt(idx)
        finite = torch.isfinite(total.detach())
        if not bool(finite.all()):
            finite_or_skip(total, "asr_loss", self.nonfinite_counter, [ids[i] for i in idx.tolist()], logger)
            info["skipped_utts"] += float((~finite).sum())
            idx = idx[finite.to(idx.device)]
            if idx.numel() == 0:
                return out.new_zeros(())
            total, losses = per_utt(idx)  # recomputed: the inf terms must not be in the graph
        info["asr_utts"] = float(idx.numel())
        info["asr_frames"] = float(out_lens[idx].sum())
        info["simple_loss"] = float(losses.simple.detach().sum())
        info["pruned_loss"] = float(losses.pruned.detach().sum())
        if losses.ctc is not None:
            info["ctc_loss"] = float(losses.ctc.detach().sum())
        return total.sum()

    def _at_loss(self, batch, x, lens, ok, ids, info) -> Tensor:
        idx = self._select(batch["at_mask"], ok)
        info.update(at_utts=0.0, at_loss=0.0)
        if idx.numel() == 0:
            return x.new_zeros(())
        logits = self.at_head(x[idx], lens[idx])
        finite = torch.isfinite(logits.detach()).all(dim=1)
        if not bool(finite.all()):
            finite_or_skip(torch.where(finite, 0.0, float("nan")), "at_logits", self.nonfinite_counter,
                           [ids[i] for i in idx.tolist()], logger)
            info["skipped_utts"] += float((~finite).sum())
            keep = finite.nonzero().flatten()
            idx, logits = idx[keep], logits[keep]
            if idx.numel() == 0:
                return x.new_zeros(())
        targets = batch["at_targets"].to(logits.device)[idx]
        loss = at_bce_loss(logits, targets, reduction="none").sum()
        info["at_utts"] = float(idx.numel())
        info["at_loss"] = float(loss.detach())
        return loss

    def _sv_loss(self, batch, x, lens, ok, ids, info) -> Tensor:
        idx = self._select(batch["sv_mask"], ok)
        info.update(sv_utts=0.0, sv_loss=0.0)
        if idx.numel() == 0:
            return x.new_zeros(())
        if self.training and idx.numel() < 2:
            # The head's batch-norm needs >= 2 utterances; one lone SV cut is left out of this batch.
            info["sv_single_skipped"] = 1.0
            return x.new_zeros(())
        emb = self.sv_head.embed(x[idx], lens[idx])
        finite = torch.isfinite(emb.detach()).all(dim=1)
        if not bool(finite.all()):
            finite_or_skip(torch.where(finite, 0.0, float("nan")), "sv_embedding", self.nonfinite_counter,
                           [ids[i] for i in idx.tolist()], logger)
            info["skipped_utts"] += float((~finite).sum())
            idx = idx[finite]
            if idx.numel() < 2:
                return x.new_zeros(())
            emb = self.sv_head.embed(x[idx], lens[idx])  # batch-norm statistics without the bad ones
        loss = self.sv_head.loss(emb, batch["speaker_idx"].to(emb.device)[idx], reduction="none").sum()
        info["sv_utts"] = float(idx.numel())
        info["sv_loss"] = float(loss.detach())
        return loss
