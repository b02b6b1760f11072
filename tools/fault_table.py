#!/usr/bin/env python3
"""Fault injection on the tiny egs/mini pipeline (and the paper recipe's prepare); prints a markdown table.

    python tools/fault_table.py --work-dir /tmp/faults [--seed 0] [--out /tmp/faults/table.md]

Faults tried, each on a copy of a reference run's state:

* kill -9 (the whole process group) at a random point of each long stage (dump, KD, fine-tuning, baselines,
  evaluation), then ``run.sh`` again from that stage. Survived: the re-run finishes, the stage was not marked done
  by the killed run, and what the stage produced equals the uninterrupted run's. Items lost: teacher outputs (crc32
  per cut), checkpoints (every tensor) and results.json files (every number) that differ from the reference or are
  missing. By default the re-run stops after the killed stage and its products are compared bit for bit (they
  determine everything downstream); ``--rerun-through-evaluation`` re-runs through stage 9 and compares the final
  results as well (several times slower).
* one flipped byte inside a cut's data in a teacher archive, then the KD stage: survived when it stops with an
  error naming the shard and the cut (training on silently wrong targets would be the failure).
* NaN / inf in a teacher's output for one cut: survived when the dump refuses it naming the cut.
* data faults in a LibriSpeech tree (a truncated flac, an empty flac, a transcript without one known character, an
  8 kHz flac) through the paper recipe's stages 1-3: survived when each is dropped or resampled by name with a count
  and the features and BPE stages run on the rest; items lost = good utterances missing from the manifests.

The reference run is kept under --work-dir/reference and reused by later invocations (--fresh to redo it). Every
case runs in the same folder (--work-dir/run) as the reference did, since manifests hold absolute paths.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]


def _tests_module(name: str):
    """A helper module of tests/ (not a package), loaded from its file: the fault cases reuse the tests' layouts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STAGES = {5: "dump", 6: "kd", 7: "finetune", 8: "baselines", 9: "evaluate"}
LAST = 9


def pipeline(data: Path, exp: Path, first: int, last: int) -> List[str]:
    return ["bash", str(REPO / "run.sh"), "--recipe-config", str(REPO / "egs/mini/config_tiny.sh"), "--data-dir",
            str(data), "--exp-dir", str(exp), "--stage", str(first), "--stop-stage", str(last)]


def run(cmd: List[str], log: Path, env: Optional[dict] = None) -> Tuple[int, str]:
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env or os.environ)
    log.write_text(proc.stdout)
    return proc.returncode, proc.stdout


def copy_state(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)


def reference(work: Path, fresh: bool) -> Tuple[Dict[int, float], Dict[str, object]]:
    """Run stages 1..9 one at a time, keeping the state before each long stage; return each stage's seconds and
    the fingerprints of the finished run."""
    ref, state = work / "reference", work / "run"
    saved = ref / "reference.json"
    if saved.is_file() and not fresh:
        r = json.loads(saved.read_text())
        return {int(k): v for k, v in r["seconds"].items()}, r["fingerprints"]
    for d in (ref, state):
        if d.exists():
            shutil.rmtree(d)
    ref.mkdir(parents=True)
    seconds = {}
    t0 = time.time()
    rc, out = run(pipeline(state / "data", state / "exp", 1, 4), ref / "log-1-4.txt")
    assert rc == 0, out[-3000:]
    print(f"reference stages 1-4: {time.time() - t0:.0f} s", flush=True)
    for s in STAGES:
        copy_state(state, ref / f"before-{s}")
        t0 = time.time()
        rc, out = run(pipeline(state / "data", state / "exp", s, s), ref / f"log-{s}.txt")
        assert rc == 0, out[-3000:]
        seconds[s] = time.time() - t0
        print(f"reference stage {s} ({STAGES[s]}): {seconds[s]:.0f} s", flush=True)
    fp = fingerprints(state / "exp")
    saved.write_text(json.dumps({"seconds": seconds, "fingerprints": fp}))
    return seconds, fp


# ---- comparing a run's products with the reference's ---------------------------------------------------------

def dump_fingerprints(exp: Path) -> Dict[str, object]:
    """Per teacher: {cut id: crc32} from the shards' crc32 Shar fields (what the dump verified it wrote)."""
    from lhotse.lazy import LazyJsonlIterator

    out = {}
    for crcs in sorted(exp.glob("teacher_outputs*/*/*_crc32.*.jsonl.gz")):
        if not (crcs.parent / f"shard-{crcs.name.split('.')[1]}.done").is_file():
            continue
        for item in LazyJsonlIterator(crcs):
            for key, crc in item.items():
                if key != "cut_id":
                    out[f"{crcs.parent.parent.name}/{crcs.parent.name}/{item['cut_id']}"] = crc
    return out


def checkpoint_fingerprints(exp: Path) -> Dict[str, object]:
    """sha1 of every tensor of every epoch checkpoint (model weights only: optimiser states follow from them)."""
    import torch

    out = {}
    for ckpt in sorted(exp.rglob("epoch-*.pt")):
        rel = str(ckpt.relative_to(exp))
        if "teachers/" in rel:
            continue  # stage 4, not under test
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model = state.get("model", state)
        for k, v in model.items():
            if hasattr(v, "numpy"):
                out[f"{rel}:{k}"] = hashlib.sha1(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    return out


def results_fingerprints(exp: Path) -> Dict[str, object]:
    out = {}
    for path in sorted(exp.rglob("results.json")):
        out[str(path.relative_to(exp))] = json.loads(path.read_text())
    return out


def fingerprints(exp: Path) -> Dict[str, object]:
    return {**dump_fingerprints(exp), **checkpoint_fingerprints(exp), **results_fingerprints(exp)}


def lost(ref: Dict[str, object], got: Dict[str, object]) -> List[str]:
    return [k for k in ref if got.get(k) != ref[k]] + [k for k in got if k not in ref]


# ---- the faults --------------------------------------------------------------------------------------------------

def kill_stage(work: Path, s: int, seconds: Dict[int, float], rng: random.Random, ref_fp: Dict,
               last: int) -> Dict:
    """kill -9 stage ``s`` at a random point, then re-run from it through stage ``last`` and compare with the
    reference's state after ``last`` (``ref_fp``)."""
    case, logs = work / "run", work / f"kill-{s}"
    logs.mkdir(exist_ok=True)
    copy_state(work / "reference" / f"before-{s}", case)
    delay = rng.uniform(0.15, 0.85) * seconds[s]
    proc = subprocess.Popen(pipeline(case / "data", case / "exp", s, s), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    started = threading.Event()
    lines: List[str] = []

    def reader():
        for line in proc.stdout:
            lines.append(line)
            if f"Stage {s} (" in line and ": start" in line:
                started.set()

    threading.Thread(target=reader, daemon=True).start()
    started.wait(timeout=600)
    t_start = time.time()
    while proc.poll() is None and time.time() - t_start < delay:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    killed_after = time.time() - t_start
    proc.wait()
    (logs / "log-killed.txt").write_text("".join(lines))
    marker = case / "exp" / ".done" / f"stage-{s}-{STAGES[s]}"
    marked = marker.is_file()
    partial = sorted(str(p.relative_to(case)) for p in case.rglob("*") if ".tmp" in p.name or "partial" in p.name)
    rc, out = run(pipeline(case / "data", case / "exp", s, last), logs / "log-rerun.txt")
    diff = lost(ref_fp, fingerprints(case / "exp")) if rc == 0 else ["re-run failed"]
    ok = rc == 0 and not (killed and marked) and not diff
    note = (f"killed {killed_after:.0f} s into the stage (of ~{seconds[s]:.0f} s)"
            if killed else "stage finished before the kill time")
    if partial:
        note += f"; left {len(partial)} temporary files, ignored by the re-run"
    print(f"kill stage {s}: ok={ok} lost={len(diff)} {note} {diff[:5]}", flush=True)
    then = f"re-run through stage {last}" if last != s else "re-run"
    return {"fault": f"kill -9 during stage {s} ({STAGES[s]}), then {then}", "survived": ok, "lost": len(diff),
            "note": note}


def flipped_byte(work: Path) -> Dict:
    """One byte flipped inside a cut's lilcom data (in a teacher's Shar tar), then the KD stage."""
    from lhotse.shar.readers.tar import TarIterator

    case = work / "run"
    copy_state(work / "reference" / "before-6", case)
    tdir = sorted((case / "exp" / "teacher_outputs").iterdir())[0]
    archive = sorted(tdir.glob("*.000000.tar"))[0]
    manifest, path = [(m, p) for m, p in TarIterator(archive) if m is not None][1]
    blob = bytes((manifest.array if hasattr(manifest, "array") else manifest).storage_key)
    raw = bytearray(archive.read_bytes())
    raw[bytes(raw).index(blob[:64]) + 40] ^= 0x10
    archive.write_bytes(bytes(raw))
    cut = type("Cut", (), {"id": str(path.parent / path.stem)})
    # the training read names the cut and its pool shard (the tar sits beside that shard's fields)
    archive = Path("cuts.000000.jsonl.gz")
    rc, out = run(pipeline(case / "data", case / "exp", 6, 6), work / "log-flip.txt")
    logs = out + "".join(p.read_text(errors="replace") for p in (case / "exp").rglob("*.log"))
    named = archive.name in logs and cut.id in logs
    print(f"flipped byte: rc={rc} named shard+cut={named}", flush=True)
    return {"fault": f"one flipped byte in a teacher archive ({tdir.name}/{archive.name}), then KD",
            "survived": rc != 0 and named, "lost": 0,
            "note": f"KD stops: error names {archive.name} and cut {cut.id}" if named else "not named"}


def non_finite(work: Path) -> List[Dict]:
    """A teacher whose output for one cut has a NaN / an inf: the dump must refuse it, naming the cut."""
    import functools

    import numpy as np
    from lhotse import CutSet

    from mt2kd_lib.teachers.dump import dump_teacher
    from mt2kd_lib.teachers.resemblyzer_teacher import ResemblyzerTeacher

    from mt2kd_lib.data.shar import export_pool_shar

    cuts = CutSet.from_file(work / "run" / "data" / "fbank" / "kd_cuts_pool.jsonl.gz").subset(first=4).to_eager()
    victim_len = cuts[2].num_samples
    pool = export_pool_shar(cuts, work / "nonfinite-pool", shard_size=2) and work / "nonfinite-pool"
    rows = []
    for bad in (float("nan"), float("inf")):
        class Bad(ResemblyzerTeacher):
            def infer_batch(self, audios):
                outs = super().infer_batch(audios)
                for a, o in zip(audios, outs):
                    if len(a) == victim_len:
                        o[0] = bad
                return outs

        try:
            dump_teacher(pool, functools.partial(Bad, level="utterance"), work / f"nonfinite-{bad}",
                         num_threads=1, progress=False)
            ok, note = False, "accepted"
        except ValueError as e:
            ok, note = cuts[2].id in str(e), f"refused: {e}"
        print(f"{bad} in a teacher output: ok={ok} {note}", flush=True)
        rows.append({"fault": f"{'NaN' if np.isnan(bad) else 'inf'} in a teacher output", "survived": ok, "lost": 0,
                     "note": "dump refuses it naming the cut; the shard is not marked done" if ok else note})
    return rows


def data_faults(work: Path) -> Dict:
    """Truncated, empty, unknown-characters and 8 kHz items in LibriSpeech through the paper recipe's stages 1-3."""
    from lhotse import CutSet

    L = _tests_module("corpus_layouts")

    case = work / "data_faults"
    if case.exists():
        shutil.rmtree(case)
    parts = ("train-clean-100", "dev-clean", "test-clean")
    exp = L.make_librispeech(case / "ls", parts=parts)
    d = case / "ls" / "LibriSpeech" / "train-clean-100" / "100" / "200"
    good = {f"100-200-{u:04d}": f"GOOD UTTERANCE NUMBER {u}" for u in range(4, 10)}
    for n, utt in enumerate(good):
        L.write_audio(d / f"{utt}.flac", 1.0, seed=700 + n)
    L.write_audio(d / "100-200-0010.flac", 1.0, seed=710)  # truncated below
    raw = (d / "100-200-0010.flac").read_bytes()
    (d / "100-200-0010.flac").write_bytes(raw[: len(raw) // 2])
    (d / "100-200-0011.flac").write_bytes(b"")  # empty
    L.write_audio(d / "100-200-0012.flac", 1.0, seed=712)  # transcript of unknown characters only
    trans = d / "100-200.trans.txt"
    trans.write_text(trans.read_text() + "".join(f"{k} {v}\n" for k, v in good.items())
                     + "100-200-0010 TRUNCATED FILE\n100-200-0011 EMPTY FILE\n100-200-0012 ¤¤ §§ ¶\n")
    env = {**os.environ, "dl_dir": str(case / "absent"), "librispeech_dir": str(case / "ls"),
           "librispeech_train_parts": "train-clean-100", "librispeech_dev_parts": "dev-clean",
           "librispeech_test_parts": "test-clean", "MT2KD_PYTHON": sys.executable}
    cmd = ["bash", str(REPO / "run.sh"), "--recipe", "egs/librispeech_audioset_voxceleb", "--stage", "1",
           "--stop-stage", "3", "--data-dir", str(case / "data"), "--exp-dir", str(case / "exp"), "--nj", "2",
           "--vocab-size", "30"]
    rc, out = run(cmd, case / "log.txt", env)
    expected = dict(exp["train-clean-100"], **good)  # the 8 kHz one (100-200-0001) is in exp: resampled, kept
    got = set(CutSet.from_file(case / "data" / "fbank" / "asr_cuts_train-clean-100.jsonl.gz").ids) if rc == 0 else set()
    missing = sorted(set(expected) - got)
    checks = {"truncated": "truncated audio file" in out and "100-200-0010" in out,
              "empty": ("unreadable" in out or "zero-length" in out) and "100-200-0011" in out,
              "unknown chars": "non-text transcript" in out and "100-200-0012" in out,
              "8 kHz": "resampled 1 cuts from 8000 Hz" in out}
    ok = rc == 0 and all(checks.values()) and not missing and not ({"100-200-0010", "100-200-0011", "100-200-0012"} & got)
    print(f"data faults: rc={rc} {checks} missing={missing}", flush=True)
    return {"fault": "truncated flac, empty flac, transcript of unknown characters only, 8 kHz flac (stages 1-3)",
            "survived": ok, "lost": len(missing),
            "note": "3 dropped by name with a count, the 8 kHz one resampled; features and BPE on the rest"
            if ok else f"{checks}"}


def table(rows: List[Dict]) -> str:
    lines = ["| fault | survived | items lost | what happened |", "|---|---|---|---|"]
    lines += [f"| {r['fault']} | {'yes' if r['survived'] else 'NO'} | {r['lost']} | {r['note']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0, help="chooses the kill points")
    p.add_argument("--stages", default="5,6,7,8,9", help="stages to kill (comma list)")
    p.add_argument("--fresh", action="store_true", help="redo the reference run even if one is there")
    p.add_argument("--rerun-through-evaluation", action="store_true",
                   help="after a kill, re-run through stage 9 and compare final results (default: the killed stage)")
    p.add_argument("--faults", default="kill,flip,nonfinite,data", help="which rows to produce (comma list)")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    seconds, ref_fp = reference(args.work_dir, args.fresh)
    faults = set(args.faults.split(","))
    rows = []
    for s in map(int, filter(None, args.stages.split(",") if "kill" in faults else [])):
        last = LAST if args.rerun_through_evaluation else s
        want = ref_fp if last == LAST else fingerprints(args.work_dir / "reference" / f"before-{last + 1}" / "exp")
        rows.append(kill_stage(args.work_dir, s, seconds, rng, want, last))
    if "flip" in faults:
        rows.append(flipped_byte(args.work_dir))
    if "nonfinite" in faults:
        rows += non_finite(args.work_dir)
    if "data" in faults:
        rows.append(data_faults(args.work_dir))
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
