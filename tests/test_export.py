"""ONNX export (run.sh stage 11): local/export.py on a tiny all-heads student; onnxruntime outputs vs torch; and,
when sherpa-onnx is installed, sherpa-onnx's own Python API (offline transducer, audio tagging, speaker embedding
extractor) on the exported files and wav files vs our pipeline (our fbank extractor + the torch model).

The tiny model is random, with its joiner's ``encoder_proj`` scaled up (x30) and ``output_linear`` bias zeroed so
that greedy decoding is not degenerate (an untrained transducer otherwise repeats one token on every frame): the
decoded sequence then depends on every frame of the encoder output, the decoder state and the joiner.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from mt2kd_lib.data.contract import read_class_labels_file
from mt2kd_lib.data.features import make_fbank_extractor
from mt2kd_lib.decoding.greedy_search import greedy_search_batch
from mt2kd_lib.evaluation.evaluate import load_averaged_model
from mt2kd_lib.export.onnx_export import export_model, export_tagger, export_transducer
from mt2kd_lib.export.sherpa_layout import sherpa_label_lines, write_sherpa_class_labels
from mt2kd_lib.models.factory import build_student
from mt2kd_lib.models.student import StudentModel
from mt2kd_lib.training.checkpoint import save_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
VOCAB = 24
NUM_CLASSES = 5
TOL = 1e-3
SHERPA_TOL = 1e-4  # sherpa-onnx (its own fbank + onnxruntime) vs our fbank + torch
SR = 16000
# AudioSet-like names; one with a comma, which sherpa-onnx only reads when quoted
CLASS_NAMES = ["Speech", "Bell, ringing"] + [f"Event {i}" for i in range(2, NUM_CLASSES)]
# icefall's special symbols first (blank 0, unk 2), then word-initial and word-internal pieces
SYMBOLS = ["<blk>", "<sos/eos>", "<unk>"] + [f"▁w{i}" if i % 2 else f"p{i}" for i in range(3, VOCAB)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _config() -> Dict:
    cfg = yaml.safe_load((REPO / "egs/mini/conf/student_tiny.yaml").read_text())
    cfg["heads"]["asr"]["vocab_size"] = VOCAB
    cfg["heads"]["at"]["num_classes"] = NUM_CLASSES
    cfg["heads"]["sv"]["num_speakers"] = 4
    return cfg


def _tiny_model(seed: int) -> StudentModel:
    torch.manual_seed(seed)
    model = build_student(_config()).eval()
    with torch.no_grad():
        model.asr_head.joiner.encoder_proj.weight.mul_(30.0)
        model.asr_head.joiner.output_linear.bias.zero_()
        model.at_head.proj.weight.mul_(2.0)  # spread the AT probabilities away from 0.5, without saturating them
    return model


def _session(path: Path) -> "ort.InferenceSession":
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Dict:
    """Two epoch checkpoints -> ``local/export.py --epoch 2 --avg 2`` -> the ONNX dir and the averaged torch model."""
    root = tmp_path_factory.mktemp("export")
    exp_dir, lang_dir, manifest_dir = root / "exp", root / "lang_bpe", root / "manifests"
    lang_dir.mkdir()
    manifest_dir.mkdir()
    (lang_dir / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(SYMBOLS)))
    with open(manifest_dir / "class_labels_indices.csv", "w", newline="") as f:  # as egs/mini's prepare writes it
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        w.writerows([i, f"/m/{i:04d}", name] for i, name in enumerate(CLASS_NAMES))
    model = _tiny_model(0)
    save_checkpoint(exp_dir / "epoch-1.pt", model, model_config=_config())
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    save_checkpoint(exp_dir / "epoch-2.pt", model, model_config=_config())

    out_dir = root / "onnx"
    cmd = [sys.executable, str(REPO / "local/export.py"), "--exp-dir", str(exp_dir), "--epoch", "2", "--avg", "2",
           "--lang-dir", str(lang_dir), "--manifest-dir", str(manifest_dir), "--out-dir", str(out_dir),
           "--max-seconds", "10"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return {"out": out_dir, "model": load_averaged_model(exp_dir, 2, 2), "stdout": proc.stdout,
            "lang": lang_dir, "manifests": manifest_dir}


def _meta(path: Path) -> Dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# ------------------------------------------------------------------------------------------------ files


def test_cli_writes_every_head_with_sizes_and_metadata(exported: Dict) -> None:
    out: Path = exported["out"]
    names = ["encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt", "tagger.onnx", "speaker.onnx",
             "class_labels_indices.csv"]
    for name in names:
        assert (out / name).is_file(), name
        assert name in exported["stdout"]  # the size table lists every file
    assert "total" in exported["stdout"] and "MB" in exported["stdout"]
    # The CTC branch (use_ctc in student_tiny.yaml), for sherpa-onnx with HLG.fst (tests/test_k2_sherpa_hlg.py).
    assert exported["model"].asr_head.ctc_output is not None
    assert (out / "ctc.onnx").is_file() and "ctc.onnx" in exported["stdout"]
    assert _meta(out / "ctc.onnx")["model_type"] == "zipformer2_ctc"
    assert (out / "tokens.txt").read_text() == (exported["lang"] / "tokens.txt").read_text()

    model: StudentModel = exported["model"]
    head = model.asr_head
    enc, dec, join = _meta(out / "encoder.onnx"), _meta(out / "decoder.onnx"), _meta(out / "joiner.onnx")
    assert enc["model_type"] == "zipformer2" and {"version", "model_author", "comment"} <= set(enc)
    assert dec == {"context_size": str(head.context_size), "vocab_size": str(VOCAB)}
    assert join == {"joiner_dim": str(head.joiner.output_linear.in_features)}
    assert _meta(out / "tagger.onnx")["num_event_classes"] == str(NUM_CLASSES)
    # sherpa-onnx reads the number of classes from the tagger's static output shape
    probs_dims = onnx.load(str(out / "tagger.onnx")).graph.output[0].type.tensor_type.shape.dim
    assert probs_dims[1].dim_value == NUM_CLASSES
    spk = onnx.load(str(out / "speaker.onnx"))
    assert [i.name for i in spk.graph.input] == ["x"]  # sherpa-onnx feeds the fbank only
    meta = _meta(out / "speaker.onnx")
    assert {k: meta[k] for k in ("framework", "output_dim", "sample_rate", "normalize_samples", "language")} == {
        "framework": "wespeaker", "output_dim": str(model.sv_head.emb_dim), "sample_rate": str(SR),
        "normalize_samples": "1", "language": "unknown"}
    assert "feature_normalize_type" not in meta  # our fbank is not mean-normalised
    # AudioSet's quoting (what sherpa-onnx parses), and still the same rows for a csv reader
    lines = (out / "class_labels_indices.csv").read_text().splitlines()
    assert lines[0] == "index,mid,display_name" and lines[2] == '1,/m/0001,"Bell, ringing"'
    assert read_class_labels_file(out / "class_labels_indices.csv") == read_class_labels_file(
        exported["manifests"] / "class_labels_indices.csv")
    for name in ["encoder", "decoder", "joiner", "tagger", "speaker"]:
        m = onnx.load(str(out / f"{name}.onnx"))
        assert 13 <= m.opset_import[0].version <= 17
        for inp in m.graph.input:  # batch axis (and time axis of the fbank inputs) are symbolic
            assert inp.type.tensor_type.shape.dim[0].dim_param, (name, inp.name)


# ------------------------------------------------------------------------------------------------ numerics


@pytest.mark.parametrize("shape", [(2, 83, [83, 61]), (3, 240, [240, 190, 12])])
def test_fbank_models_match_torch(exported: Dict, shape) -> None:
    """encoder/tagger/speaker on two batch shapes (padding, and a 12-frame utterance) agree with torch."""
    n, t, lens = shape
    model: StudentModel = exported["model"]
    g = torch.Generator().manual_seed(t)
    x = torch.randn(n, t, 80, generator=g)
    x_lens = torch.tensor(lens, dtype=torch.int64)
    feeds = {"x": x.numpy(), "x_lens": x_lens.numpy()}
    with torch.no_grad():
        enc, enc_lens = model.asr_encoder_out(x, x_lens)
        enc = model.asr_head.joiner.encoder_proj(enc)
        probs = torch.sigmoid(model.at_logits(x, x_lens))
        emb = model.sv_embeddings(x, x_lens)

    out, out_lens = _session(exported["out"] / "encoder.onnx").run(None, feeds)
    assert out.shape == tuple(enc.shape) and out_lens.dtype == np.int64
    assert out_lens.tolist() == enc_lens.tolist()
    for i in range(n):  # frames past an utterance's length are padding in both
        np.testing.assert_allclose(out[i, :out_lens[i]], enc[i, :enc_lens[i]].numpy(), atol=TOL, rtol=0)
    (p,) = _session(exported["out"] / "tagger.onnx").run(None, feeds)
    np.testing.assert_allclose(p, probs.numpy(), atol=TOL, rtol=0)
    assert p.shape == (n, NUM_CLASSES) and float(p.std()) > 0.01  # not a constant output
    speaker = _session(exported["out"] / "speaker.onnx")
    for i in range(n):  # one unpadded utterance per call, as sherpa-onnx runs it
        (e,) = speaker.run(None, {"x": x[i:i + 1, :lens[i]].numpy()})
        np.testing.assert_allclose(e[0], emb[i].numpy(), atol=TOL, rtol=0)
    (e,) = speaker.run(None, {"x": x[:, :lens[-1]].numpy()})  # a batch of equal lengths
    with torch.no_grad():
        ref = model.sv_embeddings(x[:, :lens[-1]], torch.full((n,), lens[-1]))
    np.testing.assert_allclose(e, ref.numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("n", [1, 7])
def test_decoder_and_joiner_match_torch(exported: Dict, n: int) -> None:
    head = exported["model"].asr_head
    g = torch.Generator().manual_seed(n)
    y = torch.randint(0, VOCAB, (n, head.context_size), generator=g)
    y[0] = 0  # the all-blank start context
    (dec,) = _session(exported["out"] / "decoder.onnx").run(None, {"y": y.numpy()})
    with torch.no_grad():
        ref_dec = head.joiner.decoder_proj(head.decoder(y, need_pad=False)).squeeze(1)
    np.testing.assert_allclose(dec, ref_dec.numpy(), atol=TOL, rtol=0)

    enc = torch.randn(n, dec.shape[1], generator=g)
    (logit,) = _session(exported["out"] / "joiner.onnx").run(
        None, {"encoder_out": enc.numpy(), "decoder_out": dec})
    with torch.no_grad():
        ref = head.joiner(enc, ref_dec, project_input=False)
    assert logit.shape == (n, VOCAB)
    np.testing.assert_allclose(logit, ref.numpy(), atol=TOL, rtol=0)


def test_bad_export_requests_raise(exported: Dict, tmp_path: Path) -> None:
    model: StudentModel = exported["model"]
    with pytest.raises(ValueError, match="tokens"):
        export_model(model, tmp_path)
    bad_tokens = tmp_path / "tokens.txt"
    bad_tokens.write_text("".join(f"s{i} {i}\n" for i in range(VOCAB + 3)))
    with pytest.raises(ValueError, match="vocab_size"):
        export_transducer(model, tmp_path, bad_tokens)
    with pytest.raises(ValueError, match="opset"):
        export_model(model, tmp_path, exported["lang"] / "tokens.txt", opset=11)


# ------------------------------------------------------------------------------------------------ label file


def test_sherpa_label_lines_quote_names_and_refuse_what_sherpa_cannot_read(tmp_path: Path) -> None:
    rows = [(0, "/m/09x0r", "Speech"), (1, "/m/05zppz", "Male speech, man speaking")]
    assert sherpa_label_lines(rows) == ["index,mid,display_name", '0,/m/09x0r,"Speech"',
                                        '1,/m/05zppz,"Male speech, man speaking"']
    with pytest.raises(ValueError, match="mid"):
        sherpa_label_lines([(0, "/m/a,b", "x")])
    with pytest.raises(ValueError, match="class 0"):
        sherpa_label_lines([(0, "/m/a", 'say "hi"')])
    src = tmp_path / "labels.csv"
    src.write_text("index,mid,display_name\n0,/m/a,speech\n1,/m/b,music\n")
    with pytest.raises(ValueError, match="2 classes.*3"):
        write_sherpa_class_labels(src, tmp_path / "out.csv", 3)


def test_tagger_export_refuses_a_label_file_of_the_wrong_size(exported: Dict, tmp_path: Path) -> None:
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text("index,mid,display_name\n0,/m/a,speech\n")
    with pytest.raises(ValueError, match=f"1 classes, but the model's AT head has {NUM_CLASSES}"):
        export_tagger(exported["model"], tmp_path / "onnx" / "tagger.onnx", class_labels=labels, max_seconds=2)


# ------------------------------------------------------------------------------------------------ sherpa-onnx


def _test_waveform(seconds: float, seed: int) -> np.ndarray:
    """100 ms segments: tones of changing pitch, quiet gaps, noise bursts (never digital silence)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.1 * SR)) / SR
    segs = []
    for k in range(int(round(seconds / 0.1))):
        f = 150 * ((k + seed) % 7 + 1) * (1 + k % 3)
        segs.append((0.5 if k % 4 else 0.05) * np.sin(2 * np.pi * f * t)
                    + (0.3 if k % 5 == 2 else 0.01) * rng.standard_normal(t.size))
    return np.concatenate(segs).astype(np.float32)


@pytest.fixture(scope="module")
def sherpa_results(exported: Dict, tmp_path_factory) -> Dict:
    """tools/sherpa_onnx_run.py (sherpa-onnx's Python API, in a subprocess: sherpa-onnx ends the process when it
    refuses a file) on two wav files, and our pipeline's fbank of the same files."""
    pytest.importorskip("sherpa_onnx")
    root = tmp_path_factory.mktemp("sherpa")
    wavs = {}
    for seconds, seed in [(1.5, 0), (3.2, 1)]:
        path = root / f"utt{seed}.wav"
        sf.write(str(path), _test_waveform(seconds, seed), SR, subtype="PCM_16")
        wavs[str(path)] = path
    cmd = [sys.executable, str(REPO / "tools/sherpa_onnx_run.py"), str(exported["out"]), *wavs,
           "--out", str(root / "sherpa.json")]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    sherpa = json.loads((root / "sherpa.json").read_text())
    assert sorted(sherpa) == sorted(wavs)
    extractor = make_fbank_extractor()  # what run.sh stage 2 computes (before lilcom storage)
    ours = {}
    for key, path in wavs.items():
        samples, sr = sf.read(str(path), dtype="float32")
        ours[key] = torch.from_numpy(np.asarray(extractor.extract(samples, sr), dtype=np.float32))
    return {"sherpa": sherpa, "fbank": ours}


def test_sherpa_onnx_transducer_matches_our_greedy_search(exported: Dict, sherpa_results: Dict) -> None:
    """sherpa-onnx greedy search on the wav == our greedy search on our fbank of it.

    sherpa-onnx never emits <unk> (and does not feed it to the decoder), i.e. our ``unk_id`` option.
    """
    model: StudentModel = exported["model"]
    for key, feats in sherpa_results["fbank"].items():
        with torch.no_grad():
            enc, enc_lens = model.asr_encoder_out(feats[None], torch.tensor([feats.shape[0]]))
            ours = greedy_search_batch(model.asr_head, enc, enc_lens, unk_id=SYMBOLS.index("<unk>"))[0]
        ours_tokens = [SYMBOLS[i].replace("▁", " ") for i in ours]  # sherpa shows the word-boundary mark as a space
        assert len(set(ours)) >= 3, f"degenerate test model output {ours}"  # the comparison must mean something
        res = sherpa_results["sherpa"][key]
        assert res["tokens"] == ours_tokens, key
        assert res["text"].strip() == "".join(ours_tokens).strip()


def test_sherpa_onnx_audio_tagging_matches_ours(exported: Dict, sherpa_results: Dict) -> None:
    model: StudentModel = exported["model"]
    for key, feats in sherpa_results["fbank"].items():
        with torch.no_grad():
            probs = torch.sigmoid(model.at_logits(feats[None], torch.tensor([feats.shape[0]])))[0].numpy()
        res = sherpa_results["sherpa"][key]
        assert res["labels"] == CLASS_NAMES
        assert ((probs > 0.05) & (probs < 0.95)).any(), probs  # not all saturated: the tolerance means something
        np.testing.assert_allclose(np.array(res["probs"]), probs, atol=SHERPA_TOL, rtol=0, err_msg=key)


def test_sherpa_onnx_speaker_embedding_matches_ours(exported: Dict, sherpa_results: Dict) -> None:
    model: StudentModel = exported["model"]
    embs = []
    for key, feats in sherpa_results["fbank"].items():
        with torch.no_grad():
            emb = model.sv_embeddings(feats[None], torch.tensor([feats.shape[0]]))[0].numpy()
        res = np.array(sherpa_results["sherpa"][key]["embedding"])
        assert res.shape == emb.shape == (model.sv_head.emb_dim,)
        np.testing.assert_allclose(res, emb, atol=SHERPA_TOL, rtol=0, err_msg=key)
        embs.append(emb)
    assert np.abs(embs[0] - embs[1]).max() > 10 * SHERPA_TOL  # the two utterances give different embeddings
