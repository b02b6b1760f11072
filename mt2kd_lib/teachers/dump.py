"""Dump a teacher's outputs over a lhotse CutSet into verified, resumable lilcom shards.

See :mod:`mt2kd_lib.teachers.shards` for the on-disk layout. Per shard: the cuts are sorted by duration and run in
mini-batches; each output is stored with ``LilcomChunkyWriter.store_array`` (frame-level -> ``TemporalArray`` with
the teacher's frame shift and ``temporal_dim=0``, utterance-level -> ``Array``), immediately decoded back from the
file to measure the lilcom error against the float output (max/mean/relative) and to record a crc32 of the decoded
values. After the archive and manifest are moved into place, the shard is re-opened with stock lhotse readers and
every array is decoded again: shape, finiteness and crc32 must match, and the write-time error must be within half a
lilcom tick (the quantisation bound). Only then the ``.done`` marker is written. Re-running skips finished shards.

Parallelism: ``num_jobs`` worker processes (spawned, each builds its own teacher from the picklable factory; a
comma-separated ``device`` list is assigned round-robin to workers) and ``job_index``/``num_job_splits`` to split the
shards between independent invocations (shard ``i`` belongs to job ``i % num_job_splits``).

lilcom tick power: ``tick_power=None`` calibrates it once per dump from the first few usable cuts:
``floor(log2(rms)) - rel_precision_bits``, so the max error is at most ``rms / 2**(rel_precision_bits+1)``
whatever the data scale (probabilities in [0, 1], L2-normalised embeddings, hidden states of any magnitude). The
chosen value is stored in ``dump_config.json`` and reused on resume and by the other jobs.
"""

import logging
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet, LilcomChunkyWriter
from lhotse.array import Array, TemporalArray
from lhotse.utils import fastcopy
from tqdm import tqdm

from mt2kd_lib.teachers.base import Teacher, TeacherSpec
from mt2kd_lib.teachers.shards import (
    CONFIG_NAME,
    SUMMARY_NAME,
    Pathlike,
    array_checksum,
    atomic_write_text,
    check_name,
    field_name,
    fsync_file,
    ids_fingerprint,
    read_done,
    read_json,
    shard_is_finished,
    shard_paths,
    shard_stem,
    teacher_dir,
    verify_shard,
    write_json,
)

TeacherFactoryFn = Callable[[str], Teacher]
CALIBRATION_CUTS = 4
FALLBACK_TICK_POWER = -5  # lhotse's default, used when calibration sees no usable audio


@dataclass
class ShardTask:
    """Everything a worker needs to produce one shard (picklable)."""

    index: int
    cuts: List[Any]
    tdir: str
    field: str
    tick_power: int
    batch_size: int
    ids_sha1: str


# ---------------------------------------------------------------------------------------------------------------
# Per-shard work (runs in the main process or in a worker)


def _load_mono(cut: Any, sampling_rate: int) -> np.ndarray:
    """Load a cut's audio as 1-D float32 at the teacher's rate (resampling and down-mixing when needed)."""
    try:
        if cut.sampling_rate != sampling_rate:
            cut = cut.resample(sampling_rate)
        audio = cut.load_audio()
    except Exception as e:
        raise RuntimeError(f"cannot load the audio of cut {cut.id}: {e!r}") from e
    if audio.ndim == 2:
        # Multi-channel cuts are averaged: teachers are mono models.
        audio = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _check_output(out: Any, spec: TeacherSpec, cut_id: str) -> np.ndarray:
    """Validate one teacher output against its spec, naming teacher and cut on failure."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"teacher {spec.name}: output for cut {cut_id} is {type(out).__name__}, not a numpy array")
    want_ndim = 2 if spec.level == "frame" else 1
    if out.ndim != want_ndim:
        raise ValueError(
            f"teacher {spec.name}: output for cut {cut_id} has shape {out.shape}, expected "
            f"{'(T, dim)' if want_ndim == 2 else '(dim,)'}"
        )
    if out.shape[-1] != spec.dim:
        raise ValueError(
            f"teacher {spec.name}: output dim {out.shape[-1]} != spec.dim {spec.dim} for cut {cut_id}"
        )
    if out.shape[0] == 0:
        raise ValueError(f"teacher {spec.name}: empty output (0 frames) for cut {cut_id}")
    if not np.isfinite(out).all():
        raise ValueError(f"teacher {spec.name}: non-finite values in the output for cut {cut_id}")
    return np.ascontiguousarray(out, dtype=np.float32)


def _with_storage_path(manifest: Any, path: str) -> Any:
    """The manifest was written under the temporary archive name; point it at the final one."""
    if isinstance(manifest, TemporalArray):
        return fastcopy(manifest, array=fastcopy(manifest.array, storage_path=path))
    return fastcopy(manifest, storage_path=path)


def lilcom_tolerance(tick_power: int, max_abs_value: float) -> float:
    """Largest error lilcom may introduce: half a tick, plus float32 rounding of the reconstructed value."""
    return 2.0 ** (tick_power - 1) + 4.0 * float(np.finfo(np.float32).eps) * max_abs_value


def process_shard(teacher: Teacher, task: ShardTask) -> Dict[str, Any]:
    """Produce, verify and mark one shard; returns its ``.done`` record."""
    spec = teacher.spec
    paths = shard_paths(task.tdir, task.index)
    # Remove the marker first: from here on the shard is "unfinished" until the new marker lands.
    for key in ("done", "tmp_archive", "tmp_manifest"):
        paths[key].unlink(missing_ok=True)
    t0 = time.time()
    final_archive = str(paths["archive"])
    manifests: Dict[str, Any] = {}
    checksums: Dict[str, int] = {}
    skipped: List[Tuple[str, str]] = []
    st = dict(num_values=0, audio_seconds=0.0, max_abs_error=0.0, sum_abs_error=0.0, sum_sq_error=0.0,
              sum_abs_value=0.0, sum_sq_value=0.0, max_abs_value=0.0)
    order = sorted(range(len(task.cuts)), key=lambda i: task.cuts[i].duration)  # less padding per batch
    writer = LilcomChunkyWriter(paths["tmp_archive_base"], tick_power=task.tick_power)
    try:
        for b in range(0, len(order), task.batch_size):
            batch = [task.cuts[i] for i in order[b : b + task.batch_size]]
            cuts_ok, audios = [], []
            for cut in batch:
                audio = _load_mono(cut, spec.sampling_rate)
                dur = audio.shape[0] / spec.sampling_rate
                if dur < spec.min_duration:
                    skipped.append((cut.id, f"duration {dur:.3f}s < min_duration {spec.min_duration:.3f}s"))
                    continue
                cuts_ok.append(cut)
                audios.append(audio)
            if not audios:
                continue
            try:
                outs = teacher.infer_batch(audios)
            except Exception as e:
                raise RuntimeError(
                    f"teacher {spec.name} failed on {shard_stem(task.index)} batch with cuts "
                    f"{[c.id for c in cuts_ok]}: {e}"
                ) from e
            if len(outs) != len(audios):
                raise RuntimeError(f"teacher {spec.name} returned {len(outs)} outputs for {len(audios)} inputs")
            for cut, audio, out in zip(cuts_ok, audios, outs):
                out = _check_output(out, spec, cut.id)
                # lilcom.compress overwrites its input, hence the copy.
                if spec.level == "frame":
                    m = writer.store_array(cut.id, out.copy(), frame_shift=spec.frame_shift, temporal_dim=0,
                                           start=cut.start)
                else:
                    m = writer.store_array(cut.id, out.copy())
                writer.file.flush()
                decoded = m.load() if isinstance(m, Array) else m.load(start=m.start)
                if decoded.shape != out.shape:
                    raise RuntimeError(f"{paths['tmp_archive']}: cut {cut.id} decoded to {decoded.shape}, "
                                       f"wrote {out.shape}")
                err = np.abs(decoded.astype(np.float64) - out)
                absval = np.abs(out.astype(np.float64))
                st["num_values"] += out.size
                st["audio_seconds"] += audio.shape[0] / spec.sampling_rate
                st["max_abs_error"] = max(st["max_abs_error"], float(err.max()))
                st["sum_abs_error"] += float(err.sum())
                st["sum_sq_error"] += float((err**2).sum())
                st["sum_abs_value"] += float(absval.sum())
                st["sum_sq_value"] += float((absval**2).sum())
                st["max_abs_value"] = max(st["max_abs_value"], float(absval.max()))
                checksums[cut.id] = array_checksum(decoded)
                manifests[cut.id] = _with_storage_path(m, final_archive)
    finally:
        writer.close()
    tol = lilcom_tolerance(task.tick_power, st["max_abs_value"])
    if st["max_abs_error"] > tol:
        raise RuntimeError(
            f"{final_archive}: lilcom error {st['max_abs_error']:.3g} exceeds tolerance {tol:.3g} "
            f"at tick_power {task.tick_power}"
        )
    fsync_file(paths["tmp_archive"])
    os.replace(paths["tmp_archive"], paths["archive"])

    out_cuts = []
    for cut in task.cuts:  # original order
        if cut.id in manifests:
            custom = dict(cut.custom or {})
            custom[task.field] = manifests[cut.id]
            out_cuts.append(fastcopy(cut, custom=custom))
    CutSet.from_cuts(out_cuts).to_file(paths["tmp_manifest"])
    fsync_file(paths["tmp_manifest"])
    os.replace(paths["tmp_manifest"], paths["manifest"])

    if skipped:
        atomic_write_text(paths["skipped"], "".join(f"{cid}\t{why}\n" for cid, why in skipped))
        logging.warning("%s: skipped %d too-short cuts (listed in %s)", shard_stem(task.index), len(skipped),
                        paths["skipped"])
    else:
        paths["skipped"].unlink(missing_ok=True)

    check = verify_shard(task.tdir, task.index, task.field, checksums=checksums)
    if check["num_arrays"] != len(manifests):
        raise RuntimeError(f"{final_archive}: read back {check['num_arrays']} arrays, wrote {len(manifests)}")

    record = dict(
        index=task.index,
        field=task.field,
        tick_power=task.tick_power,
        ids_sha1=task.ids_sha1,
        num_cuts=len(task.cuts),
        num_written=len(manifests),
        num_skipped=len(skipped),
        archive_bytes=paths["archive"].stat().st_size,
        manifest_bytes=paths["manifest"].stat().st_size,
        float32_bytes=4 * st["num_values"],
        compute_seconds=time.time() - t0,
        device=str(teacher.device),
        checksums=checksums,
        **st,
    )
    write_json(paths["done"], record)
    return record


def calibrate_tick_power(
    teacher: Teacher, cuts: Sequence[Any], rel_precision_bits: int, max_cuts: int = CALIBRATION_CUTS
) -> int:
    """``floor(log2(rms)) - rel_precision_bits`` over the outputs of the first usable cuts."""
    spec = teacher.spec
    audios = []
    for cut in cuts:
        if cut.duration < spec.min_duration:
            continue
        audio = _load_mono(cut, spec.sampling_rate)
        if audio.shape[0] / spec.sampling_rate >= spec.min_duration:
            audios.append(audio)
        if len(audios) >= max_cuts:
            break
    if not audios:
        logging.warning("tick power calibration found no usable cut; using %d", FALLBACK_TICK_POWER)
        return FALLBACK_TICK_POWER
    outs = teacher.infer_batch(audios)
    sq = sum(float((np.asarray(o, dtype=np.float64) ** 2).sum()) for o in outs)
    n = sum(int(np.asarray(o).size) for o in outs)
    rms = math.sqrt(sq / max(n, 1))
    if rms <= 0 or not math.isfinite(rms):
        logging.warning("tick power calibration: output rms is %s; using %d", rms, FALLBACK_TICK_POWER)
        return FALLBACK_TICK_POWER
    # the epsilon keeps exact powers of two (rms of a unit 256-d vector is 1/16) from flooring one down
    tp = int(math.floor(math.log2(rms) + 1e-6)) - rel_precision_bits
    logging.info("teacher %s: output rms %.4g -> lilcom tick_power %d (max error %.3g)", spec.name, rms, tp,
                 2.0 ** (tp - 1))
    return tp


# ---------------------------------------------------------------------------------------------------------------
# Running the teacher in-process or in a pool of spawned workers

_WORKER: Dict[str, Any] = {}


def _init_worker(factory: TeacherFactoryFn, devices: "mp.Queue", threads: int, log_level: int) -> None:
    from mt2kd_lib.utils.logging import setup_logger

    setup_logger(level=log_level)  # spawned children start with no logging handlers
    torch.set_num_threads(threads)
    device = devices.get()
    try:
        _WORKER["teacher"] = factory(device=device)
    except Exception as e:  # an initializer that raises makes Pool respawn workers forever; report it per task
        _WORKER["error"] = RuntimeError(f"building the teacher on {device} failed in worker {os.getpid()}: {e!r}")


def _worker_teacher() -> Teacher:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return _WORKER["teacher"]


def _worker_spec() -> TeacherSpec:
    return _worker_teacher().spec


def _worker_calibrate(cuts: List[Any], bits: int) -> int:
    return calibrate_tick_power(_worker_teacher(), cuts, bits)


def _worker_process(task: ShardTask) -> Dict[str, Any]:
    return process_shard(_worker_teacher(), task)


class _LocalRunner:
    """num_jobs == 1: one teacher in this process."""

    def __init__(self, factory: TeacherFactoryFn, device: str, threads: Optional[int]) -> None:
        self.old_threads = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            self.teacher = factory(device=device)
        except Exception:
            torch.set_num_threads(self.old_threads)
            raise

    def spec(self) -> TeacherSpec:
        return self.teacher.spec

    def calibrate(self, cuts: List[Any], bits: int) -> int:
        return calibrate_tick_power(self.teacher, cuts, bits)

    def run(self, tasks: List[ShardTask]) -> Iterator[Dict[str, Any]]:
        for t in tasks:
            yield process_shard(self.teacher, t)

    def close(self, ok: bool) -> None:
        torch.set_num_threads(self.old_threads)


class _PoolRunner:
    """num_jobs > 1: spawned workers, each with its own teacher on its own device."""

    def __init__(
        self, factory: TeacherFactoryFn, devices: List[str], num_jobs: int, threads: Optional[int]
    ) -> None:
        ctx = mp.get_context("spawn")  # fork after torch/threads were started can deadlock
        queue = ctx.Queue()
        for w in range(num_jobs):
            queue.put(devices[w % len(devices)])
        threads = threads or max(1, (os.cpu_count() or 1) // num_jobs)
        level = logging.getLogger().getEffectiveLevel()
        self.pool = ctx.Pool(num_jobs, initializer=_init_worker, initargs=(factory, queue, threads, level))

    def spec(self) -> TeacherSpec:
        return self.pool.apply(_worker_spec)

    def calibrate(self, cuts: List[Any], bits: int) -> int:
        return self.pool.apply(_worker_calibrate, (cuts, bits))

    def run(self, tasks: List[ShardTask]) -> Iterator[Dict[str, Any]]:
        return self.pool.imap_unordered(_worker_process, tasks)

    def close(self, ok: bool) -> None:
        if ok:
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()


# ---------------------------------------------------------------------------------------------------------------
# Config and summary


def _check_or_write_config(tdir: Path, cfg: Dict[str, Any], explicit_tick_power: Optional[int]) -> Optional[int]:
    """Compare with an existing dump_config.json; returns its tick power (None if there is no config yet)."""
    path = tdir / CONFIG_NAME
    if not path.is_file():
        return None
    old = read_json(path)
    for key in ("field", "shard_size", "num_cuts", "num_shards", "ids_sha1", "spec"):
        if old.get(key) != cfg[key]:
            raise ValueError(
                f"{path}: existing dump has {key}={old.get(key)!r} but this run has {cfg[key]!r}; "
                "use a fresh --out-dir (or the original settings) to resume"
            )
    if explicit_tick_power is not None and explicit_tick_power != old["tick_power"]:
        raise ValueError(f"{path}: existing dump used tick_power={old['tick_power']}, got {explicit_tick_power}")
    return int(old["tick_power"])


def summarize(tdir: Pathlike, num_shards: int) -> Dict[str, Any]:
    """Aggregate the ``.done`` records of all finished shards under ``tdir``."""
    keys_sum = ("num_cuts", "num_written", "num_skipped", "archive_bytes", "manifest_bytes", "float32_bytes",
                "num_values", "audio_seconds", "sum_abs_error", "sum_sq_error", "sum_abs_value", "sum_sq_value")
    tot: Dict[str, float] = {k: 0 for k in keys_sum}
    max_err = max_val = 0.0
    done = 0
    tick_powers = set()
    for i in range(num_shards):
        if not shard_is_finished(tdir, i)[0]:
            continue
        rec = read_done(tdir, i)
        done += 1
        for k in keys_sum:
            tot[k] += rec[k]
        max_err = max(max_err, rec["max_abs_error"])
        max_val = max(max_val, rec["max_abs_value"])
        tick_powers.add(rec["tick_power"])
    nv = max(tot["num_values"], 1)
    rms_val = math.sqrt(tot["sum_sq_value"] / nv)
    return dict(
        num_shards=num_shards,
        num_shards_done=done,
        num_cuts=int(tot["num_cuts"]),
        num_written=int(tot["num_written"]),
        num_skipped=int(tot["num_skipped"]),
        hours=tot["audio_seconds"] / 3600.0,
        archive_bytes=int(tot["archive_bytes"]),
        float32_bytes=int(tot["float32_bytes"]),
        num_values=int(tot["num_values"]),
        bytes_per_value=tot["archive_bytes"] / nv,
        archive_to_float32_ratio=tot["archive_bytes"] / max(tot["float32_bytes"], 1),
        max_abs_error=max_err,
        mean_abs_error=tot["sum_abs_error"] / nv,
        # relative errors: mean |err| / mean |x|, rms(err) / rms(x), max |err| / rms(x)
        mean_rel_error=tot["sum_abs_error"] / max(tot["sum_abs_value"], 1e-30),
        rms_rel_error=math.sqrt(tot["sum_sq_error"] / max(tot["sum_sq_value"], 1e-30)),
        max_rel_error=max_err / max(rms_val, 1e-30),
        value_rms=rms_val,
        max_abs_value=max_val,
        tick_powers=sorted(tick_powers),
    )


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def dump_teacher(
    cuts: CutSet,
    teacher_factory: TeacherFactoryFn,
    out_dir: Pathlike,
    teacher_name: Optional[str] = None,
    shard_size: int = 1000,
    num_jobs: int = 1,
    job_index: int = 0,
    num_job_splits: int = 1,
    device: str = "cpu",
    batch_size: int = 8,
    tick_power: Optional[int] = None,
    rel_precision_bits: int = 6,
    verify_existing: bool = False,
    num_threads: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Dump ``teacher_factory(device)``'s outputs for ``cuts`` into ``<out_dir>/<teacher_name>/shard-*.{lca,jsonl.gz}``.

    Args:
        cuts: the cuts (ids must be unique); their order defines the shards, so resume with the same CutSet.
        teacher_factory: picklable callable, called as ``teacher_factory(device=...)`` -> Teacher (e.g.
            :class:`TeacherFactory`, or ``functools.partial(ResemblyzerTeacher, level="frame")``).
        teacher_name: folder / field prefix; defaults to the teacher's ``spec.name``.
        shard_size: cuts per shard.
        num_jobs: worker processes in this invocation (1 = run in this process).
        job_index, num_job_splits: this invocation handles shards ``i`` with ``i % num_job_splits == job_index``.
        device: torch device, or a comma-separated list assigned round-robin to the workers.
        tick_power: lilcom tick power; None = calibrate from the data (see module docstring).
        rel_precision_bits: calibration target, max error <= rms / 2**(bits+1).
        verify_existing: fully re-decode already finished shards before skipping them (redo them on failure).
        num_threads: torch CPU threads per teacher (default: unchanged in-process, cpu_count // num_jobs in
            workers); 1 is much faster than the default on a busy machine.

    Returns:
        The summary dict (also logged and written to ``<out_dir>/<teacher>/summary.json``), with ``this_run``
        holding the throughput of the shards processed by this call.
    """
    t_start = time.time()
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if num_jobs <= 0:
        raise ValueError(f"num_jobs must be positive, got {num_jobs}")
    if num_job_splits <= 0 or not 0 <= job_index < num_job_splits:
        raise ValueError(f"need 0 <= job_index < num_job_splits, got job_index={job_index}, "
                         f"num_job_splits={num_job_splits}")
    cut_list = list(cuts)
    if not cut_list:
        raise ValueError("dump_teacher: the CutSet is empty")
    seen = set()
    for c in cut_list:
        if c.id in seen:
            raise ValueError(f"dump_teacher: duplicate cut id {c.id}")
        seen.add(c.id)
    num_shards = (len(cut_list) + shard_size - 1) // shard_size
    shard_cuts = [cut_list[i * shard_size : (i + 1) * shard_size] for i in range(num_shards)]
    mine = [i for i in range(num_shards) if i % num_job_splits == job_index]
    devices = [d.strip() for d in str(device).split(",") if d.strip()] or ["cpu"]

    if num_jobs == 1:
        runner: Any = _LocalRunner(teacher_factory, devices[0], num_threads)
    else:
        runner = _PoolRunner(teacher_factory, devices, num_jobs, num_threads)
    ok = False
    try:
        spec = runner.spec()
        name = check_name(teacher_name or spec.name)
        fld = field_name(name, spec.output_kind)
        tdir = teacher_dir(out_dir, name)
        tdir.mkdir(parents=True, exist_ok=True)
        cfg = dict(teacher=name, field=fld, spec=asdict(spec), shard_size=shard_size, num_cuts=len(cut_list),
                   num_shards=num_shards, ids_sha1=ids_fingerprint(c.id for c in cut_list))
        tp = _check_or_write_config(tdir, cfg, tick_power)
        if tp is None:
            tp = tick_power if tick_power is not None else runner.calibrate(cut_list[:64], rel_precision_bits)
            write_json(tdir / CONFIG_NAME, dict(cfg, tick_power=tp, rel_precision_bits=rel_precision_bits))

        tasks = []
        for i in mine:
            sha = ids_fingerprint(c.id for c in shard_cuts[i])
            finished, why = shard_is_finished(tdir, i, sha)
            if finished and verify_existing:
                try:
                    verify_shard(tdir, i, fld)
                except RuntimeError as e:
                    finished, why = False, str(e)
            if finished:
                continue
            if why != "no done marker":
                logging.warning("%s will be redone: %s", shard_stem(i), why)
            tasks.append(ShardTask(i, shard_cuts[i], str(tdir), fld, tp, batch_size, sha))
        logging.info("teacher %s: %d shards in total, %d for job %d/%d, %d to do", name, num_shards, len(mine),
                     job_index, num_job_splits, len(tasks))

        t_proc = time.time()
        run_sec = 0.0
        n_done = 0
        with tqdm(total=sum(len(t.cuts) for t in tasks), unit="cut", desc=f"dump {name}",
                  disable=not progress) as bar:
            for rec in runner.run(tasks):
                run_sec += rec["audio_seconds"]
                n_done += 1
                bar.update(rec["num_cuts"])
                bar.set_postfix(shards=f"{n_done}/{len(tasks)}", hours=f"{run_sec / 3600:.3f}")
        proc_wall = time.time() - t_proc
        ok = True
    finally:
        runner.close(ok)

    summary = summarize(tdir, num_shards)
    summary.update(
        teacher=name,
        field=fld,
        tick_power=tp,
        this_run=dict(
            job_index=job_index,
            num_job_splits=num_job_splits,
            shards_processed=n_done,
            hours_processed=run_sec / 3600.0,
            processing_seconds=proc_wall,
            wall_seconds=time.time() - t_start,
            audio_seconds_per_second=run_sec / proc_wall if proc_wall > 0 else 0.0,
        ),
    )
    write_json(tdir / SUMMARY_NAME, summary)
    logging.info(
        "teacher %s: %d/%d shards done, %.3f h (this run %.3f h at %.1f audio-s/s), %.3f bytes/value, "
        "archive/float32 %.3f, max abs err %.3g, mean abs err %.3g, rms rel err %.3g, skipped %d",
        name, summary["num_shards_done"], num_shards, summary["hours"], run_sec / 3600.0,
        summary["this_run"]["audio_seconds_per_second"], summary["bytes_per_value"],
        summary["archive_to_float32_ratio"], summary["max_abs_error"], summary["mean_abs_error"],
        summary["rms_rel_error"], summary["num_skipped"],
    )
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Picklable factories


@dataclass
class TeacherFactory:
    """Picklable ``device -> Teacher`` built from a kind and keyword arguments (as in a teachers yaml).

    ``kind == "resemblyzer"`` is built directly; every other kind goes through
    ``mt2kd_lib.teachers.registry.build_teacher``. ``expected_dim`` (the yaml's optional ``dim:``) is checked.
    """

    kind: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    expected_dim: Optional[int] = None

    def __call__(self, device: str) -> Teacher:
        if self.kind == "resemblyzer":
            from mt2kd_lib.teachers.resemblyzer_teacher import ResemblyzerTeacher

            teacher: Teacher = ResemblyzerTeacher(device=device, **self.kwargs)
        else:
            try:
                from mt2kd_lib.teachers.registry import build_teacher
            except ImportError as e:
                raise ImportError(f"teacher kind {self.kind!r} needs mt2kd_lib.teachers.registry: {e}") from e
            teacher = build_teacher(self.kind, device=device, **self.kwargs)
        if self.expected_dim is not None and teacher.spec.dim != self.expected_dim:
            raise ValueError(
                f"teacher {teacher.spec.name} ({self.kind}): config says dim {self.expected_dim}, "
                f"model gives {teacher.spec.dim}"
            )
        return teacher


def factory_from_config(name: str, teachers_config: Optional[Pathlike] = None) -> TeacherFactory:
    """Factory for teacher ``name``: an entry of ``teachers: {name: {kind: ..., ...}}`` in the yaml, else a kind."""
    if teachers_config is not None:
        import yaml

        with open(teachers_config, "r", encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        entries = doc.get("teachers", doc)
        if not isinstance(entries, dict):
            raise ValueError(f"{teachers_config}: expected a mapping 'teachers: {{name: {{kind: ...}}}}'")
        if name in entries:
            entry = dict(entries[name] or {})
            if "kind" not in entry:
                raise ValueError(f"{teachers_config}: teacher {name!r} has no 'kind'")
            kind = entry.pop("kind")
            dim = entry.pop("dim", None)
            return TeacherFactory(kind=kind, kwargs=entry, expected_dim=dim)
        logging.info("teacher %r not in %s; treating it as a kind", name, teachers_config)
    return TeacherFactory(kind=name)
