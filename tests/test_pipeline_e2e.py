"""The whole MT2KD pipeline (teachers, dump, KD, fine-tuning, baselines, evaluation, report) on the tiny corpus."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet

from conftest import REPO, run_pipeline
from mt2kd_lib.data.contract import read_class_labels
from mt2kd_lib.data.features import make_fbank_extractor
from mt2kd_lib.decoding.greedy_search import greedy_search_batch
from mt2kd_lib.evaluation.evaluate import load_averaged_model
from mt2kd_lib.evaluation.weights_choice import chosen_weights


@pytest.fixture(scope="module")
def e2e(tiny_recipe, tmp_path_factory):
    exp = tmp_path_factory.mktemp("e2e_exp")
    proc = run_pipeline(tiny_recipe["data"], exp, "--stage", "4", "--stop-stage", "11")
    return exp, proc.stdout


def test_every_system_trained_and_evaluated(e2e):
    exp, _ = e2e
    expected = {"teacher_asr": ["asr"], "teacher_at": ["at"], "teacher_sv": ["sv"], "single_asr": ["asr"],
                "single_at": ["at"], "single_sv": ["sv"], "multitask_scratch": ["asr", "at", "sv"],
                "mt2kd": ["asr", "at", "sv"]}
    found = {}
    for path in list(exp.glob("*/results.json")) + list(exp.glob("teachers/*/results.json")):
        r = json.loads(path.read_text())
        found[r["system"]] = r
    assert set(expected) <= set(found)
    for name, tasks in expected.items():
        r = found[name]
        assert r["params"] > 0
        for t in ("asr", "at", "sv"):
            assert (t in r) == (t in tasks), (name, t)
        if "asr" in tasks:
            assert 0 <= r["asr"]["wer"]["test"] <= 100 * 10 and 0 <= r["asr"]["wer_dev"]["dev"] <= 100 * 10
        if "at" in tasks:
            assert 0 < r["at"]["mAP"] <= 1
        if "sv" in tasks:
            assert 0 <= r["sv"]["eer"]["O"] <= 100 and r["sv"]["min_dcf"]["O"] >= 0
            assert 0 <= r["sv"]["eer_dev"]["dev"] <= 100, name  # the SV dev trials, for choosing settings
        # egs/mini chooses each student's weights on dev (the teachers keep the dumped ones)
        if name.startswith("teacher"):
            assert "weights" not in r, name
        else:
            w = r["weights"]
            if tasks == ["at"]:  # no AT dev set: use_averaged_model (config_tiny: true)
                assert w["by"].startswith("no dev set") and w["chosen"] == "mean", name
            else:
                assert w["by"] == ("ASR dev WER" if "asr" in tasks else "SV dev EER"), name
                assert w["chosen"] == min(("mean", "last"), key=lambda k: (w[k], k != "mean")), name
            assert r["use_averaged_model"] == (w["chosen"] == "mean"), name


def test_teacher_outputs_dumped_and_attached(e2e):
    exp, _ = e2e
    for t in ("asr_teacher", "at_teacher", "sv_teacher"):
        summary = json.loads((exp / "teacher_outputs" / t / "summary.json").read_text())
        assert summary["num_cuts"] > 0 if "num_cuts" in summary else True
        assert list((exp / "teacher_outputs" / t).glob("shard-*.done"))
    log = (exp / "mt2kd" / "kd" / "log" / "log-train.txt").read_text()
    for t in ("asr_teacher", "at_teacher", "sv_teacher"):
        assert f"teacher {t}:" in log
    # Stage 2 started from stage 1: the encoder was copied.
    ft_log = (exp / "mt2kd" / "log" / "log-train-rank0.txt").read_text()
    assert "initialised from" in ft_log


def test_icefall_result_files_and_report(e2e):
    exp, _ = e2e
    dec = exp / "mt2kd" / "greedy_search"
    assert list(dec.glob("recogs-test-*.txt")) and list(dec.glob("errs-test-*.txt"))
    assert (dec / "wer-summary-test.txt").is_file()
    report = (exp / "RESULTS.md").read_text()
    for name in ("teacher_asr", "single_sv", "multitask_scratch", "mt2kd", "MT2KD against the baselines"):
        assert name in report
    assert (exp / "training_curves.png").is_file()


def test_rerun_skips_finished_stages(e2e, tiny_recipe):
    exp, _ = e2e
    proc = run_pipeline(tiny_recipe["data"], exp, "--stage", "4", "--stop-stage", "11")
    for n in range(4, 12):
        assert f"Stage {n} (" in proc.stdout
    assert proc.stdout.count("done before") >= 8
    assert "local/train.py" not in proc.stdout


def test_export_stage_wrote_sherpa_onnx_files(e2e):
    exp, _ = e2e
    onnx = exp / "mt2kd" / "onnx"
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt", "tagger.onnx", "speaker.onnx"):
        assert (onnx / name).stat().st_size > 0, name


def test_sherpa_onnx_runs_the_exported_student_like_ours(e2e, tiny_recipe, tmp_path):
    """sherpa-onnx's Python API on stage 11's files (egs/mini's own label file) and test clips of each task ==
    our pipeline (our fbank + the trained torch model): transcripts, and probabilities / embeddings within 1e-4."""
    pytest.importorskip("sherpa_onnx")
    exp, _ = e2e
    manifests = tiny_recipe["data"] / "manifests"
    wavs = {}
    for task, split in (("asr", "test"), ("at", "eval"), ("sv", "test")):
        for cut in CutSet.from_file(manifests / f"{task}_cuts_{split}.jsonl.gz").subset(first=1):
            path = tmp_path / f"{task}.wav"
            sf.write(str(path), cut.load_audio()[0], cut.sampling_rate, subtype="FLOAT")  # the exact samples
            wavs[str(path)] = path
    out = tmp_path / "sherpa.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools/sherpa_onnx_run.py"), str(exp / "mt2kd" / "onnx"),
                           *wavs, "--out", str(out)], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    sherpa = json.loads(out.read_text())

    # what stage 11 exported (config_tiny: avg=1, the weights stage 9 chose on dev)
    model = load_averaged_model(exp / "mt2kd", None, 1, use_averaged_model=chosen_weights(exp / "mt2kd"))
    symbols = [line.split()[0] for line in (exp / "mt2kd" / "onnx" / "tokens.txt").read_text().splitlines()]
    names = [r[2] for r in read_class_labels(manifests)]
    extractor = make_fbank_extractor()
    for key, path in wavs.items():
        samples, sr = sf.read(str(path), dtype="float32")
        x = torch.from_numpy(np.asarray(extractor.extract(samples, sr), dtype=np.float32))[None]
        x_lens = torch.tensor([x.shape[1]])
        with torch.no_grad():
            probs = torch.sigmoid(model.at_logits(x, x_lens))[0].numpy()
            emb = model.sv_embeddings(x, x_lens)[0].numpy()
            enc, enc_lens = model.asr_encoder_out(x, x_lens)
            hyp = greedy_search_batch(model.asr_head, enc, enc_lens, unk_id=symbols.index("<unk>"))[0]
        res = sherpa[key]
        assert res["tokens"] == [symbols[i].replace("\u2581", " ") for i in hyp], key
        assert res["labels"] == names
        np.testing.assert_allclose(res["probs"], probs, atol=1e-4, rtol=0, err_msg=key)
        np.testing.assert_allclose(res["embedding"], emb, atol=1e-4, rtol=0, err_msg=key)


def test_kill_during_evaluation_then_rerun_gives_the_same_results(e2e, tiny_recipe, tmp_path):
    """kill -9 (the whole process group) at a random point of the evaluation stage, then run.sh again: the stage
    was not marked done, and every results.json equals the uninterrupted run's. The other long stages are killed
    by tools/fault_table.py (README, 'Faults survived')."""
    import os
    import random
    import shutil
    import signal
    import subprocess
    import time

    from conftest import REPO, TINY_CORPUS, TINY_VOCAB

    exp0, _ = e2e
    # Each system's results.json (stage 9); exp/results.json is stage 10's summary of them, not under test here.
    want = {p.relative_to(exp0): json.loads(p.read_text()) for p in exp0.glob("**/*/results.json")}
    exp = tmp_path / "exp"
    shutil.copytree(exp0, exp, symlinks=True)
    for p in exp.glob("**/*/results.json"):
        p.unlink()
    for p in (exp / ".done").glob("stage-9-*"):
        p.unlink()
    cmd = ["bash", str(REPO / "run.sh"), "--recipe-config", str(REPO / "egs/mini/config_tiny.sh"),
           "--corpus-config", str(TINY_CORPUS), "--vocab-size", str(TINY_VOCAB), "--data-dir", str(tiny_recipe["data"]),
           "--exp-dir", str(exp), "--stage", "9", "--stop-stage", "9"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    # Somewhere after the first system's results (if any) and before the last: wait for a random share of them.
    target = random.Random(os.getpid()).randint(0, max(0, len(want) - 3))
    while proc.poll() is None and len(list(exp.glob("**/*/results.json"))) < target:
        time.sleep(0.05)
    assert proc.poll() is None, "evaluation finished before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((exp / ".done").glob("stage-9-*"))
    run_pipeline(tiny_recipe["data"], exp, "--stage", "9", "--stop-stage", "9")
    got = {p.relative_to(exp): json.loads(p.read_text()) for p in exp.glob("**/*/results.json")}
    assert got == want
