"""Teachers loaded from tiny checkpoints in the official formats: shapes, rates, reference agreement, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import teacher_fixtures as fx  # tests/ is on sys.path (pytest rootdir-less import mode)

SR = 16000


def sine(seconds: float, freq: float = 440.0, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("teachers")
    return {
        "whisper": fx.write_tiny_whisper(d / "whisper_tiny.pt", n_audio_ctx=50),
        "beats": fx.write_tiny_beats(d / "beats_tiny.pt"),
        "ecapa": fx.write_tiny_ecapa(d / "embedding_model.ckpt"),
        "dir": d,
    }


# ----------------------------------------------------------------------------------------------- whisper
def _reference_whisper(path: Path, n_audio_ctx: int):
    """openai-whisper's own model from the checkpoint, with the encoder context set to ``n_audio_ctx``."""
    from whisper.model import ModelDimensions, Whisper

    ck = torch.load(path, weights_only=True)
    dims = ModelDimensions(**{**ck["dims"], "n_audio_ctx": n_audio_ctx})
    model = Whisper(dims)
    sd = dict(ck["model_state_dict"])
    # The checkpoint's (fp16) table, cut to the shorter context: what whisper.load_model would load.
    sd["encoder.positional_embedding"] = sd["encoder.positional_embedding"][:n_audio_ctx]
    model.load_state_dict(sd)
    return model.float().eval()


def test_whisper_full_context_matches_reference(ckpts):
    from whisper.audio import log_mel_spectrogram
    from mt2kd_lib.teachers.whisper import WhisperTeacher

    audio = sine(1.0)  # exactly n_audio_ctx=50 frames: the reference encoder's own input size
    ref = _reference_whisper(ckpts["whisper"], 50)
    mel = log_mel_spectrogram(torch.from_numpy(audio), n_mels=80)[:, :100]
    with torch.no_grad():
        expected = ref.embed_audio(mel[None])[0].numpy()
    teacher = WhisperTeacher(ckpts["whisper"])
    (out,) = teacher.infer_batch([audio])
    assert out.shape == (50, 32) and out.dtype == np.float32
    assert teacher.spec.frame_shift == 0.02 and teacher.num_frames(len(audio)) == 50
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)

    # Intermediate layer 1 = output of block 1, compared with a hook on the reference encoder.
    seen = {}
    h = ref.encoder.blocks[1].register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    with torch.no_grad():
        ref.embed_audio(mel[None])
    h.remove()
    (mid,) = WhisperTeacher(ckpts["whisper"], layer=1).infer_batch([audio])
    np.testing.assert_allclose(mid, seen["x"][0].numpy(), atol=1e-4, rtol=1e-4)
    assert not np.allclose(mid, out, atol=1e-2)


def test_whisper_unpadded_short_audio(ckpts):
    from whisper.audio import log_mel_spectrogram
    from mt2kd_lib.teachers.whisper import WhisperTeacher

    teacher = WhisperTeacher(ckpts["whisper"])
    short, odd = sine(0.62, 300), sine(0.3, 700, seed=1)[:4810]  # 62 mels -> 31 frames; 30 mels -> 15
    outs = teacher.infer_batch([short, odd, short.copy()])
    assert [o.shape for o in outs] == [(31, 32), (15, 32), (31, 32)]
    assert [teacher.num_frames(len(a)) for a in (short, odd)] == [31, 15]
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
    # The reference model built for exactly 31 positions agrees with our sliced positional embedding.
    ref = _reference_whisper(ckpts["whisper"], 31)
    mel = log_mel_spectrogram(torch.from_numpy(short), n_mels=80)[:, :62]
    with torch.no_grad():
        expected = ref.embed_audio(mel[None])[0].numpy()
    np.testing.assert_allclose(outs[0], expected, atol=1e-4, rtol=1e-4)
    # Batch composition does not change results.
    (alone,) = teacher.infer_batch([odd])
    np.testing.assert_allclose(alone, outs[1], atol=1e-6)


def test_whisper_errors(ckpts, tmp_path):
    from mt2kd_lib.teachers.whisper import WhisperTeacher

    teacher = WhisperTeacher(ckpts["whisper"])
    with pytest.raises(ValueError, match="utterance 0: .*longer than whisper's 1.00s context"):
        teacher.infer_batch([sine(1.2)])
    with pytest.raises(ValueError, match="utterance 1: .*shorter than teacher whisper"):
        teacher.infer_batch([sine(0.5), np.zeros(100, np.float32)])
    with pytest.raises(ValueError, match="utterance 0: audio contains NaN"):
        teacher.infer_batch([np.full(1600, np.nan, np.float32)])
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        WhisperTeacher(tmp_path / "nope.pt")
    torch.save({"model": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not in the official format.*'model'"):
        WhisperTeacher(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="layer 3 out of range"):
        WhisperTeacher(ckpts["whisper"], layer=3)
    ck = torch.load(ckpts["whisper"], weights_only=True)
    del ck["model_state_dict"]["encoder.blocks.2.mlp.0.weight"]
    torch.save(ck, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing \\['encoder.blocks.2.mlp.0.weight'\\]"):
        WhisperTeacher(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------------------------- BEATs
def test_beats_relative_position_buckets():
    from mt2kd_lib.teachers.beats import relative_position_bucket

    rel = torch.tensor([0, -5, 5, -100, 100, -10000, 10000])
    # half=160, max_exact=80; |100| -> 80 + floor(ln(1.25)/ln(10) * 80) = 87; far distances clamp to 159
    assert relative_position_bucket(rel, 320, 800).tolist() == [0, 5, 165, 87, 247, 159, 319]


def test_beats_official_layout_outputs(ckpts):
    from mt2kd_lib.teachers.beats import BeatsTeacher

    probs_t = BeatsTeacher(ckpts["beats"])
    hid_t = BeatsTeacher(ckpts["beats"], output="hidden")
    assert probs_t.spec.dim == 527 and probs_t.spec.level == "utterance"
    assert probs_t.spec.output_kind == "probabilities" and probs_t.spec.task == "at"
    assert hid_t.spec.dim == 48 and hid_t.spec.frame_shift == pytest.approx(0.16)
    a, b = sine(1.0, 500), sine(0.7, 2000, seed=2)
    pa, pb, pa2 = probs_t.infer_batch([a, b, a.copy()])
    assert pa.shape == (527,) and ((pa > 0) & (pa < 1)).all()
    np.testing.assert_allclose(pa, pa2, atol=1e-6)
    assert np.abs(pa - pb).max() > 1e-3  # different inputs, different tags
    ha, hb = hid_t.infer_batch([a, b])
    # 1 s: 98 fbank frames -> 6 time patches; 0.7 s: 68 frames -> 4
    assert ha.shape == (6, 48) and hb.shape == (4, 48)
    assert hid_t.num_frames(len(a)) == 6 and hid_t.num_frames(len(b)) == 4
    # Official pooling: mean over all patches of the per-patch logits, then sigmoid. The predictor is linear and
    # every time patch has the same number of frequency patches, so it equals the predictor on the mean hidden.
    w, bias = probs_t.model.predictor.weight.detach().numpy(), probs_t.model.predictor.bias.detach().numpy()
    expected = 1 / (1 + np.exp(-(ha.mean(0) @ w.T + bias)))
    np.testing.assert_allclose(pa, expected, atol=1e-5)
    # Intermediate layer differs from the final one.
    (h0,) = BeatsTeacher(ckpts["beats"], output="hidden", layer=0).infer_batch([a])
    assert h0.shape == (6, 48) and not np.allclose(h0, ha, atol=1e-3)


def test_beats_kaldi_fbank_matches_kaldi_native_fbank():
    import kaldi_native_fbank as knf
    from mt2kd_lib.teachers.beats import kaldi_fbank

    audio = sine(0.5, 1000.0, seed=5) * 32768.0
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80  # knf refuses 128 bins (filters narrower than an FFT bin); same code path
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(SR, audio.tolist())
    fb.input_finished()
    ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    ours = kaldi_fbank(torch.from_numpy(audio)[None], 80)[0].numpy()
    assert ours.shape == ref.shape == (48, 80)  # 1 + (8000 - 400) // 160
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)

    fb128 = kaldi_fbank(torch.from_numpy(audio)[None], 128)[0].numpy()
    assert fb128.shape == (48, 128) and np.isfinite(fb128).all()
    # Kaldi mel scale (20 Hz..8 kHz): the 1 kHz tone peaks in the bin whose centre is nearest 1 kHz.
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    centres_mel = mel(20) + (np.arange(128) + 1) * (mel(8000) - mel(20)) / 129
    assert int(fb128.mean(0).argmax()) == int(np.abs(centres_mel - mel(1000)).argmin())


def test_beats_strict_load_errors(ckpts, tmp_path):
    from mt2kd_lib.teachers.beats import BeatsTeacher

    ck = torch.load(ckpts["beats"], weights_only=True)
    renamed = dict(ck["model"])
    renamed["encoder.layers.1.self_attn.key_proj.weight"] = renamed.pop("encoder.layers.1.self_attn.k_proj.weight")
    torch.save({"cfg": ck["cfg"], "model": renamed}, tmp_path / "renamed.pt")
    with pytest.raises(ValueError, match=r"missing keys \['encoder.layers.1.self_attn.k_proj.weight'\], "
                                         r"unexpected keys \['encoder.layers.1.self_attn.key_proj.weight'\]"):
        BeatsTeacher(tmp_path / "renamed.pt")
    torch.save(ck["model"], tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not in the official format"):
        BeatsTeacher(tmp_path / "bare.pt")
    torch.save({"cfg": {**ck["cfg"], "finetuned_model": False},
                "model": {k: v for k, v in ck["model"].items() if not k.startswith("predictor.")}},
               tmp_path / "pretrained.pt")
    with pytest.raises(ValueError, match="not fine-tuned"):
        BeatsTeacher(tmp_path / "pretrained.pt")
    assert BeatsTeacher(tmp_path / "pretrained.pt", output="hidden").spec.dim == 48
    with pytest.raises(ValueError, match="utterance 0: 0.150s of audio is shorter than teacher beats"):
        BeatsTeacher(ckpts["beats"]).infer_batch([sine(0.15)])
    with pytest.raises(FileNotFoundError):
        BeatsTeacher(tmp_path / "absent.pt")


# ----------------------------------------------------------------------------------------------- ECAPA
def test_ecapa_features_speechbrain_recipe():
    from mt2kd_lib.teachers.ecapa import EcapaFeatures, speechbrain_fbank_matrix

    fm = speechbrain_fbank_matrix(80)
    assert fm.shape == (201, 80) and float(fm.max()) <= 1.0 and (fm >= 0).all()
    fe = EcapaFeatures(80)
    wav = torch.from_numpy(sine(0.5, 1000.0, seed=3))[None]
    feats, db = fe(wav)[0], fe.log_mel(wav)[0]
    assert feats.shape == db.shape == (51, 80)  # center=True: 1 + 8000 // 160
    assert torch.allclose(feats.mean(0), torch.zeros(80), atol=1e-4)  # sentence mean normalisation
    assert torch.allclose(feats, db - db.mean(0), atol=1e-5)
    assert float(db.min()) >= float(db.max()) - 80.0 - 1e-4  # top_db floor
    # The 1 kHz tone lands in the filter whose centre is nearest 1 kHz on SpeechBrain's mel grid.
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 82)
    centres = 700 * (10 ** (mel[1:-1] / 2595) - 1)
    assert int(db[5:-5].mean(0).argmax()) == int(np.abs(centres - 1000).argmin())


def test_ecapa_official_layout(ckpts, tmp_path):
    from mt2kd_lib.teachers.ecapa import EcapaTeacher

    t = EcapaTeacher(ckpts["ecapa"])
    assert t.spec.dim == 24 and t.spec.level == "utterance" and t.spec.task == "sv"
    a, b = sine(1.0, 200), sine(0.6, 330, seed=4)
    ea, eb, ea_loud = t.infer_batch([a, b, 3.0 * a])
    assert ea.shape == (24,) and eb.shape == (24,)
    assert np.abs(ea - eb).max() > 1e-3
    # Log-mel in dB with per-utterance max floor and mean removal: a gain change cancels out.
    np.testing.assert_allclose(ea, ea_loud, atol=1e-3)
    (ea_alone,) = t.infer_batch([a])
    np.testing.assert_allclose(ea, ea_alone, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="utterance 0: .* shorter than teacher ecapa"):
        t.infer_batch([np.zeros(300, np.float32)])

    sd = torch.load(ckpts["ecapa"], weights_only=True)
    bad = {k: v for k, v in sd.items() if k != "blocks.2.se_block.conv2.conv.bias"}
    torch.save(bad, tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match=r"missing keys \['blocks.2.se_block.conv2.conv.bias'\]"):
        EcapaTeacher(tmp_path / "missing.ckpt")
    renamed = {k.replace("asp.tdnn.", "asp.attn."): v for k, v in sd.items()}
    torch.save(renamed, tmp_path / "renamed.ckpt")
    with pytest.raises(ValueError, match="missing key 'asp.tdnn.conv.conv.weight'"):
        EcapaTeacher(tmp_path / "renamed.ckpt")
    torch.save({"model": sd}, tmp_path / "wrapped.ckpt")
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        EcapaTeacher(tmp_path / "wrapped.ckpt")


# ----------------------------------------------------------------------------------------------- ONNX
def test_onnx_teacher_matches_torch(tmp_path):
    from mt2kd_lib.teachers.onnx_teacher import OnnxTeacher, kaldi_fbank

    torch.manual_seed(0)
    enc = fx.TinyFbankEncoder().eval()
    fx.export_onnx(enc, (torch.randn(1, 50, 80),), tmp_path / "enc.onnx", ["x"],
                   {"x": {0: "b", 1: "t"}, "y": {0: "b", 1: "t"}})
    t = OnnxTeacher(tmp_path / "enc.onnx", input="fbank", level="frame", frame_shift=0.02)
    assert t.spec.dim == 16  # read from the model
    audio = sine(0.8, 600)
    (out,) = t.infer_batch([audio])
    with torch.no_grad():
        expected = enc(torch.from_numpy(kaldi_fbank(audio, 80, SR, 1.0))[None])[0].numpy()
    assert out.shape == expected.shape == (38, 16)  # 78 fbank frames -> (78-3)//2+1
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="config dim 20 but the model's output dim is 16"):
        OnnxTeacher(tmp_path / "enc.onnx", input="fbank", level="frame", frame_shift=0.02, dim=20)
    with pytest.raises(ValueError, match="needs rank 2"):
        OnnxTeacher(tmp_path / "enc.onnx", input="fbank", level="utterance")
    with pytest.raises(ValueError, match="model expects 80 fbank bins but num_mel_bins=128"):
        OnnxTeacher(tmp_path / "enc.onnx", input="fbank", level="frame", frame_shift=0.02, num_mel_bins=128)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxTeacher(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        OnnxTeacher(tmp_path / "junk.onnx")

    pool = fx.TinyWaveformPooler().eval()
    fx.export_onnx(pool, (torch.randn(1, 3200), torch.tensor([3200])), tmp_path / "pool.onnx", ["wav", "len"],
                   {"wav": {0: "b", 1: "n"}, "len": {0: "b"}, "y": {0: "b"}})
    tw = OnnxTeacher(tmp_path / "pool.onnx", input="waveform", level="utterance", task="sv", name="pool")
    wav = sine(0.5, 250)
    (emb,) = tw.infer_batch([wav])
    with torch.no_grad():
        ref = pool(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))[0].numpy()
    assert emb.shape == (12,)
    np.testing.assert_allclose(emb, ref, atol=1e-5)


# ----------------------------------------------------------------------------------------------- registry
def test_registry_config(ckpts, tmp_path):
    from mt2kd_lib.teachers.registry import build_teacher, load_teachers_config

    cfg = {"teachers": {
        "whisper": {"kind": "whisper", "checkpoint": str(ckpts["whisper"]), "layer": -1, "dim": 32},
        "beats": {"checkpoint": str(ckpts["beats"]), "dim": 527},
        "spk": {"kind": "ecapa", "checkpoint": str(ckpts["ecapa"])},
    }}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    teachers = load_teachers_config(tmp_path / "t.yaml")
    assert {k: (t.spec.name, t.spec.dim) for k, t in teachers.items()} == {
        "whisper": ("whisper", 32), "beats": ("beats", 527), "spk": ("spk", 24)}
    only = load_teachers_config(tmp_path / "t.yaml", only=["spk"])
    assert list(only) == ["spk"]

    cfg["teachers"]["spk"]["dim"] = 192
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="teacher 'spk' declares dim 192 but the loaded model gives dim 24"):
        load_teachers_config(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="unknown teacher kind 'wav2vec'"):
        build_teacher("wav2vec", checkpoint="x")
    with pytest.raises(TypeError, match="teacher 'ecapa' \\(kind ecapa\\): bad arguments"):
        build_teacher("ecapa", checkpoint=str(ckpts["ecapa"]), layer=3)
    (tmp_path / "empty.yaml").write_text("foo: 1\n")
    with pytest.raises(ValueError, match="non-empty mapping under 'teachers:'"):
        load_teachers_config(tmp_path / "empty.yaml")


def test_beats_building_blocks_match_published_formulation():
    """Our pos_conv and attention against the published (fairseq-style) formulation written independently."""
    import math

    from mt2kd_lib.teachers.beats import BeatsAttention, BEATsConfig, WeightNormConv1d

    torch.manual_seed(0)
    # pos_conv: torch's own weight_norm(dim=2) on a grouped conv, as the official module is built.
    ours = WeightNormConv1d(8, 4, 2)
    ref = torch.nn.utils.weight_norm(torch.nn.Conv1d(8, 8, 4, padding=2, groups=2), name="weight", dim=2)
    with torch.no_grad():
        ref.weight_g.copy_(torch.rand(1, 1, 4) + 0.5)
        ref.weight_v.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())  # strict: the official key names weight_g, weight_v, bias
    x = torch.randn(2, 8, 11)
    torch.testing.assert_close(ours(x), ref(x))

    cfg = BEATsConfig(encoder_embed_dim=16, encoder_attention_heads=2, num_buckets=16, max_distance=32,
                      relative_position_embedding=True, gru_rel_pos=True)
    att = BeatsAttention(cfg, has_rel_bias=True)
    with torch.no_grad():
        for p in att.parameters():
            p.normal_(0, 0.5)
    b, n, d, h = 2, 7, 16, 2
    x = torch.randn(b, n, d)
    bias = att.compute_bias(n)
    got = att(x, bias)
    # Published steps: (T, B, C) layout, q scaled by head_dim**-0.5 / 32, scores = (qk - max) * 32,
    # gate from the unscaled query viewed as (B, H, L, head_dim), bias repeated per batch as (B*H, L, S).
    xt = x.transpose(0, 1)
    q, k, v = att.q_proj(xt), att.k_proj(xt), att.v_proj(xt)
    scaling, alpha = (d // h) ** -0.5, 32
    q = q * scaling / alpha
    q = q.contiguous().view(n, b * h, d // h).transpose(0, 1)
    k = k.contiguous().view(n, b * h, d // h).transpose(0, 1)
    v = v.contiguous().view(n, b * h, d // h).transpose(0, 1)
    w = torch.bmm(q, k.transpose(1, 2))
    w = (w - w.max(dim=-1, keepdim=True)[0]) * alpha
    pb = bias.unsqueeze(0).repeat(b, 1, 1, 1).view(b * h, n, n)
    ql = q.view(b, h, n, d // h) * alpha / scaling
    ga, gb = torch.sigmoid(att.grep_linear(ql).view(b, h, n, 2, 4).sum(-1)).chunk(2, dim=-1)
    w = w + (ga * (gb * att.grep_a - 1.0) + 2.0).view(b * h, n, 1) * pb
    out = torch.bmm(torch.softmax(w, dim=-1), v).transpose(0, 1).contiguous().view(n, b, d)
    expected = att.out_proj(out).transpose(0, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert math.isfinite(float(got.abs().max()))


def test_registry_lazy_import_error(monkeypatch):
    from mt2kd_lib.teachers import registry

    monkeypatch.setitem(registry.KINDS, "ghost", ("mt2kd_lib.teachers.no_such_module", "GhostTeacher"))
    with pytest.raises(ImportError, match="teacher kind 'ghost' needs module mt2kd_lib.teachers.no_such_module"):
        registry.build_teacher("ghost")
