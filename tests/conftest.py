"""Shared fixtures: one tiny egs/mini built through run.sh (stages 1-3) for the whole test session."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CORPUS = REPO / "egs/mini/conf/corpus_tiny.yaml"
TINY_VOCAB = 64


def load_script(relpath: str):
    """A script of local/ or tools/ (folders of scripts, not packages) as a module, loaded from its file."""
    import importlib.util

    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_pipeline(data_dir: Path, exp_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``bash run.sh`` on the tiny corpus; returns the finished process (stdout+stderr merged)."""
    cmd = ["bash", str(REPO / "run.sh"), "--recipe-config", str(REPO / "egs/mini/config_tiny.sh"),
           "--corpus-config", str(TINY_CORPUS), "--vocab-size", str(TINY_VOCAB),
           "--data-dir", str(data_dir), "--exp-dir", str(exp_dir), *args]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on shared, busy
    cores two spinning OMP threads can be 10x slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory):
    """data/ and exp/ dirs of the tiny corpus after run.sh stages 1-3 (prepare, features, lang)."""
    root = tmp_path_factory.mktemp("tiny_recipe")
    data_dir, exp_dir = root / "data", root / "exp"
    proc = run_pipeline(data_dir, exp_dir, "--stage", "1", "--stop-stage", "3")
    return {"data": data_dir, "exp": exp_dir, "log": proc.stdout, "lang": data_dir / f"lang_bpe_{TINY_VOCAB}"}
