"""Boolean options take true or false only: anything else is an error before anything runs, never a silent false."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from mt2kd_lib.training.launch import str2bool


def _run_sh(*args: str, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(["bash", "run.sh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--dry-run", "yes"], "option --dry-run takes true or false, got 'yes'"),
    (["--force=1"], "option --force takes true or false, got '1'"),
    (["--recipe", "egs/librispeech_audioset_voxceleb", "--ablations", "False"], "option --ablations takes true or false"),
    (["--recipe-config", "egs/mini/config_tiny.sh", "--kd-mask-by-task", "no"], "option --kd-mask-by-task takes"),
])
def test_run_sh_refuses_non_boolean_options(tmp_path, args, message):
    proc = _run_sh(*args, "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"))
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert proc.stdout == "" and not (tmp_path / "data").exists()  # nothing ran, not even the first log line


def test_run_sh_refuses_non_boolean_environment(tmp_path):
    proc = _run_sh("--dry-run", "true", "--data-dir", str(tmp_path / "d"), env_extra={"kd_mask_by_task": "yes"})
    assert proc.returncode != 0 and "kd_mask_by_task (--kd-mask-by-task) must be true or false, got 'yes'" in proc.stderr
    proc = _run_sh("--dry-run", "true", "--stop-stage", "0", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 0  # the same command with proper booleans runs


def test_prepare_sh_refuses_non_boolean(tmp_path):
    env = dict(os.environ, download_corpora="yes")
    proc = subprocess.run(["bash", "egs/librispeech_audioset_voxceleb/prepare.sh", "--manifest-dir", str(tmp_path / "m")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "download_corpora must be true or false, got 'yes'" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_python_clis_refuse_non_boolean():
    assert str2bool("true") is True and str2bool("false") is False
    for bad in ("yes", "1", "True", "no", ""):
        with pytest.raises(Exception, match="expected true or false"):
            str2bool(bad)
    proc = subprocess.run([sys.executable, "local/train_kd.py", "--mask-by-task", "yes"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2 and "--mask-by-task: expected true or false, got 'yes'" in proc.stderr, proc.stderr
