#!/usr/bin/env python3
"""Memory and start-up time of the KD data path at paper scale, on synthetic pools of 10 k .. 1 M cuts.

  python tools/bench_data_scale.py --sizes 10000,100000,1000000 --work /tmp/bench_scale

Each pool is a real KD pool Shar export with the teachers' outputs as Shar fields (data/teacher_shar.py), of the
paper's shapes: a Whisper-like frame-level teacher (1280-d at 50 Hz) on the ASR cuts, a BEATs-like one (527
probabilities) on the AT cuts and an ECAPA-like one (192-d) on the SV cuts, with 80-d fbank features. To stay cheap,
a few real shards (written with the dump's own writer) are repeated: shard ``i`` of the pool is a symbolic link to
real shard ``i % real_shards``, for the cuts, every teacher tar and crc32 field and their done markers. The reading
path is the one local/train_kd.py uses: ``read_kd_cuts`` (``CutSet.from_shar``, lazy filter) ->
``DynamicBucketingSampler`` inside lhotse's ``IterableDatasetWrapper`` -> ``MultiTaskDataset`` collation (which
decodes and crc-checks every teacher array). For each size a fresh process reads until the first batch is collated
and reports its peak RSS and the time that took.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

SHAPES = {  # teacher -> (task, kind, dim, frame_shift)
    "whisper": ("asr", "embedding", 1280, 0.02),
    "beats": ("at", "probabilities", 527, None),
    "ecapa": ("sv", "embedding", 192, None),
}
DURATIONS = (0.8, 1.0, 1.2, 1.6)


def _real_shards(work: Path, shard_size: int, real_shards: int) -> Dict:
    """``real_shards`` genuine pool shards + teacher fields under ``work/real`` (made once, reused)."""
    from lhotse import CutSet, LilcomChunkyWriter, MonoCut
    from lhotse.features.base import Features

    from mt2kd_lib.data.shar import export_pool_shar
    from mt2kd_lib.data.teacher_shar import CONFIG_NAME, LAYOUT, field_name, pool_record, write_json
    from mt2kd_lib.teachers.shar_writer import TeacherShardWriter

    real = work / "real"
    marker = real / "done.json"
    if marker.is_file() and json.loads(marker.read_text()) == dict(shard_size=shard_size, real_shards=real_shards):
        return json.loads((real / "pool" / "pool.json").read_text())
    real.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    feats = {}
    with LilcomChunkyWriter(str(real / "feats")) as w:
        for d in DURATIONS:
            n = int(round(d * 100))
            key = w.write(f"f{d}", rng.standard_normal((n, 80)).astype(np.float32))
            feats[d] = Features(type="fbank", num_frames=n, num_features=80, frame_shift=0.01, sampling_rate=16000,
                                start=0.0, duration=d, storage_type="lilcom_chunky", storage_path=str(w.storage_path),
                                storage_key=key)
    cuts = []
    for i in range(shard_size * real_shards):
        d = DURATIONS[i % len(DURATIONS)]
        origin = ("asr", "at", "sv")[i % 3]
        cuts.append(MonoCut(id=f"c{i:07d}", start=0.0, duration=d, channel=0, features=feats[d],
                            custom={"origin": origin}))
    info = export_pool_shar(CutSet.from_cuts(cuts), real / "pool", shard_size)
    for teacher, (task, kind, dim, fs) in SHAPES.items():
        field = field_name(teacher, kind)
        tdir = real / "out" / teacher
        tdir.mkdir(parents=True, exist_ok=True)
        spec = dict(name=teacher, task=task, level="frame" if fs else "utterance", output_kind=kind, dim=dim,
                    frame_shift=fs, sampling_rate=16000, min_duration=0.1)
        write_json(tdir / CONFIG_NAME, dict(layout=LAYOUT, teacher=teacher, field=field, spec=spec, origin=task,
                                            tick_power=-8, pool=pool_record(real / "pool", real / "out")))
        for s in range(real_shards):
            shard = cuts[s * shard_size:(s + 1) * shard_size]
            writer = TeacherShardWriter(tdir, field, s, -8, fs)
            for c in shard:
                if c.custom["origin"] == task:
                    shape = (int(round(c.duration / fs)), dim) if fs else (dim,)
                    writer.add(c, rng.random(shape, dtype=np.float32))
            writer.finish([c.id for c in shard], dict(ids_sha1=info["shard_ids_sha1"][s], num_cuts=len(shard)))
    marker.write_text(json.dumps(dict(shard_size=shard_size, real_shards=real_shards)))
    return info


def make_pool(work: Path, num_cuts: int, shard_size: int, real_shards: int) -> Path:
    """``work/pool_<num_cuts>``: a pool of ``num_cuts`` cuts whose shards link to the real ones; returns its root."""
    from mt2kd_lib.data.teacher_shar import ids_fingerprint, pool_shard_path, shard_paths, write_json

    info = _real_shards(work, shard_size, real_shards)
    if num_cuts % shard_size:
        raise ValueError(f"--sizes must be multiples of --shard-size {shard_size}, got {num_cuts}")
    n = num_cuts // shard_size
    root = work / f"pool_{num_cuts}"
    if (root / "ready").is_file():
        return root
    real = work.resolve() / "real"  # absolute link targets
    (root / "pool").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        dst = pool_shard_path(root / "pool", i)
        dst.unlink(missing_ok=True)
        dst.symlink_to(pool_shard_path(real / "pool", i % real_shards))
    shas = [info["shard_ids_sha1"][i % real_shards] for i in range(n)]
    write_json(root / "pool" / "pool.json", dict(num_shards=n, shard_size=shard_size, num_cuts=num_cuts,
                                                 shard_ids_sha1=shas, ids_sha1=ids_fingerprint(shas), source=None,
                                                 duration_sample=info.get("duration_sample")))
    for teacher in SHAPES:
        src, tdir = real / "out" / teacher, root / "out" / teacher
        tdir.mkdir(parents=True, exist_ok=True)
        cfg = json.loads((src / "dump_config.json").read_text())
        cfg["pool"] = dict(dir="../pool", ids_sha1=ids_fingerprint(shas), num_shards=n)
        write_json(tdir / "dump_config.json", cfg)
        for i in range(n):
            have, want = shard_paths(src, cfg["field"], i % real_shards), shard_paths(tdir, cfg["field"], i)
            for key in ("tar", "crc", "done"):
                want[key].unlink(missing_ok=True)
                want[key].symlink_to(have[key])
    (root / "ready").write_text("ok\n")
    return root


class _Counter:
    """Counts the cuts the data path reads (the sampler's buffer, and any pass to estimate its buckets)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, cut):
        self.n += 1
        return cut


def measure(root: Path, max_duration: float, buffer_size: int) -> Dict:
    """In this process: read the pool as train_kd does until the first batch is collated."""
    import torch

    from mt2kd_lib.data.datamodule import NUM_BUCKETS, make_train_dl
    from mt2kd_lib.data.dataset import MultiTaskDataset
    from mt2kd_lib.data.teacher_shar import pool_duration_bins, read_kd_cuts

    torch.set_num_threads(1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.time(), time.process_time()
    cuts, fields = read_kd_cuts(root / "pool", root / "out", list(SHAPES), shuffle_shards=True, seed=42)
    read = _Counter()
    cuts = cuts.map(read)
    dl = make_train_dl({"kd": cuts}, None, max_duration, MultiTaskDataset(teacher_fields=fields),
                       buffer_size=buffer_size, iterable=True,
                       duration_bins=pool_duration_bins(root / "pool", NUM_BUCKETS))
    batch = next(iter(dl))
    t, cpu = time.time() - t0, time.process_time() - c0
    shapes = {f: list(batch[f].shape) for f in fields if f in batch}
    return dict(first_batch_s=t, first_batch_cpu_s=cpu, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                rss_before_mb=rss0, batch_cuts=len(batch["cut_ids"]), cuts_read=read.n, shapes=shapes)


def run_sizes(sizes: List[int], work: Path, shard_size: int = 1000, real_shards: int = 4, max_duration: float = 200.0,
              buffer_size: int = 2000) -> List[Dict]:
    """Each size in a fresh process (peak RSS is per process); returns one row per size."""
    rows = []
    for n in sizes:
        t0 = time.time()
        root = make_pool(work, n, shard_size, real_shards)
        build_s = time.time() - t0
        out = subprocess.run([sys.executable, __file__, "--measure", str(root), "--max-duration", str(max_duration),
                              "--buffer-size", str(buffer_size)], capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            raise RuntimeError(f"measuring {root} failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(dict(cuts=n, build_s=build_s, **row))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000", help="pool sizes (cuts), comma-separated")
    p.add_argument("--work", type=Path, default=Path("exp/bench_data_scale"))
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--real-shards", type=int, default=4, help="genuine shards the pools' shards link to")
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch")
    p.add_argument("--buffer-size", type=int, default=2000,
                   help="cuts the bucketing sampler holds (with Shar input they carry their teacher outputs)")
    p.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.max_duration, args.buffer_size)))
        return
    rows = run_sizes([int(s) for s in args.sizes.split(",")], args.work, args.shard_size, args.real_shards,
                     args.max_duration, args.buffer_size)
    print("| pool cuts | peak RSS (MB) | RSS growth vs first (MB) | first batch: wall (s) | first batch: CPU (s) "
          "| first batch (cuts) | cuts read before it |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cuts']:,} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - rows[0]['peak_rss_mb']:+.0f} | "
              f"{r['first_batch_s']:.1f} | {r['first_batch_cpu_s']:.1f} | {r['batch_cuts']} | {r['cuts_read']:,} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
