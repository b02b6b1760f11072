"""Write one shard of a teacher's outputs as Shar fields aligned with a KD pool shard (format: data/teacher_shar.py).

Outputs arrive in any order (the dump runs cuts sorted by duration to pad less); each is compressed at once and
appended to a temporary blob file, so a shard's outputs never sit in memory together (Whisper-size frame outputs
would not fit). :meth:`TeacherShardWriter.finish` then writes the tar in the pool shard's order, a ``.nodata``
marker for every cut without an output, and the crc32 JSONL field; both are moved into place atomically, read back
with lhotse's own Shar reader and checked (ids, shape, finiteness, crc32) before the ``.done`` marker is written.
"""

import codecs
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import lilcom
import numpy as np
from lhotse.array import Array, TemporalArray
from lhotse.lazy import LazyJsonlIterator
from lhotse.shar.readers.tar import TarIterator
from lhotse.shar.writers.cut import JsonlShardWriter
from lhotse.shar.writers.tar import TarWriter

from mt2kd_lib.data.teacher_shar import (
    array_checksum,
    array_format,
    checksum_key,
    fsync_file,
    shard_paths,
    write_json,
)


def lilcom_tolerance(tick_power: int, max_abs_value: float) -> float:
    """Largest error lilcom may introduce: half a tick, plus float32 rounding of the reconstructed value."""
    return 2.0 ** (tick_power - 1) + 4.0 * float(np.finfo(np.float32).eps) * max_abs_value


def _encode(arr: np.ndarray, tick_power: int, float_format: str = "lilcom") -> Tuple[bytes, str]:
    if array_format(arr) == "lilcom" and float_format == "lilcom":
        # lilcom.compress overwrites its input, hence the copy.
        return lilcom.compress(np.array(arr, dtype=np.float32), tick_power=tick_power), ".llc"
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue(), ".npy"


def _decode(data: bytes, ext: str) -> np.ndarray:
    if ext == ".llc":
        return lilcom.decompress(data)
    return np.load(io.BytesIO(data), allow_pickle=False)


def _placeholder(shape: Sequence[int], frame_shift: Optional[float], start: float) -> Any:
    arr = Array(storage_type="shar", storage_path="", storage_key="", shape=list(shape))
    if frame_shift is None:
        return arr
    # start = the cut's start, so cut.load_custom() selects the cut's frames as with any lhotse TemporalArray.
    return TemporalArray(array=arr, temporal_dim=0, frame_shift=frame_shift, start=start)


class TeacherShardWriter:
    """Collects a shard's outputs (``add``), then writes, verifies and marks it (``finish``)."""

    def __init__(self, tdir: Path, field: str, index: int, tick_power: int, frame_shift: Optional[float],
                 float_format: str = "lilcom") -> None:
        if float_format not in ("lilcom", "numpy"):
            raise ValueError(f"float_format must be lilcom or numpy, got {float_format!r}")
        self.float_format = float_format
        self.tdir, self.field, self.index = Path(tdir), field, index
        self.tick_power, self.frame_shift = tick_power, frame_shift
        self.paths = shard_paths(self.tdir, field, index)
        for key in ("done", "tmp_tar", "tmp_crc", "tmp_blobs"):  # unfinished from here until the new marker lands
            self.paths[key].unlink(missing_ok=True)
        self.blobs = open(self.paths["tmp_blobs"], "wb")
        self.entries: Dict[str, Tuple[int, int, str, Dict[str, Any], int]] = {}
        self.t0 = time.time()
        # source_values: the teacher's float values behind what was stored (= num_values, unless MVQ indexes
        # stand in for the frames): the size a float32 archive of the same outputs would have
        self.stats = dict(num_values=0, source_values=0, max_abs_error=0.0, sum_abs_error=0.0, sum_sq_error=0.0, sum_abs_value=0.0,
                          sum_sq_value=0.0, max_abs_value=0.0)

    def add(self, cut: Any, out: np.ndarray, start: Optional[float] = None,
            source_values: Optional[int] = None) -> np.ndarray:
        """Store ``out`` for ``cut``; returns the decoded array (what training will read). ``source_values``: the
        number of teacher values ``out`` encodes (MVQ indexes of (frames, dim) floats: frames * dim)."""
        if cut.id in self.entries:
            raise ValueError(f"shard {self.index}: two outputs for cut {cut.id}")
        self.stats["source_values"] += int(source_values if source_values is not None else out.size)
        data, ext = _encode(out, self.tick_power, self.float_format)
        decoded = _decode(data, ext)
        if decoded.shape != out.shape:
            raise RuntimeError(f"{self.paths['tar']}: cut {cut.id} decoded to {decoded.shape}, wrote {out.shape}")
        if ext == ".llc":
            err = np.abs(decoded.astype(np.float64) - out)
            absval = np.abs(out.astype(np.float64))
            st = self.stats
            st["num_values"] += out.size
            st["max_abs_error"] = max(st["max_abs_error"], float(err.max()) if err.size else 0.0)
            st["sum_abs_error"] += float(err.sum())
            st["sum_sq_error"] += float((err ** 2).sum())
            st["sum_abs_value"] += float(absval.sum())
            st["sum_sq_value"] += float((absval ** 2).sum())
            st["max_abs_value"] = max(st["max_abs_value"], float(absval.max()) if absval.size else 0.0)
        elif not np.array_equal(decoded, out):
            raise RuntimeError(f"{self.paths['tar']}: cut {cut.id} did not round-trip through .npy")
        offset = self.blobs.tell()
        self.blobs.write(data)
        manifest = _placeholder(out.shape, self.frame_shift, cut.start if start is None else start).to_dict()
        self.entries[cut.id] = (offset, len(data), ext, manifest, array_checksum(decoded))
        return decoded

    def abort(self) -> None:
        self.blobs.close()
        for key in ("tmp_tar", "tmp_crc", "tmp_blobs"):
            self.paths[key].unlink(missing_ok=True)

    def finish(self, pool_ids: Sequence[str], record: Dict[str, Any]) -> Dict[str, Any]:
        """Write the shard in ``pool_ids`` order, verify it and write the ``.done`` marker; returns the marker."""
        self.blobs.close()
        unknown = set(self.entries) - set(pool_ids)
        if unknown:
            raise ValueError(f"shard {self.index}: outputs for cuts not in the pool shard: {sorted(unknown)[:5]}")
        key = checksum_key(self.field)
        tar = TarWriter(str(self.paths["tmp_tar"]), shard_size=None)
        crc = JsonlShardWriter(str(self.paths["tmp_crc"]), shard_size=None)
        with open(self.paths["tmp_blobs"], "rb") as blobs, tar, crc:
            for cid in pool_ids:
                entry = self.entries.get(cid)
                if entry is None:
                    tar.write(f"{cid}.nodata", io.BytesIO())
                    tar.write(f"{cid}.nometa", io.BytesIO(), count=False)
                    crc.write_placeholder(cid)
                    continue
                offset, size, ext, manifest, checksum = entry
                blobs.seek(offset)
                tar.write(cid + ext, io.BytesIO(blobs.read(size)))
                meta = io.BytesIO()
                print(json.dumps(manifest), file=codecs.getwriter("utf-8")(meta))
                tar.write(f"{cid}.json", meta, count=False)
                crc.write({"cut_id": cid, key: checksum})
        for tmp, final in (("tmp_tar", "tar"), ("tmp_crc", "crc")):
            fsync_file(self.paths[tmp])
            os.replace(self.paths[tmp], self.paths[final])
        self.paths["tmp_blobs"].unlink()
        n = verify_teacher_shard(self.tdir, self.field, self.index, pool_ids)
        if n != len(self.entries):
            raise RuntimeError(f"{self.paths['tar']}: read back {n} arrays, wrote {len(self.entries)}")
        # only lilcom-coded values have an error to bound (integer arrays, e.g. MVQ indexes, are exact .npy)
        tol = lilcom_tolerance(self.tick_power, self.stats["max_abs_value"]) if self.stats["num_values"] else 0.0
        if self.stats["max_abs_error"] > tol:
            raise RuntimeError(f"{self.paths['tar']}: lilcom error {self.stats['max_abs_error']:.3g} exceeds "
                               f"tolerance {tol:.3g} at tick_power {self.tick_power}")
        done = dict(record, index=self.index, field=self.field, tick_power=self.tick_power,
                    num_written=len(self.entries), tar_bytes=self.paths["tar"].stat().st_size,
                    crc_bytes=self.paths["crc"].stat().st_size, compute_seconds=time.time() - self.t0,
                    **self.stats)
        write_json(self.paths["done"], done)
        return done


def verify_teacher_shard(tdir: Path, field: str, index: int, pool_ids: Optional[Sequence[str]] = None) -> int:
    """Read shard ``index`` back with lhotse's Shar tar reader and check every entry; returns the arrays read.

    Checks: the entries follow ``pool_ids`` (when given), each array decodes to its manifest's shape, floats are
    finite, and each crc32 equals the one in the crc field. Raises RuntimeError naming the shard and the cut.
    """
    paths = shard_paths(tdir, field, index)
    key = checksum_key(field)
    n = 0
    try:
        tar_entries = list(TarIterator(paths["tar"]))
        crcs = list(LazyJsonlIterator(paths["crc"]))
    except Exception as e:
        raise RuntimeError(f"teacher shard {paths['tar']} cannot be read: {e}") from e
    want = len(pool_ids) if pool_ids is not None else len(crcs)
    if len(tar_entries) != want or len(crcs) != want:
        raise RuntimeError(f"teacher shard {paths['tar']} has {len(tar_entries)} entries and {len(crcs)} crc32s, "
                           f"expected {want} (one per pool cut)")
    entries = list(zip(tar_entries, crcs))
    for i, ((manifest, data_path), crc) in enumerate(entries):
        cid = str(data_path.parent / data_path.stem)
        if crc.get("cut_id") != cid or (pool_ids is not None and pool_ids[i] != cid):
            raise RuntimeError(f"teacher shard {paths['tar']}: entry {i} is cut {cid}, expected "
                               f"{pool_ids[i] if pool_ids is not None else crc.get('cut_id')}")
        if manifest is None:
            if key in crc:
                raise RuntimeError(f"teacher shard {paths['crc']}: cut {cid} has a crc32 but no data")
            continue
        try:
            arr = manifest.load()
        except Exception as e:
            raise RuntimeError(f"teacher shard {paths['tar']} is corrupt: cannot decode cut {cid}: {e}") from e
        if list(arr.shape) != list(manifest.shape):
            raise RuntimeError(f"teacher shard {paths['tar']} is corrupt: cut {cid} decoded to shape "
                               f"{list(arr.shape)}, manifest says {list(manifest.shape)}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise RuntimeError(f"teacher shard {paths['tar']}: cut {cid} decoded to non-finite values")
        if crc.get(key) != array_checksum(arr):
            raise RuntimeError(f"teacher shard {paths['tar']} is corrupt: checksum mismatch for cut {cid}")
        n += 1
    return n
