"""Streaming ONNX export for sherpa-onnx's OnlineRecognizer: the encoder with its states as inputs/outputs matches
the torch streaming encoder chunk by chunk (onnxruntime), its metadata lets sherpa-onnx build initial states of the
shapes our encoder uses, and sherpa-onnx's OnlineRecognizer, fed 100 ms of audio at a time, transcribes wav files
exactly as our streaming greedy search does on our fbank of them (the tiny causal student, random weights made to
emit varied tokens as in tests/test_export.py)."""

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

from mt2kd_lib.data.features import make_fbank_extractor
from mt2kd_lib.decoding.streaming import StreamingStudent
from mt2kd_lib.export.onnx_streaming import export_streaming_transducer, sherpa_state_shapes, state_names
from mt2kd_lib.export.sherpa_run import TAIL_PADDING_S
from mt2kd_lib.models.factory import build_student
from mt2kd_lib.models.zipformer.streaming import iter_chunks

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
VOCAB = 24
SR = 16000
CHUNK, LEFT = 16, 64
SYMBOLS = ["<blk>", "<sos/eos>", "<unk>"] + [f"▁w{i}" if i % 2 else f"p{i}" for i in range(3, VOCAB)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Dict:
    cfg = yaml.safe_load((REPO / "egs/mini/conf/student_tiny.yaml").read_text())
    cfg["encoder"]["preset"] = "tiny-causal"
    cfg["heads"] = {"asr": {**cfg["heads"]["asr"], "vocab_size": VOCAB}}
    torch.manual_seed(0)
    model = build_student(cfg).eval()
    with torch.no_grad():
        model.asr_head.joiner.encoder_proj.weight.mul_(30.0)
        model.asr_head.joiner.output_linear.bias.zero_()
    root = tmp_path_factory.mktemp("stream_export")
    (root / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(SYMBOLS)))
    files = export_streaming_transducer(model, root / "onnx", root / "tokens.txt", CHUNK, LEFT)
    return {"model": model, "files": files, "out": root / "onnx", "root": root}


def _session(path: Path) -> "ort.InferenceSession":
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _sherpa_init_shapes(meta: Dict[str, str], feature_dim: int = 80):
    """The initial state shapes sherpa-onnx's OnlineZipformer2TransducerModel builds from the metadata."""
    ints = {k: [int(v) for v in meta[k].split(",")] for k in
            ("encoder_dims", "query_head_dims", "value_head_dims", "num_heads", "num_encoder_layers",
             "cnn_module_kernels", "left_context_len")}
    shapes = []
    for i, n in enumerate(ints["num_encoder_layers"]):
        L, d = ints["left_context_len"][i], ints["encoder_dims"][i]
        key, val = ints["query_head_dims"][i] * ints["num_heads"][i], ints["value_head_dims"][i] * ints["num_heads"][i]
        k = ints["cnn_module_kernels"][i] // 2
        shapes += [(L, 1, key), (1, 1, L, 3 * d // 4), (L, 1, val), (L, 1, val), (1, d, k), (1, d, k)] * n
    return shapes + [(1, 128, 3, ((feature_dim - 1) // 2 - 1) // 2), (1,)]


def test_metadata_and_state_shapes_are_what_sherpa_builds(exported: Dict) -> None:
    meta = {p.key: p.value for p in onnx.load(str(exported["files"]["encoder"])).metadata_props}
    assert meta["model_type"] == "zipformer2"
    assert meta["T"] == str(2 * CHUNK + 13) and meta["decode_chunk_len"] == str(2 * CHUNK)
    assert meta["left_context_len"] == "64,32,16,8,16,32"
    encoder = exported["model"].encoder
    ours = [tuple(i.shape) for i in _session(exported["files"]["encoder"]).get_inputs()[1:]]
    ours = [tuple(1 if isinstance(d, str) else d for d in shape) for shape in ours]  # the dynamic batch axis
    assert ours == _sherpa_init_shapes(meta) == sherpa_state_shapes(encoder, LEFT, 1)
    # egs/mini's front end is narrower than sherpa-onnx's fixed 128-channel cache: the export pads it
    assert encoder.encoder_embed.layer3_channels < 128
    sess = _session(exported["files"]["encoder"])
    assert [i.name for i in sess.get_inputs()] == ["x", *state_names(exported["model"].encoder)]
    assert len(sess.get_outputs()) == len(sess.get_inputs())


def test_onnx_encoder_matches_torch_chunk_by_chunk(exported: Dict) -> None:
    model = exported["model"]
    sess = _session(exported["files"]["encoder"])
    g = torch.Generator().manual_seed(3)
    t_in = model.encoder.chunk_input_frames(CHUNK)
    x = torch.randn(3, 2 * CHUNK * 5 + t_in, 80, generator=g)  # 6 whole chunks, batch of 3
    lens = torch.full((3,), x.shape[1])
    states = model.encoder.get_init_states(LEFT, 3)
    onnx_states = [np.zeros(shape, dtype=s.numpy().dtype)
                   for s, shape in zip(states, sherpa_state_shapes(model.encoder, LEFT, 3))]
    names = [i.name for i in sess.get_inputs()]
    for chunk in list(iter_chunks(model.encoder, x, lens, CHUNK))[:6]:
        with torch.no_grad():
            out, _, states, _ = model.encoder.streaming_forward(chunk.features, chunk.feature_lens, states)
            ref = model.asr_head.joiner.encoder_proj(out).numpy()
        res = sess.run(None, dict(zip(names, [chunk.features.numpy(), *onnx_states])))
        onnx_states = res[1:]
        np.testing.assert_allclose(res[0], ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=0)
    assert onnx_states[-1].tolist() == [6 * CHUNK] * 3  # processed_lens


def _wave(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.1 * SR)) / SR
    segs = [(0.5 if k % 4 else 0.05) * np.sin(2 * np.pi * 150 * ((k + seed) % 7 + 1) * (1 + k % 3) * t)
            + (0.3 if k % 5 == 2 else 0.01) * rng.standard_normal(t.size) for k in range(int(seconds * 10))]
    return np.concatenate(segs).astype(np.float32)


def test_sherpa_onnx_online_recognizer_matches_our_streaming_greedy_search(exported: Dict) -> None:
    pytest.importorskip("sherpa_onnx")
    root = exported["root"]
    wavs = {}
    for seconds, seed in [(1.6, 0), (3.1, 1)]:
        path = root / f"utt{seed}.wav"
        sf.write(str(path), _wave(seconds, seed), SR, subtype="PCM_16")
        wavs[str(path)] = path
    cmd = [sys.executable, str(REPO / "tools/sherpa_onnx_run.py"), str(exported["out"]), *wavs, "--online",
           "--out", str(root / "sherpa.json")]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    sherpa = json.loads((root / "sherpa.json").read_text())

    model = exported["model"]
    extractor = make_fbank_extractor()
    t_in = model.encoder.chunk_input_frames(CHUNK)
    for key, path in wavs.items():
        samples, sr = sf.read(str(path), dtype="float32")
        samples = np.concatenate([samples, np.zeros(int(TAIL_PADDING_S * sr), dtype=np.float32)])
        feats = torch.from_numpy(np.asarray(extractor.extract(samples, sr), dtype=np.float32))[None]
        # sherpa-onnx decodes chunk k when k * decode_chunk_len + T < frames ready
        n_chunks = -(-(feats.shape[1] - t_in) // (2 * CHUNK))
        streamer = StreamingStudent(model, CHUNK, LEFT)
        state = streamer.start(1)
        chunks = list(iter_chunks(model.encoder, feats, torch.tensor([feats.shape[1]]), CHUNK))[:n_chunks]
        assert all(int(c.feature_lens[0]) == t_in for c in chunks)
        for c in chunks:
            state = streamer.step(state, c.features, c.feature_lens)
        ours = [i for i in streamer.tokens(state)[0] if i != SYMBOLS.index("<unk>")]
        ours_tokens = [SYMBOLS[i].replace("▁", " ") for i in ours]
        assert len(set(ours)) >= 3, f"degenerate test model output {ours}"
        assert sherpa[key]["tokens"] == ours_tokens, key
        assert sherpa[key]["text"].strip() == "".join(ours_tokens).strip()


def test_streaming_export_refuses_a_non_causal_model(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "egs/mini/conf/student_tiny.yaml").read_text())
    cfg["heads"] = {"asr": {**cfg["heads"]["asr"], "vocab_size": VOCAB}}
    (tmp_path / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(SYMBOLS)))
    with pytest.raises(ValueError, match="not causal"):
        export_streaming_transducer(build_student(cfg).eval(), tmp_path / "o", tmp_path / "tokens.txt", CHUNK, LEFT)
