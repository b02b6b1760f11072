"""The old on-disk layout of dumped teacher outputs (before data/teacher_shar.py), read only to convert it.

Layout under ``<out_dir>/<teacher>/``::

    dump_config.json        teacher spec, field name, shard size, tick power, fingerprint of the cut ids
    shard-00000.lca         one lhotse LilcomChunkyWriter archive with the shard's arrays
    shard-00000.jsonl.gz    the shard's cuts with the output attached as custom field ``<teacher>_<output_kind>``
    shard-00000.skipped     (only if any) cut ids that were skipped and why, one per line, tab separated
    shard-00000.done        JSON marker written last, only after the shard verified; holds sizes, checksums, stats
    summary.json            aggregate numbers over all finished shards

A shard counts as finished only when its ``.done`` marker exists and the archive/manifest sizes match what the
marker recorded, so a shard truncated after the fact is redone on the next run. Everything is written to a temporary
name first and moved into place with ``os.replace`` (atomic on POSIX), so a kill -9 leaves either the old state or
the new one, never a half file under the final name.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from lhotse import CutSet
from lhotse.array import Array, TemporalArray

from mt2kd_lib.data.teacher_shar import CONFIG_NAME, Pathlike, checksum_key, read_json, teacher_dir


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def shard_paths(tdir: Pathlike, index: int) -> Dict[str, Path]:
    """All file names that belong to shard ``index`` (final and temporary)."""
    tdir = Path(tdir)
    stem = shard_stem(index)
    return {
        "archive": tdir / f"{stem}.lca",
        "manifest": tdir / f"{stem}.jsonl.gz",
        "skipped": tdir / f"{stem}.skipped",
        "done": tdir / f"{stem}.done",
        # LilcomChunkyWriter appends ".lca" itself, so this base gives "<stem>.partial.lca".
        "tmp_archive_base": tdir / f"{stem}.partial",
        "tmp_archive": tdir / f"{stem}.partial.lca",
        "tmp_manifest": tdir / f"{stem}.partial.jsonl.gz",
    }


def read_done(tdir: Pathlike, index: int) -> Optional[Dict[str, Any]]:
    """The shard's ``.done`` record, or None when it is missing or unreadable (then the shard is not finished)."""
    p = shard_paths(tdir, index)["done"]
    if not p.is_file():
        return None
    try:
        return read_json(p)
    except (OSError, ValueError) as e:
        logging.warning("unreadable done marker %s (%s): shard will be redone", p, e)
        return None


def shard_is_finished(tdir: Pathlike, index: int, ids_sha1: Optional[str] = None) -> Tuple[bool, str]:
    """Cheap check (no decoding) that shard ``index`` is complete; returns (ok, reason when not ok)."""
    paths = shard_paths(tdir, index)
    done = read_done(tdir, index)
    if done is None:
        return False, "no done marker"
    for key in ("archive", "manifest"):
        p = paths[key]
        if not p.is_file():
            return False, f"{p} is missing"
        size = p.stat().st_size
        if size != done[f"{key}_bytes"]:
            return False, f"{p} has {size} bytes, the done marker recorded {done[f'{key}_bytes']}"
    if ids_sha1 is not None and done.get("ids_sha1") != ids_sha1:
        return False, "the shard's cut ids changed since it was dumped"
    return True, ""


def num_shards_of(out_dir: Pathlike, teacher: str) -> int:
    """How many shards the dump of ``teacher`` has (from its dump_config.json)."""
    cfg_path = teacher_dir(out_dir, teacher) / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no dump of teacher {teacher!r} under {out_dir}: {cfg_path} is missing")
    return int(read_json(cfg_path)["num_shards"])


def load_dump_config(out_dir: Pathlike, teacher: str) -> Dict[str, Any]:
    cfg_path = teacher_dir(out_dir, teacher) / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no dump of teacher {teacher!r} under {out_dir}: {cfg_path} is missing")
    return read_json(cfg_path)


def combine_shards(out_dir: Pathlike, teacher: str, allow_incomplete: bool = False) -> CutSet:
    """Load and concatenate the manifests of all finished shards of ``teacher`` (in shard order).

    Raises:
        RuntimeError listing unfinished shards, unless ``allow_incomplete`` (then they are left out with a warning).
    """
    tdir = teacher_dir(out_dir, teacher)
    n = num_shards_of(out_dir, teacher)
    cuts: List[Any] = []
    missing: List[str] = []
    for i in range(n):
        ok, why = shard_is_finished(tdir, i)
        if not ok:
            missing.append(f"{shard_stem(i)} ({why})")
            continue
        # The write-time crc32 of each array travels with the cut, so readers can check it (load_checked).
        checksums = (read_done(tdir, i) or {}).get("checksums") or {}
        for cut in CutSet.from_file(shard_paths(tdir, i)["manifest"]):
            custom = dict(cut.custom or {})
            for key, value in list(custom.items()):
                if isinstance(value, (Array, TemporalArray)):
                    # Archive paths were written relative to the dump's working directory: use the file found here.
                    arr = value.array if isinstance(value, TemporalArray) else value
                    arr.storage_path = str(tdir / Path(arr.storage_path).name)
                    if cut.id in checksums:
                        custom[checksum_key(key)] = checksums[cut.id]
            cut.custom = custom
            cuts.append(cut)
    if missing:
        msg = f"teacher {teacher}: {len(missing)} of {n} shards are not finished: {', '.join(missing[:10])}"
        if not allow_incomplete:
            raise RuntimeError(msg + " (re-run the dump, or pass allow_incomplete=True)")
        logging.warning(msg)
    return CutSet.from_cuts(cuts)


