"""AT soft labels for stage-2 fine-tuning: the AT teacher's clip probabilities on the AT training cuts, read lazily.

Where they come from: with soft labels on, run.sh stage 5 exports the AT training split (its fbank manifest) to
Shar once, as it does the KD pool (:func:`mt2kd_lib.data.shar.export_pool_shar`), and dumps the AT teacher over
that export (local/dump_teacher.py), so the teacher's outputs are Shar fields aligned entry by entry with the AT
training cuts themselves (:mod:`mt2kd_lib.data.teacher_shar`). Training then streams those shards with the field
attached (``CutSet.from_shar``): no id table, nothing held in memory, whatever the size of the AT set.

Before training reads them, :func:`read_at_soft_label_cuts` checks, in one streaming pass over cut ids, that the
export holds exactly the AT training manifest's cuts in its order (a dump of another corpus or an older manifest is
refused), and that every cut has an output: a missing one (e.g. a clip the teacher skipped as too short) is an
error naming it, never a silent fallback to hard labels.
:class:`mt2kd_lib.data.dataset.MultiTaskDataset` (``at_soft_field``) collates them and mixes them with the hard
labels, which the exported cuts keep (their supervisions are the manifest's).
"""

import logging
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple, Union

from lhotse import CutSet

from mt2kd_lib.data.teacher_shar import (
    ShardedIdsFingerprint,
    dump_pool_dir,
    load_dump_config,
    pool_shards,
    read_pool_info,
    teacher_dir,
    teacher_shar_fields,
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


def export_ids_sha1(ids: Iterable[str], shard_size: int) -> str:
    """The ``ids_sha1`` that :func:`~mt2kd_lib.data.shar.export_pool_shar` would record for cuts with these ids in
    this order and this shard size (one pass, one shard's ids in memory)."""
    fingerprint = ShardedIdsFingerprint(shard_size)
    for cid in ids:
        fingerprint.add(cid)
    return fingerprint.finish()


def read_at_soft_label_cuts(manifest: CutSet, out_dir: Union[str, Path], teacher: str, num_classes: int
                            ) -> Tuple[CutSet, str]:
    """The AT training cuts with the AT teacher's probabilities attached, as a lazy CutSet over the Shar export the
    teacher ``teacher`` (under ``out_dir``) was dumped over, and the field name (e.g. ``at_teacher_probabilities``).

    ``manifest``: the AT training split as the recipe lists it (lazy); the export must hold the same cut ids in the
    same order. Raises ValueError when the teacher is not an AT probabilities teacher over ``num_classes`` classes,
    when the export is of other cuts, or when a cut has no output; FileNotFoundError / RuntimeError when the dump
    is missing or unfinished.
    """
    cfg = load_dump_config(out_dir, teacher)
    field = check_at_teacher(cfg, teacher, num_classes)
    pool_dir = dump_pool_dir(out_dir, teacher)
    pool = read_pool_info(pool_dir)
    if export_ids_sha1((c.id for c in manifest), pool["shard_size"]) != pool["ids_sha1"]:
        raise ValueError(
            f"teacher {teacher!r} under {out_dir} was dumped over {pool_dir} ({pool['num_cuts']} cuts from "
            f"{pool.get('source')}), which does not hold the AT training cuts (ids or their order differ): the dump "
            "is of another corpus or an older manifest; re-run the dump stage (run.sh stage 5)")
    fields, covered = teacher_shar_fields(out_dir, teacher, pool_dir, pool)
    cuts = CutSet.from_shar(fields={"cuts": pool_shards(pool_dir, pool), **fields})
    if covered != pool["num_cuts"]:
        missing = []
        for c in cuts:  # only to name them: one pass over the export, on the error path
            if (c.custom or {}).get(field) is None:
                missing.append(c.id)
                if len(missing) > MAX_LISTED:
                    break
        raise ValueError(
            f"{pool['num_cuts'] - covered} of {pool['num_cuts']} AT training cuts have no teacher output in "
            f"{teacher_dir(out_dir, teacher)}: {', '.join(missing[:MAX_LISTED])}"
            f"{' ...' if len(missing) > MAX_LISTED else ''} (the dump skips clips shorter than the teacher's "
            "minimum, listed in its shard-*.done markers); drop them from the AT training split or leave out "
            "--at-soft-labels")
    logging.info(f"AT soft labels: output of teacher {teacher} ({field}) for all {covered} AT training cuts, "
                 f"read from {pool_dir}")
    return cuts, field
