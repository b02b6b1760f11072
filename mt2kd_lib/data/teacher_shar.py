"""Teacher outputs as lhotse Shar fields next to the KD pool's Shar shards: the format, and reading it lazily.

The KD pool is exported once (:func:`mt2kd_lib.data.shar.export_pool_shar`) as ``<pool>/cuts.NNNNNN.jsonl.gz``.
Each teacher's dump (written by :mod:`mt2kd_lib.teachers.dump`) adds, per pool shard, under ``<out>/<teacher>/``::

    dump_config.json                  teacher spec, field name, array format, tick power, the pool it is aligned with
    <field>.NNNNNN.tar                one Shar array tar: an entry per pool cut, in the pool shard's order;
                                      lilcom (float outputs) or .npy (integer outputs, e.g. codebook indexes);
                                      a cut the teacher does not cover has lhotse's ``.nodata`` marker
    <field>_crc32.NNNNNN.jsonl.gz     a Shar JSONL field: the crc32 of each decoded array (placeholder where no data)
    shard-NNNNNN.done                 JSON marker written last, after the shard verified: sizes, counts, stats
    summary.json

``CutSet.from_shar(fields={"cuts": pool shards, field: tars, field_crc32: jsonls, ...})`` then streams the pool with
every teacher's output attached as an in-memory custom field and its crc32 as ``custom[field + "_crc32"]``;
:func:`load_checked` decodes a field and compares the crc32, so a corrupt tar entry is named, not trained on. Nothing
is joined by id: the tars are aligned with the pool shards entry by entry (lhotse checks the ids as it reads).

This module is the format's one definition: teachers/ writes it, data/ and the training scripts read it.
"""

import hashlib
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from lhotse import CutSet
from lhotse.array import TemporalArray

Pathlike = Union[str, Path]

CONFIG_NAME = "dump_config.json"
SUMMARY_NAME = "summary.json"
POOL_INFO = "pool.json"
LAYOUT = "shar-v1"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# ---- names -----------------------------------------------------------------------------------------------------


def check_name(name: str, what: str = "teacher name") -> str:
    """Names become folder names, Shar field names and ``cut.load_<field>()`` attributes: letters, digits, ``_``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits and underscores, starting with a letter")
    return name


def field_name(teacher: str, output_kind: str) -> str:
    """Custom field holding a teacher's output on a cut, e.g. ``whisper_embedding`` / ``beats_probabilities``."""
    return check_name(f"{teacher}_{output_kind}", "field name")


def checksum_key(field: str) -> str:
    """The Shar field (and cut custom key) that carries the crc32 of ``field``'s decoded array."""
    return f"{field}_crc32"


def teacher_dir(out_dir: Pathlike, teacher: str) -> Path:
    return Path(out_dir) / check_name(teacher)


def shard_suffix(index: int) -> str:
    return f"{index:06d}"


def pool_shard_path(pool_dir: Pathlike, index: int) -> Path:
    return Path(pool_dir) / f"cuts.{shard_suffix(index)}.jsonl.gz"


def shard_paths(tdir: Pathlike, field: str, index: int) -> Dict[str, Path]:
    """Every file of shard ``index`` of a teacher dump (final names and the temporary ones written first)."""
    tdir = Path(tdir)
    s = shard_suffix(index)
    return {
        "tar": tdir / f"{field}.{s}.tar",
        "crc": tdir / f"{checksum_key(field)}.{s}.jsonl.gz",
        "done": tdir / f"shard-{s}.done",
        "tmp_tar": tdir / f".{field}.{s}.partial.tar",
        "tmp_crc": tdir / f".{checksum_key(field)}.{s}.partial.jsonl.gz",
        "tmp_blobs": tdir / f".shard-{s}.blobs",
    }


# ---- arrays ----------------------------------------------------------------------------------------------------


def array_format(arr: np.ndarray) -> str:
    """Storage by dtype: ``lilcom`` for floating point (teacher embeddings, probabilities), ``numpy`` (lossless)
    for integers (e.g. MVQ codebook indexes, which lilcom cannot hold)."""
    if np.issubdtype(arr.dtype, np.floating):
        return "lilcom"
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return "numpy"
    raise TypeError(f"teacher output of dtype {arr.dtype} cannot be stored (float or integer arrays only)")


def array_checksum(arr: np.ndarray) -> int:
    """crc32 of the decoded array (float arrays as float32 bytes, integer arrays as stored)."""
    a = np.ascontiguousarray(arr, dtype=np.float32) if np.issubdtype(arr.dtype, np.floating) else np.ascontiguousarray(arr)
    return zlib.crc32(a.tobytes())


def ids_fingerprint(ids: Iterable[str]) -> str:
    """sha1 over cut ids in order: identifies which cuts a shard covers."""
    h = hashlib.sha1()
    for cid in ids:
        h.update(cid.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


class ShardedIdsFingerprint:
    """The fingerprints a Shar export records (``pool.json``), fed one cut id at a time: ``shard_sha`` (one per
    shard of ``shard_size`` cuts) and ``ids_sha1`` (over those). Holds one shard's ids."""

    def __init__(self, shard_size: int) -> None:
        self.shard_size, self.shard_sha, self._ids = shard_size, [], []

    def add(self, cid: str) -> None:
        self._ids.append(cid)
        if len(self._ids) == self.shard_size:
            self.shard_sha.append(ids_fingerprint(self._ids))
            self._ids = []

    def finish(self) -> str:
        """Closes the last (partial) shard; returns ``ids_sha1``."""
        if self._ids:
            self.shard_sha.append(ids_fingerprint(self._ids))
            self._ids = []
        return ids_fingerprint(self.shard_sha)


def load_checked(cut: Any, field: str) -> np.ndarray:
    """All stored frames of ``cut``'s array ``field``, checked against the crc32 recorded when it was dumped.

    Lilcom has no checksum of its own: a flipped byte decodes to wrong but finite numbers, or fails with a bare
    decoder error. This names the cut and the Shar shard instead. Fields without a recorded crc are only decoded.
    """
    custom = cut.custom or {}
    manifest = custom[field]
    where = custom.get("shard_origin") or (
        manifest.array.storage_path if isinstance(manifest, TemporalArray) else manifest.storage_path)
    hint = ("the teacher dump is corrupt: delete that shard's shard-NNNNNN.done marker in the teacher's folder and "
            "re-run the dump stage (run.sh --stage 5 --force true) to redo it")
    try:
        arr = manifest.load()
    except Exception as e:
        raise RuntimeError(f"teacher field {field!r}: cannot decode cut {cut.id} (shard {where}) "
                           f"({type(e).__name__}: {e}); {hint}") from e
    want = custom.get(checksum_key(field))
    if want is not None and array_checksum(arr) != want:
        raise RuntimeError(f"teacher field {field!r}: cut {cut.id} (shard {where}) does not match its recorded "
                           f"crc32; {hint}")
    return arr


# ---- json helpers ----------------------------------------------------------------------------------------------


def fsync_file(path: Pathlike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: Pathlike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file + fsync + os.replace (a kill leaves old or new, never half)."""
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


# ---- the pool --------------------------------------------------------------------------------------------------


def read_pool_info(pool_dir: Pathlike) -> Dict[str, Any]:
    """``pool.json`` of a pool Shar export: shard count and size, per-shard id fingerprints."""
    path = Path(pool_dir) / POOL_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {pool_dir} is not a KD pool Shar export "
                                "(local/export_pool_shar.py, run.sh stage 5)")
    info = read_json(path)
    for i in range(info["num_shards"]):
        if not pool_shard_path(pool_dir, i).is_file():
            raise FileNotFoundError(f"{pool_shard_path(pool_dir, i)} is missing (the pool export is incomplete)")
    return info


def pool_shards(pool_dir: Pathlike, pool: Optional[Dict[str, Any]] = None) -> List[str]:
    """The pool's cut shard paths (``pool``: its already-read ``pool.json``)."""
    pool = pool if pool is not None else read_pool_info(pool_dir)
    return [str(pool_shard_path(pool_dir, i)) for i in range(pool["num_shards"])]


# ---- teacher dumps ---------------------------------------------------------------------------------------------


def load_dump_config(out_dir: Pathlike, teacher: str) -> Dict[str, Any]:
    path = teacher_dir(out_dir, teacher) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no dump of teacher {teacher!r} under {out_dir}: {path} is missing")
    cfg = read_json(path)
    if cfg.get("layout") != LAYOUT:
        raise ValueError(f"{path}: a dump in the old lilcom-shard layout (no 'layout: {LAYOUT}'); convert it with "
                         "tools/convert_teacher_dump.py (no re-dump needed)")
    return cfg


def pool_record(pool_dir: Pathlike, out_dir: Pathlike) -> Dict[str, Any]:
    """What a dump_config.json records about the pool it is aligned with; the path relative to the dump's
    ``out_dir``, so an experiment folder can be moved as a whole."""
    info = read_pool_info(pool_dir)
    return dict(dir=os.path.relpath(Path(pool_dir).resolve(), Path(out_dir).resolve()), ids_sha1=info["ids_sha1"],
                num_shards=info["num_shards"])


def dump_pool_dir(out_dir: Pathlike, teacher: str) -> Path:
    """The KD pool Shar export that ``teacher``'s dump under ``out_dir`` is aligned with."""
    return Path(out_dir) / load_dump_config(out_dir, teacher)["pool"]["dir"]


def read_done(tdir: Pathlike, field: str, index: int) -> Optional[Dict[str, Any]]:
    """The shard's ``.done`` record, or None when it is missing or unreadable (then the shard is not finished)."""
    p = shard_paths(tdir, field, index)["done"]
    if not p.is_file():
        return None
    try:
        return read_json(p)
    except (OSError, ValueError) as e:
        logging.warning("unreadable done marker %s (%s): shard will be redone", p, e)
        return None


def shard_is_finished(tdir: Pathlike, field: str, index: int, ids_sha1: Optional[str] = None) -> Tuple[bool, str]:
    """Cheap check (no decoding) that shard ``index`` is complete; returns (ok, reason when not ok)."""
    ok, why, _ = _check_shard(tdir, field, index, ids_sha1)
    return ok, why


def _check_shard(tdir: Pathlike, field: str, index: int, ids_sha1: Optional[str]
                 ) -> Tuple[bool, str, Optional[Dict[str, Any]]]:
    """:func:`shard_is_finished`, also returning the done record it read."""
    paths = shard_paths(tdir, field, index)
    done = read_done(tdir, field, index)
    if done is None:
        return False, "no done marker", None
    for key in ("tar", "crc"):
        p = paths[key]
        if not p.is_file():
            return False, f"{p} is missing", done
        if p.stat().st_size != done[f"{key}_bytes"]:
            return False, f"{p} has {p.stat().st_size} bytes, the done marker recorded {done[f'{key}_bytes']}", done
    if ids_sha1 is not None and done.get("ids_sha1") != ids_sha1:
        return False, "the pool shard's cut ids changed since it was dumped", done
    return True, "", done


def teacher_shar_fields(out_dir: Pathlike, teacher: str, pool_dir: Pathlike,
                        pool: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, List[str]], int]:
    """``({field: [tar per pool shard], field_crc32: [jsonl per pool shard]}, cuts covered)`` of a finished dump
    aligned with the pool at ``pool_dir`` (``pool``: its already-read ``pool.json``). One pass over the shards' done
    markers. Raises naming the teacher when the dump is of another pool or a shard is unfinished."""
    cfg = load_dump_config(out_dir, teacher)
    pool = pool if pool is not None else read_pool_info(pool_dir)
    if cfg["pool"]["ids_sha1"] != pool["ids_sha1"]:
        raise ValueError(f"teacher {teacher!r} under {out_dir} was dumped over another KD pool than {pool_dir} "
                         "(cut ids differ): re-run the dump stage")
    tdir, field = teacher_dir(out_dir, teacher), cfg["field"]
    missing, covered = [], 0
    for i, sha in enumerate(pool["shard_ids_sha1"]):
        ok, why, done = _check_shard(tdir, field, i, sha)
        if not ok:
            missing.append(f"shard {i} ({why})")
        else:
            covered += int(done["num_written"])
    if missing:
        raise RuntimeError(f"teacher {teacher}: {len(missing)} of {pool['num_shards']} shards are not finished: "
                           f"{', '.join(missing[:10])}; re-run the dump stage (it resumes)")
    n = pool["num_shards"]
    return ({field: [str(shard_paths(tdir, field, i)["tar"]) for i in range(n)],
             checksum_key(field): [str(shard_paths(tdir, field, i)["crc"]) for i in range(n)]}, covered)


class HasAnyField:
    """Picklable cut predicate: the cut carries at least one of ``fields`` (a KD cut some teacher covers)."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = list(fields)

    def __call__(self, cut: Any) -> bool:
        custom = cut.custom or {}
        return any(custom.get(f) is not None for f in self.fields)


def read_kd_cuts(
    pool_dir: Pathlike,
    out_dir: Pathlike,
    teachers: Sequence[str],
    shuffle_shards: bool = True,
    seed: int = 42,
    split_for_dataloading: bool = True,
) -> Tuple[CutSet, List[str]]:
    """The KD pool as a lazy CutSet with every teacher's output attached, keeping only cuts that some teacher
    covers; returns it and the field names. ``split_for_dataloading``: each DDP rank and dataloader worker reads
    its own shards (use the sampler with world_size=1 inside an ``IterableDatasetWrapper``, see datamodule).
    Reads ``pool.json`` once and each teacher's done markers once (a paper-size pool has thousands of shards)."""
    pool = read_pool_info(pool_dir)
    fields: Dict[str, List[str]] = {"cuts": pool_shards(pool_dir, pool)}
    names = []
    for t in teachers:
        tf, covered = teacher_shar_fields(out_dir, t, pool_dir, pool)
        names.append(next(iter(tf)))
        fields.update(tf)
        logging.info(f"KD pool {pool_dir}: teacher {t} covers {covered} of {pool['num_cuts']} cuts")
    cuts = CutSet.from_shar(fields=fields, shuffle_shards=shuffle_shards, seed=seed,
                            split_for_dataloading=split_for_dataloading)
    return cuts.filter(HasAnyField(names)), names


def pool_duration_bins(pool_dir: Pathlike, num_buckets: int) -> Optional[List[float]]:
    """Bucket boundaries for ``DynamicBucketingSampler`` from the duration sample in ``pool.json`` (lhotse's
    estimate over the sample), or None for a pool exported without one. Given these, the sampler does not read
    10,000 cuts -- with every teacher's output attached -- to estimate them before the first batch."""
    from types import SimpleNamespace

    from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets

    sample = read_json(Path(pool_dir) / POOL_INFO).get("duration_sample")
    if not sample or num_buckets < 2 or len(sample) < num_buckets:
        return None
    return [float(b) for b in estimate_duration_buckets([SimpleNamespace(duration=d) for d in sample], num_buckets)]


def read_teacher_cuts(out_dir: Pathlike, teacher: str, pool_dir: Pathlike) -> CutSet:
    """One teacher's outputs over the pool, lazily, in pool order (cuts it does not cover have no field)."""
    fields: Dict[str, List[str]] = {"cuts": pool_shards(pool_dir)}
    fields.update(teacher_shar_fields(out_dir, teacher, pool_dir)[0])
    return CutSet.from_shar(fields=fields)
