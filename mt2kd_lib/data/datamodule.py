"""Training / evaluation DataLoaders over contract CutSets (icefall's ``AsrDataModule``, for several tasks).

Mixing tasks: several CutSets are combined with ``CutSet.mux(*cutsets, weights=...)`` and then bucketed by
one ``DynamicBucketingSampler``. We chose mux + one bucketing sampler over lhotse's ``ZipSampler`` because
it keeps ``max_duration`` a single budget for the whole batch (ZipSampler adds per-task budgets), buckets
all tasks by duration together (less padding) and yields mixed-task batches whose task mix follows
``weights`` on average; the task-ID masks in each batch tell the model which cuts feed which head. An epoch
ends when every CutSet is exhausted (``mux`` with ``stop_early=False``).

Determinism: the sampler is seeded with ``seed`` and ``set_epoch(epoch)`` reshuffles per epoch, the mux
order is fixed by ``seed``, and the dataset's own randomness (SpecAugment, MUSAN) uses the global RNGs that
the trainer re-seeds every epoch, so a resumed run sees exactly the same batches.
"""

import functools
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, IterableDatasetWrapper, SimpleCutSampler, SpecAugment

from mt2kd_lib.data.dataset import MultiTaskDataset
from mt2kd_lib.data.frames import MIN_INPUT_FRAMES, encoder_output_frames  # noqa: F401 (re-exported)

NUM_BUCKETS = 10  # the bucketing sampler's duration buckets (lhotse's default)


def _set_task(cut: Any, task: str) -> Any:
    return cut.with_custom("task", task)


def tag_task(cuts: CutSet, task: str) -> CutSet:
    """Set ``custom["task"]`` on every cut (lazily for lazy CutSets; picklable for DataLoader workers)."""
    return cuts.map(functools.partial(_set_task, task=task))


class CutFilter:
    """Picklable cut predicate: duration bounds and, for ASR, tokens must fit in the encoder frames.

    Counts what it drops (``counts``); each drop is also logged at DEBUG level naming the cut.
    """

    def __init__(
        self,
        min_duration: float = 0.1,
        max_duration: float = 30.0,
        encode: Optional[Callable[[str], List[int]]] = None,
    ) -> None:
        self.min_duration = min_duration
        self.max_duration = max_duration
        self.encode = encode
        self.counts = {"kept": 0, "too_short": 0, "too_long": 0, "too_many_tokens": 0, "no_features": 0}

    def __call__(self, cut: Any) -> bool:
        reason = None
        if not cut.has_features:
            reason = "no_features"
        elif cut.duration < self.min_duration or cut.num_frames < MIN_INPUT_FRAMES:
            reason = "too_short"
        elif cut.duration > self.max_duration:
            reason = "too_long"
        elif self.encode is not None and cut.supervisions and cut.supervisions[0].text:
            # The pruned RNN-T emits at most one symbol per frame at decoding time: keep T' >= U.
            n_tokens = len(self.encode(cut.supervisions[0].text))
            if encoder_output_frames(cut.num_frames) < n_tokens:
                reason = "too_many_tokens"
        if reason is None:
            self.counts["kept"] += 1
            return True
        self.counts[reason] += 1
        logging.debug(f"filtering out cut {cut.id}: {reason} (duration {cut.duration:.2f} s)")
        return False


def filter_cuts(
    cuts: CutSet,
    name: str,
    min_duration: float = 0.1,
    max_duration: float = 30.0,
    encode: Optional[Callable[[str], List[int]]] = None,
) -> CutSet:
    """Apply :class:`CutFilter`; eager CutSets are filtered now and the dropped counts logged."""
    pred = CutFilter(min_duration, max_duration, encode)
    if cuts.is_lazy:
        return cuts.filter(pred)
    out = cuts.filter(pred).to_eager()
    dropped = {k: v for k, v in pred.counts.items() if k != "kept" and v}
    if dropped:
        logging.warning(f"{name}: kept {pred.counts['kept']} of {len(cuts)} cuts; dropped {dropped}")
    if len(out) == 0:
        raise ValueError(f"{name}: no cuts left after filtering (dropped {dropped})")
    return out


def make_spec_augment(time_warp: bool = False, num_frame_masks: int = 10) -> SpecAugment:
    """icefall's SpecAugment settings; time warping is off by default (slow on CPU)."""
    return SpecAugment(
        time_warp_factor=80 if time_warp else None,
        num_frame_masks=num_frame_masks,
        features_mask_size=27,
        num_feature_masks=2,
        frames_mask_size=100,
    )


def make_train_dl(
    cutsets: Dict[str, CutSet],
    weights: Optional[Sequence[float]] = None,
    max_duration: float = 200.0,
    dataset: Optional[MultiTaskDataset] = None,
    num_buckets: int = NUM_BUCKETS,
    shuffle: bool = True,
    drop_last: bool = False,
    seed: int = 42,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    num_workers: int = 0,
    buffer_size: int = 20000,
    iterable: bool = False,
    duration_bins: Optional[Sequence[float]] = None,
) -> torch.utils.data.DataLoader:
    """DataLoader of mixed-task training batches.

    Args:
      cutsets: task name ("asr"/"at"/"sv"/"kd") -> CutSet with features; each is tagged with its task.
      weights: mux weights per CutSet (same order as ``cutsets``); default: equal weights.
      max_duration: seconds of audio per batch (per rank).
      dataset: the collating dataset (default: a bare :class:`MultiTaskDataset`).
      world_size / rank: DDP partitioning (None: single process, or auto-detected by lhotse).
      buffer_size: cuts the bucketing sampler holds; with Shar input these carry their teacher outputs in memory.
      iterable: the CutSets are Shar streams read with ``split_for_dataloading=True`` (each DDP rank and
        dataloader worker reads its own shards): the sampler then runs inside each worker, wrapped in lhotse's
        ``IterableDatasetWrapper``, with ``world_size=1, rank=0`` (the shards are already split).
      duration_bins: the bucket boundaries (e.g. :func:`mt2kd_lib.data.teacher_shar.pool_duration_bins`); None:
        the sampler estimates them from the first 10,000 cuts it reads.
    The sampler is :func:`train_sampler` ``(dl)``; call its ``set_epoch(epoch)`` before each epoch.
    """
    if not cutsets:
        raise ValueError("make_train_dl: no CutSets given")
    tagged = [tag_task(c, task) for task, c in cutsets.items()]
    if len(tagged) == 1:
        cuts = tagged[0]
    else:
        w = list(weights) if weights is not None else [1.0] * len(tagged)
        if len(w) != len(tagged):
            raise ValueError(f"make_train_dl: {len(w)} weights for {len(tagged)} CutSets {list(cutsets)}")
        if any(x <= 0 for x in w):
            raise ValueError(f"make_train_dl: weights must be > 0, got {w}")
        cuts = CutSet.mux(*tagged, weights=w, seed=seed)
    if all(not c.is_lazy for c in cutsets.values()):
        # lhotse needs at least as many cuts as buckets (tiny corpora, tests).
        num_buckets = max(1, min(num_buckets, sum(len(c) for c in cutsets.values())))
    sampler = DynamicBucketingSampler(
        cuts,
        max_duration=max_duration,
        shuffle=shuffle,
        num_buckets=num_buckets,
        duration_bins=list(duration_bins) if duration_bins else None,
        drop_last=drop_last,
        buffer_size=buffer_size,
        seed=seed,
        world_size=1 if iterable else world_size,
        rank=0 if iterable else rank,
    )
    ds = dataset if dataset is not None else MultiTaskDataset()
    if iterable:
        return torch.utils.data.DataLoader(IterableDatasetWrapper(ds, sampler), batch_size=None,
                                           num_workers=num_workers, persistent_workers=False)
    return torch.utils.data.DataLoader(
        ds, sampler=sampler, batch_size=None, num_workers=num_workers, persistent_workers=False
    )


def train_sampler(dl: Any) -> Any:
    """The lhotse sampler of a training DataLoader: ``dl.sampler`` (map-style), or the one inside lhotse's
    ``IterableDatasetWrapper`` (Shar input, see :func:`make_train_dl` ``iterable``)."""
    ds = getattr(dl, "dataset", None)
    if isinstance(ds, IterableDatasetWrapper):
        return ds.sampler
    return getattr(dl, "sampler", None)


def make_eval_dl(
    cuts: CutSet,
    max_duration: float = 200.0,
    task: str = "asr",
    dataset: Optional[MultiTaskDataset] = None,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """DataLoader over ``cuts`` in order (SimpleCutSampler, no shuffling), every cut tagged ``task``.

    ``world_size=1, rank=0`` (the default when None) gives every cut to this process, e.g. for decoding.
    """
    sampler = SimpleCutSampler(
        tag_task(cuts, task),
        max_duration=max_duration,
        shuffle=False,
        world_size=world_size if world_size is not None else 1,
        rank=rank if rank is not None else 0,
    )
    ds = dataset if dataset is not None else MultiTaskDataset()
    return torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=None, num_workers=num_workers)


def speaker_map_from_cuts(cuts: CutSet) -> Dict[str, int]:
    """Sorted speaker ids of the SV training cuts -> 0..S-1 (checked: every cut has a speaker)."""
    speakers = set()
    for cut in cuts:
        sup = cut.supervisions[0] if cut.supervisions else None
        if sup is None or not sup.speaker:
            raise ValueError(f"SV cut {cut.id} has no speaker")
        speakers.add(sup.speaker)
    return {s: i for i, s in enumerate(sorted(speakers))}
