"""AT soft labels for stage-2 fine-tuning: the AT teacher's dumped clip probabilities on the AT training cuts.

Where they come from: run.sh stage 5 (local/dump_teacher.py) dumps every teacher over the KD pool's Shar export
into ``<exp>/teacher_outputs/<teacher>/<field>.NNNNNN.tar`` (see :mod:`mt2kd_lib.data.teacher_shar`). The pool is the training cuts of every task under their own ids (prepare drops
the supervisions and adds ``custom["origin"]``; fbank reuses the training features), so an AT training cut finds
its teacher output by cut id. Each match is also checked to be the same audio segment (recording id, start,
duration): egs/mini ids are generic (``at-train-00000``), and a dump of another corpus must be refused, not used.

The AT cuts stay a lazy stream; the pool lists them in another order than the AT training manifest, so the AT
teacher's outputs (clip probabilities only, a few KB a cut) are looked up by id in a table built from one pass over
its dump. That table is the one id-join left in training, only with ``--at-soft-labels``.
:class:`mt2kd_lib.data.dataset.MultiTaskDataset` (``at_soft_field``) collates them and mixes them with the hard
labels. Every AT training cut must have an output: a missing one is an error, never a silent fallback to hard labels.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

from lhotse import CutSet
from lhotse.utils import fastcopy

from mt2kd_lib.data.teacher_shar import (
    checksum_key,
    dump_pool_dir,
    load_dump_config,
    read_teacher_cuts,
    teacher_dir,
)

MAX_LISTED = 10  # cut ids named in an error message


def check_at_teacher(dump_config: Dict[str, Any], teacher: str, num_classes: int) -> str:
    """The dump's field name, after checking it holds clip-level AT probabilities over ``num_classes`` classes."""
    spec = dump_config["spec"]
    if spec["task"] != "at":
        raise ValueError(f"teacher {teacher!r} is a {spec['task']!r} teacher; AT soft labels need the AT teacher")
    if spec["level"] != "utterance" or spec["output_kind"] != "probabilities":
        raise ValueError(f"teacher {teacher!r} outputs {spec['level']}-level {spec['output_kind']}; AT soft labels "
                         "need utterance-level class probabilities")
    if int(spec["dim"]) != num_classes:
        raise ValueError(f"teacher {teacher!r} outputs {spec['dim']} classes but the AT head has {num_classes} "
                         "(class_labels_indices.csv): the teacher must tag the same classes")
    return dump_config["field"]


def _same_segment(a: Any, b: Any) -> bool:
    return (a.recording_id == b.recording_id and abs(a.start - b.start) < 1e-3
            and abs(a.duration - b.duration) < 1e-3)


def check_coverage(cuts: CutSet, by_id: Mapping[str, Any], where: Union[str, Path]) -> None:
    """Every cut of ``cuts`` has a dumped cut with its id and the same audio segment, or a ValueError names them."""
    total = sum(1 for _ in cuts)
    missing: List[str] = [c.id for c in cuts if c.id not in by_id]
    if missing:
        raise ValueError(
            f"{len(missing)} of {total} AT training cuts have no teacher output in {where}: "
            f"{', '.join(missing[:MAX_LISTED])}{' ...' if len(missing) > MAX_LISTED else ''}. The dump covers the "
            "KD pool (kd_cuts_pool.jsonl.gz) minus cuts the teacher skipped (shard-*.skipped); cuts outside it "
            "(e.g. --use-teacher-extra splits) have none. Re-run the dump stage (run.sh stage 5) or leave out "
            "--at-soft-labels")
    other = [c.id for c in cuts if not _same_segment(c, by_id[c.id])]
    if other:
        raise ValueError(
            f"{len(other)} of {total} AT training cuts match a teacher output in {where} by id but not by audio "
            f"(recording id / start / duration differ), e.g. {', '.join(other[:MAX_LISTED])}: the dump is of "
            "another corpus; re-run the dump stage (run.sh stage 5)")


def load_at_soft_labels(cuts: CutSet, out_dir: Union[str, Path], teacher: str, num_classes: int
                        ) -> Tuple[CutSet, str]:
    """Attach the dumped output of AT teacher ``teacher`` (under ``out_dir``) to every cut of ``cuts``.

    Returns the cuts (lazy when ``cuts`` is, with the teacher's custom field) and the field name, e.g.
    ``at_teacher_probabilities``.
    Raises ValueError when the teacher is not an AT probabilities teacher over ``num_classes`` classes, or when any
    cut has no (matching) output; FileNotFoundError / RuntimeError when the dump is missing or unfinished.
    """
    field = check_at_teacher(load_dump_config(out_dir, teacher), teacher, num_classes)
    dumped = {c.id: c for c in read_teacher_cuts(out_dir, teacher, dump_pool_dir(out_dir, teacher))
              if c.custom.get(field) is not None}
    check_coverage(cuts, dumped, teacher_dir(out_dir, teacher))
    logging.info(f"AT soft labels: output of teacher {teacher} ({field}) found for every AT training cut")
    return cuts.map(AttachById(field, {cid: _field_values(c, field) for cid, c in dumped.items()})), field


def _field_values(cut: Any, field: str) -> Dict[str, Any]:
    key = checksum_key(field)
    return {k: cut.custom[k] for k in (field, key) if k in cut.custom}


class AttachById:
    """Picklable cut map: add the custom values ``table[cut.id]`` (a teacher field and its crc32) to each cut."""

    def __init__(self, field: str, table: Dict[str, Dict[str, Any]]) -> None:
        self.field, self.table = field, table

    def __call__(self, cut: Any) -> Any:
        return fastcopy(cut, custom={**(cut.custom or {}), **self.table[cut.id]})
