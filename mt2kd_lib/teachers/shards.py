"""On-disk layout of dumped teacher outputs, and reading it back.

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

import hashlib
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from lhotse import CutSet
from lhotse.array import Array, TemporalArray
from lhotse.utils import fastcopy

Pathlike = Union[str, Path]

CONFIG_NAME = "dump_config.json"
SUMMARY_NAME = "summary.json"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_name(name: str, what: str = "teacher name") -> str:
    """Names become folder names and ``cut.load_<field>()`` attributes: letters, digits, underscores only."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits and underscores, starting with a letter")
    return name


def field_name(teacher: str, output_kind: str) -> str:
    """Custom field holding a teacher's output on a cut, e.g. ``whisper_embedding`` / ``beats_probabilities``."""
    return check_name(f"{teacher}_{output_kind}", "field name")


def teacher_dir(out_dir: Pathlike, teacher: str) -> Path:
    return Path(out_dir) / check_name(teacher)


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


def ids_fingerprint(ids: Iterable[str]) -> str:
    """sha1 over the cut ids in order: identifies which cuts a shard (or a dump) covers."""
    h = hashlib.sha1()
    for cid in ids:
        h.update(cid.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def array_checksum(arr: np.ndarray) -> int:
    """crc32 of the decoded float32 bytes; stored at write time, compared at verification."""
    return zlib.crc32(np.ascontiguousarray(arr, dtype=np.float32).tobytes())


def checksum_key(field: str) -> str:
    """Custom field that carries the write-time crc32 of ``field`` on combined cuts (see :func:`load_checked`)."""
    return f"{field}_crc32"


def load_checked(cut: Any, field: str) -> np.ndarray:
    """All stored frames of ``cut``'s array ``field``, checked against the crc32 recorded when it was dumped.

    Lilcom has no checksum of its own: a flipped byte in an archive decodes to wrong but finite numbers, or fails
    with a bare decoder error. This names the archive (the shard) and the cut instead. Cuts without a recorded crc
    (fields not produced by :func:`mt2kd_lib.teachers.dump.dump_teacher`) are only decoded.
    """
    manifest = cut.custom[field]
    archive = manifest.array.storage_path if isinstance(manifest, TemporalArray) else manifest.storage_path
    hint = (f"the archive is corrupt: delete {Path(archive).with_suffix('.done')} and re-run the dump stage "
            "(run.sh --stage 5 --force true) to redo that shard")
    try:
        arr = manifest.load()
    except Exception as e:
        raise RuntimeError(f"teacher field {field!r}: cannot decode cut {cut.id} from shard {archive} "
                           f"({type(e).__name__}: {e}); {hint}") from e
    want = (cut.custom or {}).get(checksum_key(field))
    if want is not None and array_checksum(arr) != want:
        raise RuntimeError(f"teacher field {field!r}: cut {cut.id} in shard {archive} does not match its recorded "
                           f"crc32; {hint}")
    return arr


def fsync_file(path: Pathlike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: Pathlike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file + fsync + os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Pathlike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Pathlike) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


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


def verify_shard(
    tdir: Pathlike,
    index: int,
    field: str,
    references: Optional[Mapping[str, np.ndarray]] = None,
    tolerance: Optional[float] = None,
    checksums: Optional[Mapping[str, int]] = None,
) -> Dict[str, float]:
    """Re-open shard ``index``, read every array back with stock lhotse and check it.

    Checks for every cut in the manifest: the field exists, the array decodes, its shape is the manifest's shape,
    it is finite, and (when given) its crc32 equals the one recorded at write time and its max abs difference to
    the float reference is ``<= tolerance``. With no ``checksums`` passed, the ones in the ``.done`` marker are used.

    Raises:
        RuntimeError naming the shard archive (and the cut) on any failure, including a truncated file.

    Returns:
        ``{"num_arrays": n, "max_abs_error": e}`` (error only meaningful when references were given).
    """
    paths = shard_paths(tdir, index)
    archive = paths["archive"]
    if checksums is None:
        done = read_done(tdir, index)
        checksums = done.get("checksums") if done else None
    try:
        cuts = CutSet.from_file(paths["manifest"]).to_eager()
    except Exception as e:
        raise RuntimeError(f"shard manifest {paths['manifest']} cannot be read: {e}") from e
    max_err = 0.0
    n = 0
    for cut in cuts:
        manifest = (cut.custom or {}).get(field)
        if not isinstance(manifest, (Array, TemporalArray)):
            raise RuntimeError(f"shard {archive}: cut {cut.id} has no array field {field!r}")
        try:
            # TemporalArray.load() without a duration returns all stored frames (load_custom would trim to the cut).
            arr = manifest.load()
        except Exception as e:
            raise RuntimeError(f"shard archive {archive} is corrupt: cannot decode cut {cut.id}: {e}") from e
        shape = list(manifest.shape)
        if list(arr.shape) != shape:
            raise RuntimeError(
                f"shard archive {archive} is corrupt: cut {cut.id} decoded to shape {list(arr.shape)}, "
                f"manifest says {shape}"
            )
        if not np.isfinite(arr).all():
            raise RuntimeError(f"shard archive {archive}: cut {cut.id} decoded to non-finite values")
        if checksums is not None:
            if cut.id not in checksums or checksums[cut.id] != array_checksum(arr):
                raise RuntimeError(f"shard archive {archive} is corrupt: checksum mismatch for cut {cut.id}")
        if references is not None:
            err = float(np.abs(arr - references[cut.id]).max()) if arr.size else 0.0
            if tolerance is not None and err > tolerance:
                raise RuntimeError(
                    f"shard archive {archive}: cut {cut.id} lilcom error {err:.3g} exceeds tolerance {tolerance:.3g}"
                )
            max_err = max(max_err, err)
        n += 1
    return {"num_arrays": n, "max_abs_error": max_err}


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
                if isinstance(value, (Array, TemporalArray)) and cut.id in checksums:
                    custom[checksum_key(key)] = checksums[cut.id]
            cut.custom = custom
            cuts.append(cut)
    if missing:
        msg = f"teacher {teacher}: {len(missing)} of {n} shards are not finished: {', '.join(missing[:10])}"
        if not allow_incomplete:
            raise RuntimeError(msg + " (re-run the dump, or pass allow_incomplete=True)")
        logging.warning(msg)
    return CutSet.from_cuts(cuts)


def attach_fields_by_id(cuts: CutSet, sources: Mapping[str, CutSet]) -> CutSet:
    """Copy custom field ``name`` from ``sources[name]`` onto the cuts of ``cuts`` with the same id.

    Cuts absent from a source simply do not get that field (KD task masking uses absence). Ids in a source that are
    not in ``cuts`` are ignored (counted in the log). Returns a new eager CutSet; the input cuts are not modified.

    Raises:
        ValueError if a source has duplicate ids or a source cut lacks the field it is supposed to provide.
    """
    lookup: Dict[str, Dict[str, Any]] = {}
    for name, src in sources.items():
        table: Dict[str, Any] = {}
        for c in src:
            if c.id in table:
                raise ValueError(f"source for field {name!r} has duplicate cut id {c.id}")
            value = (c.custom or {}).get(name)
            if value is None:
                raise ValueError(f"source for field {name!r}: cut {c.id} does not have that field")
            table[c.id] = (value, (c.custom or {}).get(checksum_key(name)))
        lookup[name] = table
    out = []
    counts = {name: 0 for name in sources}
    for c in cuts:
        if not hasattr(c, "custom"):
            raise ValueError(f"cut {c.id} ({type(c).__name__}) cannot carry custom fields")
        custom = dict(c.custom or {})
        for name, table in lookup.items():
            if c.id in table:
                custom[name], crc = table[c.id]
                if crc is not None:
                    custom[checksum_key(name)] = crc
                counts[name] += 1
        out.append(fastcopy(c, custom=custom or None))
    total = len(out)
    for name in sources:
        unused = len(lookup[name]) - counts[name]
        logging.info(
            "field %s attached to %d/%d cuts (%d source cuts not in the target set)", name, counts[name], total, unused
        )
    return CutSet.from_cuts(out)


def attach_teachers(
    cuts: CutSet, out_dir: Pathlike, teachers: Sequence[str], allow_incomplete: bool = False
) -> CutSet:
    """Attach the dumped fields of several teachers (e.g. whisper, beats, ecapa) to the same cuts by id."""
    sources: Dict[str, CutSet] = {}
    for t in teachers:
        cfg = load_dump_config(out_dir, t)
        sources[cfg["field"]] = combine_shards(out_dir, t, allow_incomplete=allow_incomplete)
    return attach_fields_by_id(cuts, sources)
