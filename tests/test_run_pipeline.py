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
