"""icefall Zipformer2 checkpoints <-> mt2kd: layout, round trips, bad checkpoints, teacher and initialisation.

The reference layout below is written from icefall's published module definitions
(egs/librispeech/ASR/zipformer/{model.py,zipformer.py,subsampling.py,decoder.py,joiner.py}): the key names each
module registers and the shapes its constructor gives them, per stack / layer. It is independent of mt2kd's own
key mapping, which is what the tests check against it.
"""

import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
import yaml

from mt2kd_lib.data.bpe import bpe_difference, train_bpe
from mt2kd_lib.models.encoder_presets import ZipformerConfig, get_config
from mt2kd_lib.models.factory import build_student
from mt2kd_lib.models.icefall_convert import (
    icefall_model_args,
    icefall_to_mt2kd,
    load_icefall_weights,
    mt2kd_to_icefall,
    read_icefall_checkpoint,
)
from mt2kd_lib.models.icefall_init import init_from_icefall
from mt2kd_lib.models.icefall_keys import config_from_shapes, encoder_shapes
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
Layout = Dict[str, Tuple[int, ...]]


# --------------------------------------------------------------------------------------- reference layout
def icefall_layout(cfg: ZipformerConfig, vocab: int = 0, decoder_dim: int = 0, joiner_dim: int = 0,
                   context_size: int = 2, use_ctc: bool = False) -> Layout:
    """Keys and shapes of icefall's AsrModel state_dict (vocab=0: encoder_embed + encoder only)."""
    L: Layout = {}
    # Conv2dSubsampling: Sequential(Conv2d(1,8,3), ScaleGrad, Balancer, SwooshR, Conv2d(8,32,3,stride 2), Balancer,
    # SwooshR, Conv2d(32,128,3,stride (1,2)), Balancer, SwooshR) -> indices 0, 4, 7 hold weights.
    for idx, (o, i) in {0: (8, 1), 4: (32, 8), 7: (128, 32)}.items():
        L[f"encoder_embed.conv.{idx}.weight"] = (o, i, 3, 3)
        L[f"encoder_embed.conv.{idx}.bias"] = (o,)
    L["encoder_embed.convnext.depthwise_conv.weight"] = (128, 1, 7, 7)  # ConvNeXt(128, hidden x3, 7x7)
    L["encoder_embed.convnext.depthwise_conv.bias"] = (128,)
    L["encoder_embed.convnext.pointwise_conv1.weight"] = (384, 128, 1, 1)
    L["encoder_embed.convnext.pointwise_conv1.bias"] = (384,)
    L["encoder_embed.convnext.pointwise_conv2.weight"] = (128, 384, 1, 1)
    L["encoder_embed.convnext.pointwise_conv2.bias"] = (128,)
    out_width = (((cfg.feature_dim - 1) // 2) - 1) // 2
    d0 = cfg.encoder_dim[0]
    L["encoder_embed.out.weight"] = (d0, out_width * 128)
    L["encoder_embed.out.bias"] = (d0,)
    L["encoder_embed.out_norm.log_scale"] = ()
    L["encoder_embed.out_norm.bias"] = (d0,)

    qd, vd, pd = cfg.query_head_dim, cfg.value_head_dim, cfg.pos_head_dim
    for s, (n, ds, d, ff, h, k) in enumerate(zip(cfg.num_encoder_layers, cfg.downsampling_factor, cfg.encoder_dim,
                                                 cfg.feedforward_dim, cfg.num_heads, cfg.cnn_module_kernel)):
        stack = f"encoder.encoders.{s}."
        inner = stack + ("encoder." if ds != 1 else "")  # DownsampledZipformer2Encoder wraps the encoder
        for j in range(n):
            p = f"{inner}layers.{j}."
            L[p + "bypass.bypass_scale"] = (d,)
            L[p + "bypass_mid.bypass_scale"] = (d,)
            L[p + "bypass_scale"] = (d,)  # registered by Zipformer2EncoderLayer, never used in forward
            L[p + "self_attn_weights.in_proj.weight"] = ((2 * qd + pd) * h, d)
            L[p + "self_attn_weights.in_proj.bias"] = ((2 * qd + pd) * h,)
            L[p + "self_attn_weights.linear_pos.weight"] = (h * pd, cfg.pos_dim)
            for a in ("self_attn1", "self_attn2"):
                L[p + f"{a}.in_proj.weight"] = (h * vd, d)
                L[p + f"{a}.in_proj.bias"] = (h * vd,)
                L[p + f"{a}.out_proj.weight"] = (d, h * vd)
                L[p + f"{a}.out_proj.bias"] = (d,)
            for f, hidden in (("feed_forward1", ff * 3 // 4), ("feed_forward2", ff), ("feed_forward3", ff * 5 // 4)):
                L[p + f"{f}.in_proj.weight"] = (hidden, d)
                L[p + f"{f}.in_proj.bias"] = (hidden,)
                L[p + f"{f}.out_proj.weight"] = (d, hidden)  # ActivationDropoutAndLinear holds weight/bias itself
                L[p + f"{f}.out_proj.bias"] = (d,)
            hc = 3 * d // 4
            L[p + "nonlin_attention.in_proj.weight"] = (3 * hc, d)
            L[p + "nonlin_attention.in_proj.bias"] = (3 * hc,)
            L[p + "nonlin_attention.out_proj.weight"] = (d, hc)
            L[p + "nonlin_attention.out_proj.bias"] = (d,)
            for c in ("conv_module1", "conv_module2"):
                L[p + f"{c}.in_proj.weight"] = (2 * d, d)
                L[p + f"{c}.in_proj.bias"] = (2 * d,)
                if cfg.causal:  # ChunkCausalDepthwiseConv1d
                    L[p + f"{c}.depthwise_conv.causal_conv.weight"] = (d, 1, (k + 1) // 2)
                    L[p + f"{c}.depthwise_conv.causal_conv.bias"] = (d,)
                    L[p + f"{c}.depthwise_conv.chunkwise_conv.weight"] = (d, 1, k)
                    L[p + f"{c}.depthwise_conv.chunkwise_conv.bias"] = (d,)
                    L[p + f"{c}.depthwise_conv.chunkwise_conv_scale"] = (2, d, k)
                else:
                    L[p + f"{c}.depthwise_conv.weight"] = (d, 1, k)
                    L[p + f"{c}.depthwise_conv.bias"] = (d,)
                L[p + f"{c}.out_proj.weight"] = (d, d)
                L[p + f"{c}.out_proj.bias"] = (d,)
            L[p + "norm.log_scale"] = ()
            L[p + "norm.bias"] = (d,)
        if ds != 1:
            L[stack + "downsample.bias"] = (ds,)  # SimpleDownsample: one weight per frame it merges
            L[stack + "out_combiner.bypass_scale"] = (d,)
    L["encoder.downsample_output.bias"] = (2,)
    if vocab:
        enc_dim = max(cfg.encoder_dim)
        L["decoder.embedding.weight"] = (vocab, decoder_dim)
        if context_size > 1:
            L["decoder.conv.weight"] = (decoder_dim, 4, context_size)  # groups = decoder_dim // 4
        L["joiner.encoder_proj.weight"] = (joiner_dim, enc_dim)
        L["joiner.encoder_proj.bias"] = (joiner_dim,)
        L["joiner.decoder_proj.weight"] = (joiner_dim, decoder_dim)
        L["joiner.decoder_proj.bias"] = (joiner_dim,)
        L["joiner.output_linear.weight"] = (vocab, joiner_dim)
        L["joiner.output_linear.bias"] = (vocab,)
        L["simple_am_proj.weight"] = (vocab, enc_dim)
        L["simple_am_proj.bias"] = (vocab,)
        L["simple_lm_proj.weight"] = (vocab, decoder_dim)
        L["simple_lm_proj.bias"] = (vocab,)
        if use_ctc:  # Sequential(Dropout, Linear, LogSoftmax)
            L["ctc_output.1.weight"] = (vocab, enc_dim)
            L["ctc_output.1.bias"] = (vocab,)
    return L


def icefall_state(layout: Layout, seed: int = 0) -> Dict[str, torch.Tensor]:
    """An icefall-layout state_dict with random (but well-scaled) weights."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in layout.items():
        if k.endswith("log_scale"):
            out[k] = torch.tensor(0.1 * seed)
        elif k.endswith("bypass_scale"):
            out[k] = torch.rand(shape, generator=g) * 0.5 + 0.25
        elif k.endswith(".weight") and len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            out[k] = torch.randn(shape, generator=g) / fan_in ** 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.1
    return out


HEAD = dict(vocab_size=40, decoder_dim=32, joiner_dim=24, context_size=2)


def student_cfg(preset: str, use_ctc: bool = False, **head) -> dict:
    return {"encoder": preset, "heads": {"asr": {**HEAD, **head, "use_ctc": use_ctc}}}


def fbank(seed: int = 0, n: int = 2, t: int = 150) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, 80, generator=g), torch.tensor([t, t - 37][:n])


@torch.no_grad()
def outputs(model) -> Tuple[torch.Tensor, torch.Tensor]:
    """Encoder output and full transducer logits (N, T, U+1, V) for fixed inputs."""
    model.eval()
    x, lens = fbank()
    enc, _ = model.encoder(x, lens)
    y = torch.tensor([[0, 5, 7, 3, 9], [0, 2, 2, 11, 1]])
    dec = model.asr_head.decoder(y)
    logits = model.asr_head.joiner(enc.unsqueeze(2), dec.unsqueeze(1))
    return enc, logits


def diff_message(expected: Layout, found: Layout) -> str:
    for k in expected:
        if k not in found or found[k] != expected[k]:
            return f"{k}: expected {expected[k]}, found {found.get(k)}"
    return f"unexpected {[k for k in found if k not in expected][:3]}"


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("preset,use_ctc", [("tiny", False), ("tiny-causal", True), ("xs", False)])
def test_written_layout_is_icefalls(preset: str, use_ctc: bool) -> None:
    model = build_student(student_cfg(preset, use_ctc))
    ckpt = mt2kd_to_icefall(model)
    found = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    ref = icefall_layout(get_config(preset), HEAD["vocab_size"], HEAD["decoder_dim"], HEAD["joiner_dim"],
                         HEAD["context_size"], use_ctc)
    assert found == ref, diff_message(ref, found)
    # The encoder part the converter expects for a config is the same table.
    enc_ref = {k: v for k, v in ref.items() if k.startswith("encoder")}
    assert encoder_shapes(get_config(preset)) == enc_ref
    # icefall's train params: what its decode.py options are built from.
    assert ckpt["encoder_dim"] == ",".join(map(str, get_config(preset).encoder_dim))
    assert ckpt["vocab_size"] == HEAD["vocab_size"] and ckpt["use_ctc"] is use_ctc
    args = icefall_model_args(ckpt)
    assert f"--num-encoder-layers {ckpt['num_encoder_layers']}" in args and "--decoder-dim 32" in args
    assert f"--causal {int(get_config(preset).causal)}" in args


@pytest.mark.parametrize("preset", ["tiny", "xs", "tiny-causal", "S", "M"])
def test_preset_inferred_from_shapes(preset: str) -> None:
    shapes = icefall_layout(get_config(preset))
    inferred = config_from_shapes(shapes)
    want = get_config(preset)
    for f in ("num_encoder_layers", "downsampling_factor", "encoder_dim", "feedforward_dim", "num_heads",
              "cnn_module_kernel", "query_head_dim", "value_head_dim", "pos_head_dim", "pos_dim", "causal"):
        assert getattr(inferred, f) == getattr(want, f), f


# --------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("form", ["epoch", "pretrained", "bare", "ddp"])
def test_icefall_checkpoint_to_mt2kd_and_back(tmp_path: Path, form: str) -> None:
    cfg = get_config("tiny")
    layout = icefall_layout(cfg, HEAD["vocab_size"], HEAD["decoder_dim"], HEAD["joiner_dim"], use_ctc=True)
    state = icefall_state(layout, seed=3)
    if form == "epoch":  # icefall's save_checkpoint: model, model_avg, optimizer..., then the params
        obj = {"model": state, "model_avg": state, "optimizer": None, "sampler": None, "batch_idx_train": 1000,
               "encoder_dim": ",".join(map(str, cfg.encoder_dim))}
    elif form == "pretrained":
        obj = {"model": state}
    elif form == "bare":
        obj = state
    else:
        obj = {"model": {f"module.{k}": v for k, v in state.items()}}
    torch.save(obj, tmp_path / "icefall.pt")

    imp = icefall_to_mt2kd(tmp_path / "icefall.pt")
    assert imp.model_config["heads"]["asr"] == {**HEAD, "blank_id": 0, "use_ctc": True}
    assert imp.skipped == []
    model = build_student(imp.model_config)
    model.load_state_dict(imp.state)  # strict: every tensor of the model came from the checkpoint
    enc1, logits1 = outputs(model)
    assert torch.isfinite(logits1).all() and enc1.abs().max() > 0.1

    # Back to icefall's layout: every tensor equal to the original (the unused bypass_scale is not ours to keep).
    back = mt2kd_to_icefall(model)["model"]
    assert set(back) == set(layout)
    for k, v in state.items():
        if not k.endswith("layers.0.bypass_scale"):
            assert torch.equal(back[k], v), k
    torch.save({"model": back}, tmp_path / "back.pt")
    model2 = build_student(icefall_to_mt2kd(tmp_path / "back.pt").model_config)
    load_icefall_weights(model2, tmp_path / "back.pt", parts="all")
    enc2, logits2 = outputs(model2)
    torch.testing.assert_close(enc2, enc1, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits2, logits1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "tiny-causal"])
def test_student_to_icefall_and_back(tmp_path: Path, preset: str) -> None:
    torch.manual_seed(0)
    model = build_student(student_cfg(preset)).eval()
    enc1, logits1 = outputs(model)
    torch.save(mt2kd_to_icefall(model), tmp_path / "epoch-3.pt")
    imp = icefall_to_mt2kd(tmp_path / "epoch-3.pt")
    assert "params" in imp.encoder_source  # read from the params written next to the model
    assert get_config(imp.model_config["encoder"]) == get_config(preset)
    back = build_student(imp.model_config)
    back.load_state_dict(imp.state)
    enc2, logits2 = outputs(back)
    torch.testing.assert_close(enc2, enc1, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits2, logits1, atol=1e-5, rtol=0)


def test_cli_both_ways(tmp_path: Path) -> None:
    torch.manual_seed(1)
    cfg = student_cfg("tiny")
    model = build_student(cfg).eval()
    (tmp_path / "exp").mkdir()
    torch.save({"model": model.state_dict(), "model_config": cfg}, tmp_path / "exp" / "epoch-1.pt")
    cli = [sys.executable, str(REPO / "local/convert_icefall.py")]
    run = dict(cwd=REPO, capture_output=True, text=True)
    r = subprocess.run(cli + ["to-icefall", "--exp-dir", str(tmp_path / "exp"), "--out", str(tmp_path / "ic.pt")],
                       **run)
    assert r.returncode == 0, r.stderr
    assert "--encoder-dim 64,96,96,96,96,96" in r.stdout
    r = subprocess.run(cli + ["to-mt2kd", "--icefall-checkpoint", str(tmp_path / "ic.pt"), "--out",
                              str(tmp_path / "mt" / "epoch-1.pt")], **run)
    assert r.returncode == 0, r.stderr
    from mt2kd_lib.models.factory import model_from_checkpoint

    enc1, logits1 = outputs(model)
    enc2, logits2 = outputs(model_from_checkpoint(tmp_path / "mt" / "epoch-1.pt"))
    torch.testing.assert_close(logits2, logits1, atol=1e-5, rtol=0)
    # A wrong --preset is refused with the first differing key.
    r = subprocess.run(cli + ["to-mt2kd", "--icefall-checkpoint", str(tmp_path / "ic.pt"), "--preset", "xs",
                              "--out", str(tmp_path / "x.pt")], **run)
    assert r.returncode != 0 and "encoder_embed.out.weight" in r.stderr and not (tmp_path / "x.pt").exists()


# --------------------------------------------------------------------------------------- bad checkpoints
def _save(path: Path, preset: str, vocab: int = HEAD["vocab_size"], drop: str = "", extra: str = "") -> Path:
    layout = icefall_layout(get_config(preset), vocab, HEAD["decoder_dim"], HEAD["joiner_dim"])
    state = icefall_state(layout)
    if drop:
        del state[drop]
    if extra:
        state[extra] = torch.zeros(3)
    torch.save({"model": state}, path)
    return path


def test_other_preset_is_refused_and_nothing_loads(tmp_path: Path) -> None:
    ckpt = _save(tmp_path / "xs.pt", "xs")
    model = build_student(student_cfg("tiny"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"encoder_embed\.out\.weight has shape \[96, 2432\] in the checkpoint "
                                         r"but \[64, 2432\] in the model"):
        load_icefall_weights(model, ckpt, parts="all")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"encoder_embed\.out\.weight .*\[96, 2432\].*\[64, 2432\]"):
        icefall_to_mt2kd(ckpt, preset="tiny")


def test_other_vocabulary_is_refused(tmp_path: Path) -> None:
    ckpt = _save(tmp_path / "v.pt", "tiny", vocab=50)
    model = build_student(student_cfg("tiny"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"decoder\.embedding\.weight has shape \[50, 32\] in the checkpoint but "
                                         r"\[40, 32\] in the model"):
        load_icefall_weights(model, ckpt, parts="all")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # The encoder alone fits whatever the vocabulary; the head is reported as not loaded.
    counts = load_icefall_weights(model, ckpt, parts="encoder")
    assert counts["asr_head"] == 0 and counts["encoder"] == len(model.encoder.state_dict())
    assert torch.equal(model.asr_head.joiner.output_linear.weight, before["asr_head.joiner.output_linear.weight"])


def test_missing_and_unknown_keys(tmp_path: Path) -> None:
    key = "encoder.encoders.2.encoder.layers.0.conv_module1.in_proj.bias"
    ckpt = _save(tmp_path / "m.pt", "tiny", drop=key)
    with pytest.raises(ValueError, match=rf"key {key} \(shape \[192\]\) is missing"):
        icefall_to_mt2kd(ckpt)
    with pytest.raises(ValueError, match=rf"{key}.*missing"):
        load_icefall_weights(build_student(student_cfg("tiny")), ckpt)
    head_key = "joiner.decoder_proj.bias"
    with pytest.raises(ValueError, match=rf"{head_key} \(shape \[24\]\) is missing"):
        icefall_to_mt2kd(_save(tmp_path / "h.pt", "tiny", drop=head_key))
    with pytest.raises(ValueError, match=r"key lm_head\.weight is not part of icefall"):
        read_icefall_checkpoint(_save(tmp_path / "u.pt", "tiny", extra="lm_head.weight"))
    torch.save({"model": {}, "model_config": {}}, tmp_path / "ours.pt")
    with pytest.raises(ValueError, match="mt2kd checkpoint"):
        read_icefall_checkpoint(tmp_path / "ours.pt")


# --------------------------------------------------------------------------------------- init and teacher
WORDS = ("the cat sat on a mat while seven quiet dogs ran over green hills and found old red boxes near "
         "the river bank where children played every sunny afternoon").split()


def _bpe(dirpath: Path, seed: int, vocab: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS[: 12 + 8 * seed], size=8)).upper() for _ in range(200)]
    train_bpe(lines, dirpath, vocab_size=vocab)
    return dirpath / "bpe.model"


@pytest.fixture(scope="module")
def bpes(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("bpe")
    return {"a": _bpe(root / "a", 0), "a_copy": _bpe(root / "a_copy", 0), "b": _bpe(root / "b", 1)}


def test_bpe_difference(bpes) -> None:
    assert bpe_difference(bpes["a"], bpes["a_copy"]) is None
    assert "token id" in bpe_difference(bpes["a"], bpes["b"]) or "pieces" in bpe_difference(bpes["a"], bpes["b"])


def test_init_from_icefall(tmp_path: Path, bpes) -> None:
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(bpes["a"])).get_piece_size()
    ckpt = _save(tmp_path / "ic.pt", "tiny", vocab=vocab)
    state = torch.load(ckpt)["model"]
    model = build_student(student_cfg("tiny", vocab_size=vocab))
    with pytest.raises(ValueError, match="BPE model differs"):
        init_from_icefall(model, ckpt, "all", bpes["b"], bpes["a"])
    with pytest.raises(ValueError, match="needs the checkpoint's bpe.model"):
        init_from_icefall(model, ckpt, "all")
    counts = init_from_icefall(model, ckpt, "all", bpes["a_copy"], bpes["a"])
    assert counts["asr_head"] == len([k for k in state if not k.startswith("encoder")])
    assert torch.equal(model.asr_head.joiner.output_linear.weight, state["joiner.output_linear.weight"])
    assert torch.equal(model.encoder.encoder.encoders[0].layers[0].feed_forward1.out_proj.linear.weight,
                       state["encoder.encoders.0.layers.0.feed_forward1.out_proj.weight"])
    # Stage 1: the KD student's encoder.
    from mt2kd_lib.models.kd_model import build_kd_model

    kd = build_kd_model({"encoder": "tiny", "kd": {"teachers": [dict(name="t", task="asr", field="t", kind="frame",
                                                                      dim=8, frame_shift=0.04)]}})
    assert init_from_icefall(kd, ckpt, "encoder")["encoder"] == len(kd.encoder.state_dict())
    assert torch.equal(kd.encoder.encoder_embed.out.weight, state["encoder_embed.out.weight"])


def test_icefall_teacher(tmp_path: Path, bpes) -> None:
    from mt2kd_lib.teachers.registry import load_teachers_config

    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(bpes["a"])).get_piece_size()
    layout = icefall_layout(get_config("tiny"), vocab, HEAD["decoder_dim"], HEAD["joiner_dim"], use_ctc=True)
    torch.save({"model": icefall_state(layout, seed=5)}, tmp_path / "pretrained.pt")
    conf = {"teachers": {
        "ic": {"kind": "icefall_zipformer", "checkpoint": str(tmp_path / "pretrained.pt"), "dim": 96},
        "ic_ctc": {"kind": "icefall_zipformer", "checkpoint": str(tmp_path / "pretrained.pt"), "output": "ctc",
                   "bpe_model": str(bpes["a_copy"]), "lang_dir": str(bpes["a"].parent)},
    }}
    (tmp_path / "teachers.yaml").write_text(yaml.safe_dump(conf))
    teachers = load_teachers_config(tmp_path / "teachers.yaml")
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(16000).astype(np.float32) * 0.1, rng.standard_normal(11000).astype(np.float32) * 0.1]
    emb = teachers["ic"].infer_batch(audios)
    assert [e.shape for e in emb] == [(teachers["ic"].num_frames(len(a)), 96) for a in audios]
    # The same frames as the converted model's encoder on the same fbank.
    imp = icefall_to_mt2kd(tmp_path / "pretrained.pt")
    model = build_student(imp.model_config).eval()
    model.load_state_dict(imp.state)
    feats = torch.from_numpy(teachers["ic"].fbank.extract(audios[1], 16000))[None]
    with torch.no_grad():
        ref, _ = model.encoder(feats, torch.tensor([feats.shape[1]]))
    np.testing.assert_allclose(emb[1], ref[0].numpy(), atol=1e-5)
    probs = teachers["ic_ctc"].infer_batch(audios)
    assert probs[0].shape == (emb[0].shape[0], vocab) and teachers["ic_ctc"].spec.output_kind == "probabilities"
    np.testing.assert_allclose(probs[0].sum(-1), 1.0, atol=1e-5)
    # Logits with another tokenizer are refused.
    conf["teachers"]["ic_ctc"]["bpe_model"] = str(bpes["b"])
    (tmp_path / "teachers.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(ValueError, match="BPE model differs from the recipe's"):
        load_teachers_config(tmp_path / "teachers.yaml", only=["ic_ctc"])


# --------------------------------------------------------------------------------------- decoding
@torch.no_grad()
def test_decoding_starts_from_icefalls_context(tmp_path: Path) -> None:
    """icefall decodes from the context [-1, ..., -1, blank] (-1: a zero embedding). An icefall decoder's blank
    embedding is not zero (ours is, padding_idx), so starting from [blank, blank] would change the hypotheses."""
    from mt2kd_lib.decoding.beam_search import modified_beam_search
    from mt2kd_lib.decoding.greedy_search import greedy_search_batch

    layout = icefall_layout(get_config("tiny"), HEAD["vocab_size"], HEAD["decoder_dim"], HEAD["joiner_dim"])
    state = icefall_state(layout, seed=7)
    state["joiner.output_linear.bias"][0] += 1.2  # blank-heavy enough that tokens and blanks alternate
    torch.save({"model": state}, tmp_path / "ic.pt")
    imp = icefall_to_mt2kd(tmp_path / "ic.pt")
    model = build_student(imp.model_config).eval()
    model.load_state_dict(imp.state)
    head = model.asr_head
    assert head.decoder.embedding.weight[0].abs().sum() > 0
    x, lens = fbank(seed=2)
    enc, enc_lens = model.encoder(x, lens)

    def reference(i: int) -> list:  # icefall's greedy search, one symbol per frame at most
        ctx, hyp = [-1, 0], []
        for t in range(int(enc_lens[i])):
            dec = head.decoder(torch.tensor([ctx[-2:]]), need_pad=False)
            tok = int(head.joiner(enc[i, t][None, None], dec).argmax())
            if tok != 0:
                hyp.append(tok)
                ctx.append(tok)
        return hyp

    want = [reference(i) for i in range(2)]
    assert all(3 <= len(h) < int(n) for h, n in zip(want, enc_lens))
    assert greedy_search_batch(head, enc, enc_lens) == want
    assert modified_beam_search(head, enc, enc_lens, beam=1) == want


# --------------------------------------------------------------------------------------- training CLIs
def _cli_module(name: str):
    return load_script(f"local/{name}.py")


def test_train_cli_init_from_icefall(tiny_recipe, tmp_path: Path, monkeypatch) -> None:
    """local/train.py --init-from-icefall ... --init-from-icefall-parts all: the run starts from the icefall weights
    (the encoder, frozen for the first step, is still exactly them after it)."""
    import shutil

    from mt2kd_lib.models.factory import read_vocab_size

    lang = tiny_recipe["lang"]
    enc = {"preset": "tiny", "num_encoder_layers": [1], "downsampling_factor": [1], "encoder_dim": [32],
           "feedforward_dim": [64], "num_heads": [2], "cnn_module_kernel": [15], "encoder_unmasked_dim": [32],
           "dropout": 0.0}
    vocab = read_vocab_size(lang / "tokens.txt")
    layout = icefall_layout(get_config(enc), vocab, 32, 32)
    state = icefall_state(layout, seed=11)
    torch.save({"model": state}, tmp_path / "pretrained.pt")
    shutil.copy(lang / "bpe.model", tmp_path / "icefall_bpe.model")  # the icefall model's own copy
    conf = tmp_path / "model.yaml"
    conf.write_text(yaml.safe_dump({"encoder": enc, "heads": {"asr": {"decoder_dim": 32, "joiner_dim": 32}}}))
    exp = tmp_path / "exp"
    train = _cli_module("train")
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--task", "asr", "--recipe-data", str(tiny_recipe["data"]), "--exp-dir", str(exp),
        "--model-config", str(conf), "--num-epochs", "1", "--max-duration", "20", "--tensorboard", "false",
        "--save-every-n", "1", "--keep-last-k", "0", "--freeze-encoder-steps", "1",
        "--init-from-icefall", str(tmp_path / "pretrained.pt"), "--init-from-icefall-parts", "all",
        "--icefall-bpe", str(tmp_path / "icefall_bpe.model")])
    train.main()
    log = (exp / "log" / "log-train-rank0.txt").read_text()
    assert f"loaded icefall weights from {tmp_path / 'pretrained.pt'}: {{'encoder': " in log
    ckpt = torch.load(exp / "checkpoint-1.pt", weights_only=False)["model"]
    assert torch.equal(ckpt["encoder.encoder.encoders.0.layers.0.feed_forward2.out_proj.linear.weight"],
                       state["encoder.encoders.0.layers.0.feed_forward2.out_proj.weight"])
    assert torch.equal(ckpt["encoder.encoder_embed.out.weight"], state["encoder_embed.out.weight"])
    # With --init-from-kd as well it is refused before anything runs.
    args = train.get_parser().parse_args([
        "--task", "asr", "--recipe-data", "d", "--exp-dir", "e", "--model-config", "m",
        "--init-from-icefall", "a.pt", "--init-from-kd", "b.pt"])
    with pytest.raises(ValueError, match="give one"):
        train.check_args(args)
    kd_args = _cli_module("train_kd").get_parser().parse_args([
        "--recipe-data", "d", "--teacher-dir", "t", "--teachers", "x", "--exp-dir", "e", "--model-config", "m",
        "--init-from-icefall", "a.pt"])
    assert kd_args.init_from_icefall == Path("a.pt")
