"""run.sh: options, stage markers, skipping finished stages, redoing only an interrupted one, dry run."""

import os
import shutil
import subprocess

import pytest

from conftest import REPO, TINY_VOCAB, run_pipeline


def test_help_lists_stages():
    out = subprocess.run(["bash", "run.sh", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("prepare", "features", "lang", "teachers", "dump", "kd", "finetune", "evaluate", "report"):
        assert name in out.stdout


def test_unknown_option_is_an_error():
    out = subprocess.run(["bash", "run.sh", "--stgae", "1"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown option --stgae" in out.stderr


def test_first_run_wrote_markers(tiny_recipe):
    done = tiny_recipe["data"] / ".done"
    assert sorted(p.name for p in done.iterdir()) == ["stage-1-prepare", "stage-2-features", "stage-3-lang"]
    assert "the manifest contract holds" in tiny_recipe["log"]


def test_second_run_skips_everything(tiny_recipe):
    data = tiny_recipe["data"]
    watched = [data / "manifests/asr_cuts_train.jsonl.gz", data / "fbank/asr_cuts_train.jsonl.gz",
               tiny_recipe["lang"] / "bpe.model"]
    before = [os.stat(p).st_mtime_ns for p in watched]
    proc = run_pipeline(data, tiny_recipe["exp"], "--stage", "1", "--stop-stage", "3")
    for n in (1, 2, 3):
        assert f"Stage {n} (" in proc.stdout and "done before" in proc.stdout
    assert "local/prepare_mini.py" not in proc.stdout
    assert [os.stat(p).st_mtime_ns for p in watched] == before


def test_interrupted_stage_redoes_only_its_unfinished_part(tiny_recipe, tmp_path):
    # Copy the finished data, then pretend the features stage died after all splits but one.
    data = tmp_path / "data"
    shutil.copytree(tiny_recipe["data"], data, symlinks=True)
    (data / ".done/stage-2-features").unlink()
    (data / "fbank/sv_cuts_test.jsonl.gz").unlink()
    kept = data / "fbank/asr_cuts_train.jsonl.gz"
    before = os.stat(kept).st_mtime_ns
    proc = run_pipeline(data, tmp_path / "exp", "--stage", "1", "--stop-stage", "3")
    assert "Stage 1 (prepare): done before" in proc.stdout
    assert "Stage 2 (features): start" in proc.stdout
    assert "computing fbank for sv/test" in proc.stdout
    assert "computing fbank for asr/train" not in proc.stdout
    assert os.stat(kept).st_mtime_ns == before
    assert (data / "fbank/sv_cuts_test.jsonl.gz").is_file() and (data / ".done/stage-2-features").is_file()


def test_dry_run_prints_commands_without_running(tmp_path):
    proc = run_pipeline(tmp_path / "data", tmp_path / "exp", "--stage", "1", "--stop-stage", "3",
                        "--dry-run", "true")
    assert "+ bash egs/mini/prepare.sh" in proc.stdout
    assert f"lang_bpe_{TINY_VOCAB}" in proc.stdout
    assert not (tmp_path / "data").exists()


STAND_IN = """#!/bin/sh
# Stand-in python3: records when each training command starts and ends (by its --exp-dir), fails on request.
name=$(echo "$*" | sed -n 's/.*--exp-dir \\([^ ]*\\).*/\\1/p')
echo "start ${name:-other} $(date +%s.%N) $(ps -o ni= -p $$)" >> "$FAKE_LOG"
echo "$*" >> "$FAKE_LOG.args"
if [ -n "$FAKE_FAIL" ]; then case "$*" in *"$FAKE_FAIL"*) exit 1 ;; esac; fi
sleep 1
echo "end ${name:-other} $(date +%s.%N) 0" >> "$FAKE_LOG"
"""


def _run_student_stages(tiny_recipe, tmp_path, fail: str = "", first: int = 6, env_extra=None):
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text(STAND_IN)
    fake.chmod(0o755)
    log = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", MT2KD_VENV=str(tmp_path / "no_venv"),
               FAKE_LOG=str(log), FAKE_FAIL=fail, **(env_extra or {}))
    exp = tmp_path / "exp"
    proc = subprocess.run(["bash", "run.sh", "--recipe-config", "egs/mini/config_tiny.sh", "--data-dir",
                           str(tiny_recipe["data"]), "--exp-dir", str(exp), "--stage", str(first), "--stop-stage", "8",
                           "--train-jobs", "2"], cwd=REPO, env=env, capture_output=True, text=True)
    times = {}
    for line in log.read_text().splitlines():
        what, name, t, nice = line.split()
        entry = times.setdefault(name.replace(str(exp) + "/", ""), {})
        entry[what] = float(t)
        if what == "start":
            entry["nice"] = int(nice)
    return proc, times, exp


def test_baselines_run_beside_the_chain_at_low_priority(tiny_recipe, tmp_path):
    """Stage 8 starts with the teachers (it needs only the data) at nice 19; the chain 4-7 keeps its order."""
    proc, t, exp = _run_student_stages(tiny_recipe, tmp_path, first=4)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "alongside stages 4 5 6 7" in proc.stdout
    teachers = [t[n] for n in t if n.startswith("teachers/")]
    assert len(teachers) == 3  # config_tiny trains an SV teacher too
    kd, ft = t["mt2kd/kd"], t["mt2kd"]
    baselines = [t[n] for n in ("single_asr", "single_at", "single_sv", "multitask_scratch")]
    assert all(b["nice"] == 19 for b in baselines) and all(c["nice"] == os.nice(0) for c in teachers + [kd, ft]), t
    # a baseline trains beside a teacher; KD starts after the teachers, fine-tuning after KD
    assert any(s["start"] < b["end"] and b["start"] < s["end"] for b in baselines for s in teachers), t
    assert kd["start"] >= max(s["end"] for s in teachers) and ft["start"] >= kd["end"]
    for group in (teachers + [kd, ft], baselines):  # train_jobs slots in each of the two branches
        for s in group:
            assert sum(o["start"] <= s["start"] < o["end"] for o in group) <= 2, t
    assert sorted(p.name for p in (exp / ".done").iterdir()) == [
        "stage-4-teachers", "stage-5-dump", "stage-6-kd", "stage-7-finetune", "stage-8-baselines"]


def test_failed_kd_branch_fails_the_run(tiny_recipe, tmp_path):
    proc, t, exp = _run_student_stages(tiny_recipe, tmp_path, fail="local/train_kd.py")
    assert proc.returncode != 0
    assert "Stage 6 (kd) failed" in proc.stdout and "failed: mt2kd_kd" in proc.stdout
    assert "mt2kd" not in t  # no fine-tuning from a KD run that failed
    assert sorted(p.name for p in (exp / ".done").iterdir()) == ["stage-8-baselines"]


def test_ablations_added_to_a_finished_run(tiny_recipe, tmp_path):
    """--ablations true on a run whose students are trained: only the ablations train; the no-masking one reads
    teacher outputs dumped on every cut (teacher_outputs_all), the others the task-masked ones."""
    exp = tmp_path / "exp"
    for d in ("mt2kd/kd", "mt2kd", "single_asr", "single_at", "single_sv", "multitask_scratch"):
        (exp / d).mkdir(parents=True, exist_ok=True)
        (exp / d / "epoch-1.pt").write_text("trained before")
    proc, t, _ = _run_student_stages(tiny_recipe, tmp_path, first=5, env_extra={"ablations": "true"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "single_asr/epoch-1.pt exists: trained before" in proc.stdout
    assert sorted(n for n in t if n != "other") == sorted(
        f"ablation_{a}{s}" for a in ("only_asr_teacher", "only_at_teacher", "only_sv_teacher", "no_mask")
        for s in ("/kd", ""))
    calls = (tmp_path / "calls.txt.args").read_text().splitlines()
    dumps = [c for c in calls if "dump_teacher.py" in c]
    assert len(dumps) == 6
    assert all(("--origin" in c) == ("teacher_outputs_all" not in c) for c in dumps)
    kd = {c.split("--exp-dir ")[1].split()[0].rsplit("/", 2)[1]: c for c in calls if "train_kd.py" in c}
    assert f"--teacher-dir {exp}/teacher_outputs_all " in kd["ablation_no_mask"]
    assert "--mask-by-task false" in kd["ablation_no_mask"]
    assert f"--teacher-dir {exp}/teacher_outputs " in kd["ablation_only_at_teacher"]
