"""Dump a teacher's outputs over the KD pool's Shar shards into verified, resumable Shar fields.

See :mod:`mt2kd_lib.data.teacher_shar` for the layout: per pool shard, one tar with the teacher's output for every
cut (lhotse's no-data marker for cuts it does not cover: other origins, or too short) and a JSONL field with their
crc32. Per shard: the cuts are sorted by duration and run in mini-batches; each output is compressed at once (lilcom
for float outputs, .npy for integer ones) and decoded back to measure the lilcom error against the float output and
to record a crc32 of the decoded values (:class:`mt2kd_lib.teachers.shar_writer.TeacherShardWriter`). The shard's
tar and crc file are moved into place, read back with lhotse's Shar reader and checked (ids in pool order, shape,
finiteness, crc32), the lilcom error must be within half a tick; only then the ``.done`` marker is written.
Re-running skips finished shards.

Parallelism: ``num_jobs`` worker processes (spawned, each builds its own teacher from the picklable factory; a
comma-separated ``device`` list is assigned round-robin to workers) and ``job_index``/``num_job_splits`` to split the
shards between independent invocations (shard ``i`` belongs to job ``i % num_job_splits``). Workers read their pool
shard themselves: no cut list is held or pickled beyond one shard.

lilcom tick power: ``tick_power=None`` calibrates it once per dump from the first few usable cuts:
``floor(log2(rms)) - rel_precision_bits``, so the max error is at most ``rms / 2**(rel_precision_bits+1)``
whatever the data scale (probabilities in [0, 1], L2-normalised embeddings, hidden states of any magnitude). The
chosen value is stored in ``dump_config.json`` and reused on resume and by the other jobs.

MVQ (``mvq=MvqConfig(...)``, frame-level teachers): a quantizer is trained once on a sample of the teacher's frames
and saved next to ``dump_config.json``; the field then holds uint8 codebook indexes (``.npy`` members, the writer's
exact integer path) and the config records the quantizer's reconstruction error (see :mod:`mt2kd_lib.teachers.mvq`).
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
from lhotse import CutSet
from tqdm import tqdm

from mt2kd_lib.data.teacher_shar import (
    CONFIG_NAME,
    LAYOUT,
    SUMMARY_NAME,
    Pathlike,
    check_name,
    field_name,
    pool_record,
    pool_shard_path,
    read_done,
    read_json,
    read_pool_info,
    shard_is_finished,
    teacher_dir,
    write_json,
)
from mt2kd_lib.teachers.base import Teacher, TeacherSpec
from mt2kd_lib.teachers.shar_writer import TeacherShardWriter, verify_teacher_shard

TeacherFactoryFn = Callable[[str], Teacher]
CALIBRATION_CUTS = 4
FALLBACK_TICK_POWER = -5  # lhotse's default, used when calibration sees no usable audio


@dataclass
class ShardTask:
    """Everything a worker needs to produce one shard (picklable)."""

    index: int
    pool_shard: str
    tdir: str
    field: str
    tick_power: int
    batch_size: int
    ids_sha1: str
    origin: Optional[str] = None
    quantizer: Optional[str] = None  # MVQ: path of quantizer.pt; the field stores uint8 indexes instead of frames
    quantizer_info: Optional[Dict[str, Any]] = None
    refine_iters: int = 2


def _covers(cut: Any, origin: Optional[str]) -> bool:
    """With task-ID masking a teacher's outputs are used only on cuts of its own origin: dump only those."""
    return origin is None or (cut.custom or {}).get("origin") == origin


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
    if np.issubdtype(out.dtype, np.integer):
        return np.ascontiguousarray(out)  # e.g. codebook indexes: stored losslessly as .npy
    if not np.isfinite(out).all():
        raise ValueError(f"teacher {spec.name}: non-finite values in the output for cut {cut_id}")
    return np.ascontiguousarray(out, dtype=np.float32)


def process_shard(teacher: Teacher, task: ShardTask) -> Dict[str, Any]:
    """Produce, verify and mark one shard; returns its ``.done`` record."""
    spec = teacher.spec
    cuts = list(CutSet.from_file(task.pool_shard))  # one pool shard
    frame_shift = spec.frame_shift if spec.level == "frame" else None
    writer = TeacherShardWriter(Path(task.tdir), task.field, task.index, task.tick_power, frame_shift)
    quantizer = None
    if task.quantizer is not None:
        from mt2kd_lib.teachers.mvq import encode_frames, load_quantizer

        quantizer = load_quantizer(task.quantizer, task.quantizer_info)
    skipped: List[Tuple[str, str]] = []
    audio_seconds = 0.0
    try:
        todo = sorted((c for c in cuts if _covers(c, task.origin)), key=lambda c: c.duration)  # less padding
        for b in range(0, len(todo), task.batch_size):
            cuts_ok, audios = [], []
            for cut in todo[b : b + task.batch_size]:
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
                    f"teacher {spec.name} failed on pool shard {task.index} batch with cuts "
                    f"{[c.id for c in cuts_ok]}: {e}"
                ) from e
            if len(outs) != len(audios):
                raise RuntimeError(f"teacher {spec.name} returned {len(outs)} outputs for {len(audios)} inputs")
            for cut, audio, out in zip(cuts_ok, audios, outs):
                out = _check_output(out, spec, cut.id)
                source_values = out.size
                if quantizer is not None:  # uint8 (frames, num_codebooks): stored exactly as .npy
                    out = encode_frames(quantizer, out, task.refine_iters)
                writer.add(cut, out, source_values=source_values)
                audio_seconds += audio.shape[0] / spec.sampling_rate
        if skipped:
            logging.warning("shard %d: skipped %d too-short cuts (listed in its done marker)", task.index,
                            len(skipped))
        return writer.finish([c.id for c in cuts], dict(
            ids_sha1=task.ids_sha1, num_cuts=len(cuts), num_covered=len(todo), num_skipped=len(skipped),
            skipped=[list(x) for x in skipped], audio_seconds=audio_seconds, device=str(teacher.device)))
    except BaseException:
        writer.abort()
        raise


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


def sample_frames(teacher: Teacher, cuts: Sequence[Any], cfg: Any) -> np.ndarray:
    """MVQ: the teacher's frames over a seeded sample of ``cfg.sample_cuts`` cuts, at most ``cfg.max_frames``."""
    from mt2kd_lib.teachers.mvq import sample_cuts, subsample_frames

    spec = teacher.spec
    chosen = [c for c in sample_cuts(cuts, cfg.sample_cuts, cfg.seed) if c.duration >= spec.min_duration]
    if not chosen:
        raise ValueError(f"teacher {spec.name}: no cut long enough to train the MVQ quantizer on")
    frames = []
    for b in range(0, len(chosen), 8):
        audios = [_load_mono(c, spec.sampling_rate) for c in chosen[b : b + 8]]
        frames += [_check_output(o, spec, c.id) for c, o in zip(chosen[b : b + 8], teacher.infer_batch(audios))]
    return subsample_frames(frames, cfg.max_frames, cfg.seed)


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


def _worker_sample_frames(cuts: List[Any], cfg: Any) -> np.ndarray:
    return sample_frames(_worker_teacher(), cuts, cfg)


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

    def sample_frames(self, cuts: List[Any], cfg: Any) -> np.ndarray:
        return sample_frames(self.teacher, cuts, cfg)

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

    def sample_frames(self, cuts: List[Any], cfg: Any) -> np.ndarray:
        return self.pool.apply(_worker_sample_frames, (cuts, cfg))

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
    if old.get("layout") != LAYOUT:
        raise ValueError(f"{path}: a dump in the old lilcom-shard layout; convert it (tools/convert_teacher_dump.py) "
                         "or use a fresh --out-dir")
    for key, a, b in (("field", old.get("field"), cfg["field"]), ("spec", old.get("spec"), cfg["spec"]),
                      ("origin", old.get("origin"), cfg["origin"]),
                      ("pool", old.get("pool", {}).get("ids_sha1"), cfg["pool"]["ids_sha1"])):
        if a != b:
            raise ValueError(f"{path}: existing dump has {key}={a!r} but this run has {b!r}; use a fresh --out-dir "
                             "(or the original settings and pool) to resume")
    if explicit_tick_power is not None and explicit_tick_power != old["tick_power"]:
        raise ValueError(f"{path}: existing dump used tick_power={old['tick_power']}, got {explicit_tick_power}")
    return old["tick_power"]  # None for MVQ dumps


def _prepare_mvq(runner: Any, tdir: Path, cfg: Dict[str, Any], mvq: Any, cuts: List[Any],
                 had_config: bool) -> Dict[str, Any]:
    """Train (new dump) or check (resume) the quantizer; returns the MVQ fields of the shard tasks."""
    from mt2kd_lib.teachers.mvq import (QUANTIZER_NAME, load_quantizer, quantizer_info, relative_error,
                                        save_quantizer, train_quantizer)

    qpath = tdir / QUANTIZER_NAME
    if had_config:
        old = read_json(tdir / CONFIG_NAME).get("mvq") or {}
        if old.get("num_codebooks") != mvq.num_codebooks:
            raise ValueError(f"{tdir / CONFIG_NAME}: existing dump has {old.get('num_codebooks')} MVQ codebooks, "
                             f"this run asks for {mvq.num_codebooks}; use a fresh --out-dir to change it")
        info = {k: old[k] for k in ("dim", "num_codebooks", "codebook_size", "quantizer_id")}
        load_quantizer(qpath, info)  # a missing or foreign quantizer is named before any shard is redone
    else:
        t0 = time.time()
        frames = runner.sample_frames(cuts, mvq)
        quantizer = train_quantizer(frames, mvq)
        rel = relative_error(quantizer, frames, mvq.refine_iters)
        save_quantizer(quantizer, qpath)
        info = quantizer_info(quantizer)
        logging.info("teacher %s: MVQ quantizer %s (%d codebooks) trained on %d frames in %.1f s; relative "
                     "reconstruction error on them %.3f", cfg["teacher"], info["quantizer_id"],
                     info["num_codebooks"], frames.shape[0], time.time() - t0, rel)
        write_json(tdir / CONFIG_NAME, dict(cfg, tick_power=None, target="mvq", mvq=dict(
            asdict(mvq), **info, quantizer=QUANTIZER_NAME, train_frames=int(frames.shape[0]),
            train_seconds=time.time() - t0, relative_error=rel)))
    return dict(quantizer=str(qpath), quantizer_info=info, refine_iters=mvq.refine_iters)


def summarize(tdir: Pathlike, field: str, num_shards: int) -> Dict[str, Any]:
    """Aggregate the ``.done`` records of all finished shards under ``tdir``."""
    keys_sum = ("num_cuts", "num_covered", "num_written", "num_skipped", "tar_bytes", "num_values", "source_values",
                "audio_seconds",
                "sum_abs_error", "sum_sq_error", "sum_abs_value", "sum_sq_value")
    tot: Dict[str, float] = {k: 0 for k in keys_sum}
    max_err = max_val = 0.0
    done = 0
    for i in range(num_shards):
        if not shard_is_finished(tdir, field, i)[0]:
            continue
        rec = read_done(tdir, field, i)
        done += 1
        for k in keys_sum:
            tot[k] += rec.get(k, 0)
        max_err = max(max_err, rec["max_abs_error"])
        max_val = max(max_val, rec["max_abs_value"])
    nv = max(tot["num_values"], 1)
    rms_val = math.sqrt(tot["sum_sq_value"] / nv)
    # what a float32 archive of the teacher's outputs would take (MVQ: of the frames its indexes encode; dumps
    # written before source_values was recorded: of the stored float values)
    float32_bytes = 4 * int(tot["source_values"] or tot["num_values"])
    return dict(
        num_shards=num_shards,
        num_shards_done=done,
        num_cuts=int(tot["num_cuts"]),
        num_covered=int(tot["num_covered"]),
        num_written=int(tot["num_written"]),
        num_skipped=int(tot["num_skipped"]),
        hours=tot["audio_seconds"] / 3600.0,
        tar_bytes=int(tot["tar_bytes"]),
        float32_bytes=float32_bytes,
        num_values=int(tot["num_values"]),
        # tar headers (1 KiB a cut) included: small outputs (a 527-d vector) are dominated by them
        bytes_per_value=tot["tar_bytes"] / max(float32_bytes // 4, 1),
        tar_to_float32_ratio=tot["tar_bytes"] / max(float32_bytes, 1),
        max_abs_error=max_err,
        mean_abs_error=tot["sum_abs_error"] / nv,
        # relative errors: mean |err| / mean |x|, rms(err) / rms(x), max |err| / rms(x)
        mean_rel_error=tot["sum_abs_error"] / max(tot["sum_abs_value"], 1e-30),
        rms_rel_error=math.sqrt(tot["sum_sq_error"] / max(tot["sum_sq_value"], 1e-30)),
        max_rel_error=max_err / max(rms_val, 1e-30),
        value_rms=rms_val,
        max_abs_value=max_val,
    )


def _calibration_cuts(pool_dir: Pathlike, num_shards: int, origin: Optional[str], n: Optional[int] = 64) -> List[Any]:
    """The first ``n`` cuts the teacher covers (all of them for None), read shard by shard."""
    out: List[Any] = []
    for i in range(num_shards):
        out.extend(c for c in CutSet.from_file(pool_shard_path(pool_dir, i)) if _covers(c, origin))
        if n is not None and len(out) >= n:
            break
    return out[:n]


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def dump_teacher(
    pool_dir: Pathlike,
    teacher_factory: TeacherFactoryFn,
    out_dir: Pathlike,
    teacher_name: Optional[str] = None,
    origin: Optional[str] = None,
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
    mvq: Optional[Any] = None,
) -> Dict[str, Any]:
    """Dump ``teacher_factory(device)``'s outputs over the KD pool Shar export ``pool_dir`` (see
    :func:`mt2kd_lib.data.shar.export_pool_shar`) into ``<out_dir>/<teacher_name>/``, one Shar field shard per pool
    shard.

    Args:
        pool_dir: the pool's Shar export; its shards are the dump's shards, so resume with the same export.
        teacher_factory: picklable callable, called as ``teacher_factory(device=...)`` -> Teacher (e.g.
            :class:`TeacherFactory`, or ``functools.partial(ResemblyzerTeacher, level="frame")``).
        teacher_name: folder / field prefix; defaults to the teacher's ``spec.name``.
        origin: only cuts whose ``custom["origin"]`` is this get an output (task-ID masking); the others get
            lhotse's no-data marker. None: every cut.
        num_jobs: worker processes in this invocation (1 = run in this process).
        job_index, num_job_splits: this invocation handles shards ``i`` with ``i % num_job_splits == job_index``.
        device: torch device, or a comma-separated list assigned round-robin to the workers.
        tick_power: lilcom tick power; None = calibrate from the data (see module docstring).
        rel_precision_bits: calibration target, max error <= rms / 2**(bits+1).
        verify_existing: fully re-decode already finished shards before skipping them (redo them on failure).
        num_threads: torch CPU threads per teacher (default: unchanged in-process, cpu_count // num_jobs in
            workers); 1 is much faster than the default on a busy machine.
        mvq: a :class:`mt2kd_lib.teachers.mvq.MvqConfig` to store a frame-level teacher's frames as uint8 codebook
            indexes (field ``<teacher>_codebook_indexes``; quantizer trained here on a sample of the covered cuts,
            saved as ``quantizer.pt``); ignored for utterance-level teachers, which are dumped as floats.

    Returns:
        The summary dict (also logged and written to ``<out_dir>/<teacher>/summary.json``), with ``this_run``
        holding the throughput of the shards processed by this call.
    """
    t_start = time.time()
    if num_jobs <= 0:
        raise ValueError(f"num_jobs must be positive, got {num_jobs}")
    if num_job_splits <= 0 or not 0 <= job_index < num_job_splits:
        raise ValueError(f"need 0 <= job_index < num_job_splits, got job_index={job_index}, "
                         f"num_job_splits={num_job_splits}")
    pool = read_pool_info(pool_dir)
    num_shards = pool["num_shards"]
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
        if mvq is not None and spec.level != "frame":
            logging.info("teacher %s is %s-level: MVQ applies to frame-level teachers; dumping floats", name,
                         spec.level)
            mvq = None
        fld = field_name(name, "codebook_indexes" if mvq is not None else spec.output_kind)
        tdir = teacher_dir(out_dir, name)
        tdir.mkdir(parents=True, exist_ok=True)
        cfg = dict(layout=LAYOUT, teacher=name, field=fld, spec=asdict(spec), origin=origin,
                   pool=pool_record(pool_dir, out_dir))
        had_config = (tdir / CONFIG_NAME).is_file()
        tp = _check_or_write_config(tdir, cfg, tick_power)
        mvq_task: Dict[str, Any] = {}
        if mvq is not None:
            covered = _calibration_cuts(pool_dir, num_shards, origin, n=None)  # the quantizer samples them
            if not covered:
                raise ValueError(f"{pool_dir}: no cuts of origin {origin!r} for teacher {name}")
            mvq_task = _prepare_mvq(runner, tdir, cfg, mvq, covered, had_config)
        elif not had_config:
            if tick_power is not None:
                tp = tick_power
            else:
                calib = _calibration_cuts(pool_dir, num_shards, origin)
                if not calib:
                    raise ValueError(f"{pool_dir}: no cuts of origin {origin!r} for teacher {name}")
                tp = runner.calibrate(calib, rel_precision_bits)
            write_json(tdir / CONFIG_NAME, dict(cfg, tick_power=tp, rel_precision_bits=rel_precision_bits))

        tasks = []
        for i in mine:
            sha = pool["shard_ids_sha1"][i]
            finished, why = shard_is_finished(tdir, fld, i, sha)
            if finished and verify_existing:
                try:
                    verify_teacher_shard(tdir, fld, i)
                except RuntimeError as e:
                    finished, why = False, str(e)
            if finished:
                continue
            if why != "no done marker":
                logging.warning("shard %d will be redone: %s", i, why)
            tasks.append(ShardTask(i, str(pool_shard_path(pool_dir, i)), str(tdir), fld, tp, batch_size, sha,
                                   origin, **mvq_task))
        logging.info("teacher %s: %d shards in total, %d for job %d/%d, %d to do", name, num_shards, len(mine),
                     job_index, num_job_splits, len(tasks))

        t_proc = time.time()
        run_sec = 0.0
        n_done = 0
        with tqdm(total=len(tasks), unit="shard", desc=f"dump {name}", disable=not progress) as bar:
            for rec in runner.run(tasks):
                run_sec += rec["audio_seconds"]
                n_done += 1
                bar.update(1)
                bar.set_postfix(hours=f"{run_sec / 3600:.3f}")
        proc_wall = time.time() - t_proc
        ok = True
    finally:
        runner.close(ok)

    summary = summarize(tdir, fld, num_shards)
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
        "teacher %s: %d/%d shards done, %d of %d cuts covered, %.3f h (this run %.3f h at %.1f audio-s/s), "
        "%.3f bytes per teacher value (%.4f of float32), max abs err %.3g, mean abs err %.3g, rms rel err %.3g, skipped %d",
        name, summary["num_shards_done"], num_shards, summary["num_written"], summary["num_cuts"], summary["hours"],
        run_sec / 3600.0, summary["this_run"]["audio_seconds_per_second"], summary["bytes_per_value"],
        summary["tar_to_float32_ratio"],
        summary["max_abs_error"], summary["mean_abs_error"], summary["rms_rel_error"], summary["num_skipped"],
    )
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Picklable factories


@dataclass
class TeacherFactory:
    """Picklable ``device -> Teacher`` built from a kind and keyword arguments (an entry of a teachers yaml, parsed
    by :func:`mt2kd_lib.teachers.registry.read_teachers_config`). ``expected_dim`` (the entry's ``dim:``) is checked.
    """

    kind: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    expected_dim: Optional[int] = None

    def __call__(self, device: str) -> Teacher:
        from mt2kd_lib.teachers.registry import build_teacher, check_dim

        teacher = build_teacher(self.kind, device=device, **self.kwargs)
        return check_dim(teacher, self.expected_dim, f"teacher {teacher.spec.name} ({self.kind}): its config")


def factory_from_config(name: str, teachers_config: Optional[Pathlike] = None) -> TeacherFactory:
    """Factory for teacher ``name``: its entry in the teachers yaml (same rules as stage 4), else a kind."""
    if teachers_config is not None:
        from mt2kd_lib.teachers.registry import read_teachers_config, teacher_entry

        entries = read_teachers_config(teachers_config)
        if name in entries:
            kind, kwargs, dim = teacher_entry(name, entries[name])
            return TeacherFactory(kind=kind, kwargs=kwargs, expected_dim=dim)
        logging.info("teacher %r not in %s; treating it as a kind", name, teachers_config)
    return TeacherFactory(kind=name)
