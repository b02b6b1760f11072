"""Without k2 the evaluate stage still runs: the methods that need no k2 give the same transcripts and WERs as with
k2, and the FSA methods are recorded as "needs k2" instead of being dropped. k2 is made absent in a subprocess by
``sys.modules["k2"] = None`` (every ``import k2`` then raises ImportError, as on a machine without it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mt2kd_lib.data.bpe import load_bpe
from mt2kd_lib.decoding.methods import METHODS, NEEDS_K2
from mt2kd_lib.lang import graphs
from mt2kd_lib.models.factory import build_student
from mt2kd_lib.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
BLOCK_K2 = "sys.modules['k2'] = None; "


def _evaluate(exp_dir: Path, recipe: dict, block_k2: bool) -> dict:
    argv = ["local/evaluate.py", "--exp-dir", str(exp_dir), "--recipe-data", str(recipe["data"]),
            "--lang-dir", str(recipe["lang"]), "--task", "asr", "--decoding-methods", "all"]
    code = (f"import runpy, sys; {BLOCK_K2 if block_k2 else ''}sys.argv = {argv!r}; "
            f"runpy.run_path('local/evaluate.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((exp_dir / "results.json").read_text())


def test_evaluate_without_k2_same_numbers_fsa_methods_need_k2(tiny_recipe, tmp_path):
    if not graphs.k2_available():
        pytest.skip("k2 does not import here: nothing to compare the k2-less run with")
    cfg = yaml.safe_load((REPO / "egs/mini/conf/student_tiny.yaml").read_text())
    cfg["heads"] = {"asr": {**cfg["heads"]["asr"], "vocab_size": load_bpe(tiny_recipe["lang"]).get_piece_size(),
                            "use_ctc": True}}
    torch.manual_seed(0)
    model = build_student(cfg)
    with torch.no_grad():
        model.asr_head.ctc_output[1].weight.mul_(30.0)  # a peaky CTC branch: non-empty transcripts to compare
    runs = {}
    for name, block in (("with_k2", False), ("without_k2", True)):
        save_checkpoint(tmp_path / name / "epoch-1.pt", model, model_config=cfg)
        runs[name] = _evaluate(tmp_path / name, tiny_recipe, block)
    with_k2, without = runs["with_k2"]["asr"]["methods"], runs["without_k2"]["asr"]["methods"]
    assert list(with_k2) == list(without) == list(METHODS)
    for m in METHODS:
        assert "wer" in with_k2[m], (m, with_k2[m])
        if m in NEEDS_K2:
            assert without[m] == {"skipped": "needs k2"}
            assert not (tmp_path / "without_k2" / m).exists()
        else:
            assert without[m]["wer"] == with_k2[m]["wer"], m
            recogs = [(tmp_path / run / m / "recogs-test-" f"{'beam_size_4' if m == 'modified_beam_search' else m}"
                       ".txt").read_text() for run in ("with_k2", "without_k2")]
            assert recogs[0] == recogs[1], m
    assert runs["without_k2"]["asr"]["wer"] == runs["with_k2"]["asr"]["wer"]
    ctc = (tmp_path / "without_k2" / "ctc_greedy_search" / "recogs-test-ctc_greedy_search.txt").read_text()
    assert any(line.split("hyp=")[1] != "[]" for line in ctc.splitlines() if "hyp=" in line), "all transcripts empty"
