"""``MultiTaskDataset``: one lhotse map-style dataset for ASR, AT, SV and KD batches.

The sampler hands over a CutSet (one mini-batch); every cut carries ``cut.custom["task"]`` (set by
:func:`mt2kd_lib.data.datamodule.tag_task` when the sampler is built), which decides which labels the cut
contributes: an ASR cut gives its transcript, an AT cut its multi-hot ``audio_event`` labels, an SV cut its
speaker index; a KD cut only features (and teacher fields). The masks ``asr_mask``/``at_mask``/``sv_mask`` are
the task-ID masks the models use to compute each head's loss on the right cuts only.

Batch dict (cuts sorted by decreasing duration, as icefall):
  ``features`` (N, T, 80) float, zero-padded; ``feature_lens`` (N,) int64; ``cut_ids`` list[str];
  ``task`` list[str]; ``origin`` list[str] (``custom["origin"]`` of KD pool cuts, else the task);
  ``texts`` list[str | None]; ``asr_mask`` (N,) bool; ``at_targets`` (N, K) float multi-hot (zeros where
  absent); ``at_mask`` (N,) bool; ``speaker_idx`` (N,) int64 (-1 where absent); ``sv_mask`` (N,) bool;
  for each teacher field F: ``F`` (N, ...) tensor (zeros where absent), ``F_mask`` (N,) bool and, for
  temporal arrays, ``F_lens`` (N,) int64; ``cuts`` (the CutSet) when ``return_cuts``.

AT soft labels (``at_soft_field``, stage-2 fine-tuning, see :mod:`mt2kd_lib.data.soft_labels`): the AT rows of
``at_targets`` become ``W * teacher_probs + (1 - W) * multi_hot`` (``W = at_soft_weight``); an AT cut without the
teacher field is an error naming it.
"""

import logging
import random
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from lhotse import CutSet
from lhotse.array import Array, TemporalArray
from lhotse.dataset.collation import collate_custom_field, collate_features

from mt2kd_lib.data.contract import parse_audio_event
from mt2kd_lib.data.teacher_shar import load_checked

TASK_NAMES = ("asr", "at", "sv", "kd")
# Soft labels further than this outside [0, 1] are not probabilities (lilcom's quantisation stays well within it).
PROB_SLACK = 0.05


def cut_task(cut: Any) -> str:
    """The task tag of a cut (``custom["task"]``), with a clear error when it was never set."""
    custom = getattr(cut, "custom", None) or {}
    if isinstance(custom, dict) and "task" in custom:
        task = custom["task"]
    else:
        # MixedCut (MUSAN): the first track is the speech cut that carries the tag.
        tracks = getattr(cut, "tracks", None)
        task = (tracks[0].cut.custom or {}).get("task") if tracks else None
    if task not in TASK_NAMES:
        raise ValueError(
            f"cut {cut.id}: custom['task'] is {task!r}; expected one of {TASK_NAMES} "
            "(build the sampler with mt2kd_lib.data.datamodule.make_train_dl / tag_task)"
        )
    return task


def _first_supervision(cut: Any):
    return cut.supervisions[0] if cut.supervisions else None


def _cut_custom(cut: Any, key: str) -> Any:
    custom = getattr(cut, "custom", None) or {}
    if key in custom:
        return custom[key]
    tracks = getattr(cut, "tracks", None)
    if tracks:
        return (tracks[0].cut.custom or {}).get(key)
    return None


def _has_field(cut: Any, field: str) -> bool:
    try:
        return cut.has_custom(field)
    except AttributeError:
        return False


class MultiTaskDataset(torch.utils.data.Dataset):
    """Collate a CutSet mini-batch of mixed-task cuts into tensors, labels and task masks.

    Args:
      speaker_map: speaker id -> class index for SV cuts (None: SV labels are not produced; SV cuts then
        get ``speaker_idx = -1`` and ``sv_mask = False``, e.g. for embedding-only evaluation).
      num_classes: number of AT classes K (None: no AT targets; AT cuts are then unlabelled).
      teacher_fields: names of custom fields (lhotse Array/TemporalArray or scalars) to collate.
      spec_augment: a lhotse ``SpecAugment`` (or any ``features -> features`` callable) applied in training.
      musan_cuts: noise cuts with features; when given, each cut is mixed with a random noise cut with
        probability ``musan_prob`` at an SNR drawn from ``musan_snr`` (lhotse's ``CutSet.mix``, as CutMix).
        The mixing seed is drawn from Python's ``random`` so that a re-seeded run mixes identically.
      return_cuts: also return the CutSet under ``"cuts"``.
      check_finite: raise on NaN/inf features, naming the cut.
      at_soft_field: custom field with the AT teacher's clip probabilities (K,) on every AT cut (None: hard
        labels only); needs ``num_classes``.
      at_soft_weight: W in ``W * teacher_probs + (1 - W) * multi_hot``, in [0, 1].
    """

    def __init__(
        self,
        speaker_map: Optional[Dict[str, int]] = None,
        num_classes: Optional[int] = None,
        teacher_fields: Sequence[str] = (),
        spec_augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        musan_cuts: Optional[CutSet] = None,
        musan_prob: float = 0.5,
        musan_snr: Sequence[float] = (10.0, 20.0),
        return_cuts: bool = False,
        check_finite: bool = True,
        at_soft_field: Optional[str] = None,
        at_soft_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 1")
        if at_soft_field is not None and num_classes is None:
            raise ValueError("at_soft_field needs num_classes (AT soft labels mix with the hard AT labels)")
        if not 0.0 <= at_soft_weight <= 1.0:
            raise ValueError(f"at_soft_weight={at_soft_weight} must be in [0, 1]")
        if not 0.0 <= musan_prob <= 1.0:
            raise ValueError(f"musan_prob={musan_prob} must be in [0, 1]")
        self.speaker_map = speaker_map
        self.num_classes = num_classes
        self.teacher_fields = list(teacher_fields)
        self.spec_augment = spec_augment
        self.musan_cuts = musan_cuts
        self.musan_prob = musan_prob
        self.musan_snr = tuple(musan_snr)
        self.return_cuts = return_cuts
        self.check_finite = check_finite
        self.at_soft_field = at_soft_field
        self.at_soft_weight = at_soft_weight

    def _mix_musan(self, cuts: CutSet) -> CutSet:
        seed = random.randint(0, 2**31 - 1)  # python RNG: re-seeded per epoch by the trainer
        return cuts.mix(
            cuts=self.musan_cuts,
            duration=max(c.duration for c in cuts),
            snr=self.musan_snr,
            mix_prob=self.musan_prob,
            preserve_id="left",
            seed=seed,
        ).to_eager()

    def __getitem__(self, cuts: CutSet) -> Dict[str, Any]:
        cuts = cuts.sort_by_duration(ascending=False)
        for cut in cuts:
            if not cut.has_features:
                raise ValueError(f"cut {cut.id} has no features; run the features stage (local/compute_fbank.py)")
        tasks = [cut_task(c) for c in cuts]
        if self.musan_cuts is not None:
            cuts = self._mix_musan(cuts)
        features, feature_lens = collate_features(cuts)
        if self.check_finite and not bool(torch.isfinite(features).all()):
            bad = (~torch.isfinite(features)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"non-finite feature values in cut(s) {[cuts[i].id for i in bad]}")
        if self.spec_augment is not None:
            features = self.spec_augment(features)
        batch: Dict[str, Any] = {
            "features": features,
            "feature_lens": feature_lens.to(torch.int64),
            "cut_ids": [c.id for c in cuts],
            "task": tasks,
            "origin": [(_cut_custom(c, "origin") or t) if t == "kd" else t for c, t in zip(cuts, tasks)],
        }
        batch.update(self._labels(cuts, tasks))
        if self.at_soft_field is not None:
            batch["at_targets"] = self._soft_at_targets(cuts, batch)
        for field in self.teacher_fields:
            batch.update(collate_optional_field(cuts, field))
        if self.return_cuts:
            batch["cuts"] = cuts
        return batch

    def _labels(self, cuts: CutSet, tasks: List[str]) -> Dict[str, Any]:
        n = len(tasks)
        texts: List[Optional[str]] = [None] * n
        asr_mask = torch.zeros(n, dtype=torch.bool)
        k = self.num_classes or 0
        at_targets = torch.zeros(n, k)
        at_mask = torch.zeros(n, dtype=torch.bool)
        speaker_idx = torch.full((n,), -1, dtype=torch.int64)
        sv_mask = torch.zeros(n, dtype=torch.bool)
        for i, (cut, task) in enumerate(zip(cuts, tasks)):
            sup = _first_supervision(cut)
            if task == "asr":
                if sup is None or not (sup.text or "").strip():
                    raise ValueError(f"ASR cut {cut.id} has no transcript")
                texts[i] = sup.text
                asr_mask[i] = True
            elif task == "at" and self.num_classes is not None:
                value = (sup.custom or {}).get("audio_event") if sup is not None else None
                labels = parse_audio_event(value, self.num_classes, f"AT cut {cut.id}")
                at_targets[i, labels] = 1.0
                at_mask[i] = True
            elif task == "sv" and self.speaker_map is not None:
                spk = sup.speaker if sup is not None else None
                if spk is None:
                    raise ValueError(f"SV cut {cut.id} has no speaker")
                if spk not in self.speaker_map:
                    raise ValueError(f"SV cut {cut.id}: speaker {spk!r} is not in the training speaker map")
                speaker_idx[i] = self.speaker_map[spk]
                sv_mask[i] = True
        return {
            "texts": texts,
            "asr_mask": asr_mask,
            "at_targets": at_targets,
            "at_mask": at_mask,
            "speaker_idx": speaker_idx,
            "sv_mask": sv_mask,
        }


    def _soft_at_targets(self, cuts: CutSet, batch: Dict[str, Any]) -> torch.Tensor:
        """``at_targets`` with the AT rows mixed with the teacher's probabilities."""
        field, at_mask = self.at_soft_field, batch["at_mask"]
        targets = batch["at_targets"]
        if not bool(at_mask.any()):
            return targets
        soft = collate_optional_field(cuts, field)
        absent = (at_mask & ~soft[f"{field}_mask"]).nonzero().flatten().tolist()
        if absent:
            raise ValueError(f"AT cut(s) {[batch['cut_ids'][i] for i in absent]} have no teacher output "
                             f"{field!r}: cannot train on AT soft labels (see mt2kd_lib.data.soft_labels)")
        probs = soft[field][at_mask].to(targets.dtype)
        if probs.shape[1:] != targets.shape[1:]:
            raise ValueError(f"teacher field {field!r} has shape {tuple(probs.shape[1:])} per cut, the AT targets "
                             f"{tuple(targets.shape[1:])}")
        bad = ((probs < -PROB_SLACK) | (probs > 1 + PROB_SLACK)).any(dim=1).nonzero().flatten().tolist()
        if bad:
            ids = [batch["cut_ids"][i] for i in at_mask.nonzero().flatten()[bad].tolist()]
            raise ValueError(f"teacher field {field!r} of AT cut(s) {ids} has values outside [0, 1]: not probabilities")
        # lilcom stores values to within half a tick, which can step just outside [0, 1].
        targets = targets.clone()
        targets[at_mask] = mix_at_targets(targets[at_mask], probs.clamp(0.0, 1.0), self.at_soft_weight)
        return targets


def mix_at_targets(hard: torch.Tensor, probs: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * probs + (1 - weight) * hard``: the AT training target with soft teacher labels."""
    return weight * probs + (1.0 - weight) * hard


def collate_optional_field(cuts: CutSet, field: str) -> Dict[str, torch.Tensor]:
    """Collate custom ``field`` of the cuts that have it; zeros and ``mask=False`` for the rest.

    Returns ``{field: (N, ...), field_mask: (N,)}`` plus ``field_lens: (N,)`` for temporal arrays (0 where
    absent). A batch where no cut has the field returns only the all-False mask.
    """
    cut_list = list(cuts)
    n = len(cut_list)
    have = [i for i, c in enumerate(cut_list) if _has_field(c, field)]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[have] = True
    out: Dict[str, torch.Tensor] = {f"{field}_mask": mask}
    if not have:
        return out
    for i in have:  # a corrupt archive is named (shard and cut), not decoded into silently wrong targets
        if isinstance(cut_list[i].custom.get(field), (Array, TemporalArray)):
            load_checked(cut_list[i], field)
    sub = CutSet.from_cuts(cut_list[i] for i in have)
    collated = collate_custom_field(sub, field, pad_value=0)
    idx = torch.tensor(have, dtype=torch.int64)
    if isinstance(collated, tuple):
        values, lens = collated
        full_lens = torch.zeros(n, dtype=torch.int64)
        full_lens[idx] = lens.to(torch.int64)
        out[f"{field}_lens"] = full_lens
    else:
        values = collated
    full = torch.zeros((n, *values.shape[1:]), dtype=values.dtype)
    full[idx] = values
    if full.is_floating_point() and not bool(torch.isfinite(full).all()):
        bad = (~torch.isfinite(full)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"non-finite values in teacher field {field!r} of cut(s) {[cut_list[i].id for i in bad]}")
    out[field] = full
    return out


def add_tokens(batch: Dict[str, Any], encode: Callable[[List[str]], List[List[int]]]) -> Dict[str, Any]:
    """Add ``batch["tokens"]``: token ids for ASR cuts (``asr_mask``), None for the others.

    ``encode`` is e.g. ``sentencepiece.SentencePieceProcessor.encode``; it runs in the main process so the
    dataset (possibly in DataLoader workers) does not need to pickle the BPE model.
    """
    idx = [i for i, m in enumerate(batch["asr_mask"].tolist()) if m]
    tokens: List[Optional[List[int]]] = [None] * len(batch["cut_ids"])
    if idx:
        for i, ids in zip(idx, encode([batch["texts"][i] for i in idx])):
            if not ids:
                raise ValueError(f"ASR cut {batch['cut_ids'][i]}: transcript encodes to no tokens")
            tokens[i] = list(ids)
    batch["tokens"] = tokens
    return batch


def log_batch_summary(batch: Dict[str, Any]) -> None:
    """Debug helper: one log line with the batch's size and task mix."""
    counts = {t: batch["task"].count(t) for t in TASK_NAMES if t in batch["task"]}
    logging.debug(f"batch: {len(batch['cut_ids'])} cuts, T={batch['features'].shape[1]}, tasks {counts}")
