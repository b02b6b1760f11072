"""Convert a teacher dump in the old lilcom-shard layout (teachers/legacy_shards.py) into Shar fields aligned with a
KD pool Shar export (data/teacher_shar.py), so an existing dump is reused instead of re-running the teachers.

Each old array is decoded (its dump-time crc32 checked) and stored again. ``float_format="numpy"`` (the default)
keeps the decoded values bit for bit (4 bytes a value); ``"lilcom"`` re-encodes at the dump's tick power (about 1
byte a value), which changes some values by up to another half tick (lilcom is not exactly idempotent on its output:
measured on the egs/mini ASR teacher); the writer's tolerance check bounds that error and the count is reported.
"""

import logging
from typing import Any, Dict

from lhotse import CutSet
from lhotse.array import TemporalArray

from mt2kd_lib.data.teacher_shar import (
    CONFIG_NAME,
    LAYOUT,
    Pathlike,
    array_checksum,
    checksum_key,
    load_checked,
    pool_record,
    pool_shard_path,
    read_pool_info,
    shard_is_finished,
    teacher_dir,
    write_json,
)
from mt2kd_lib.teachers import legacy_shards
from mt2kd_lib.teachers.shar_writer import TeacherShardWriter


def convert_legacy_dump(old_dir: Pathlike, teacher: str, pool_dir: Pathlike, new_dir: Pathlike,
                        float_format: str = "numpy") -> Dict[str, Any]:
    """Write ``<new_dir>/<teacher>/`` in the Shar layout from the old dump ``<old_dir>/<teacher>/``; resumable
    (finished shards are kept). Returns counts. Cuts of the old dump that are not in the pool are reported."""
    old_cfg = legacy_shards.load_dump_config(old_dir, teacher)
    field = old_cfg["field"]
    # A one-off tool: the old layout can only be joined by id, so its (small) manifests are held in memory here.
    table = {c.id: c for c in legacy_shards.combine_shards(old_dir, teacher)}
    pool = read_pool_info(pool_dir)
    tdir = teacher_dir(new_dir, teacher)
    tdir.mkdir(parents=True, exist_ok=True)
    spec = old_cfg["spec"]
    frame_shift = spec.get("frame_shift") if spec.get("level") == "frame" else None
    cfg = dict(layout=LAYOUT, teacher=teacher, field=field, spec=spec, tick_power=old_cfg["tick_power"],
               rel_precision_bits=old_cfg.get("rel_precision_bits"), origin=old_cfg.get("origin"),
               pool=pool_record(pool_dir, new_dir),
               converted_from=str(legacy_shards.teacher_dir(old_dir, teacher)))
    write_json(tdir / CONFIG_NAME, cfg)
    found = written = changed = 0
    for i, sha in enumerate(pool["shard_ids_sha1"]):
        cuts = list(CutSet.from_file(pool_shard_path(pool_dir, i)))
        covered = [c for c in cuts if c.id in table]
        found += len(covered)
        if shard_is_finished(tdir, field, i, sha)[0]:
            continue
        writer = TeacherShardWriter(tdir, field, i, old_cfg["tick_power"], frame_shift, float_format)
        try:
            for cut in covered:
                old = table[cut.id]
                arr = load_checked(old, field)  # checks the crc32 recorded by the old dump
                manifest = old.custom[field]
                start = manifest.start if isinstance(manifest, TemporalArray) else None
                decoded = writer.add(cut, arr, start=start)
                want = old.custom.get(checksum_key(field))
                if want is not None and array_checksum(decoded) != want:
                    if float_format == "numpy":
                        raise RuntimeError(f"teacher {teacher}: cut {cut.id} did not convert exactly")
                    changed += 1
                written += 1
            writer.finish([c.id for c in cuts], dict(ids_sha1=sha, num_cuts=len(cuts), num_skipped=0))
        except BaseException:
            writer.abort()
            raise
    if found < len(table):
        logging.warning(f"teacher {teacher}: {len(table) - found} of {len(table)} dumped cuts are not in the pool "
                        f"{pool_dir}; they are left out")
    logging.info(f"teacher {teacher}: converted {found} outputs ({written} this run, {changed} re-encoded within "
                 f"half a lilcom tick) into {tdir}")
    return dict(teacher=teacher, field=field, pool_cuts=pool["num_cuts"], outputs=found, written=written,
                changed=changed, not_in_pool=len(table) - found)
