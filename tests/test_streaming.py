"""Streaming (chunked, causal) inference: the encoder run chunk by chunk with its caches equals the full-utterance
pass under the same chunk mask (tiny-causal preset, random weights), and so do streaming greedy / modified beam
search, the running AT probabilities and the SV embedding of the frames so far. Bad chunk settings fail clearly."""

from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml

from mt2kd_lib.decoding.beam_search import modified_beam_search
from mt2kd_lib.decoding.greedy_search import greedy_search_batch
from mt2kd_lib.decoding.streaming import StreamingStudent, stream_utterances
from mt2kd_lib.models.encoder_presets import build_encoder
from mt2kd_lib.models.factory import build_student
from mt2kd_lib.models.student import StudentModel
from mt2kd_lib.models.zipformer.streaming import iter_chunks, streaming_encode

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(1)
    return build_encoder("tiny-causal").eval()


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # lengths: several chunks, a partial last chunk, and one utterance shorter than the other by whole chunks
    lens = torch.tensor([233, 180, 101])
    return torch.randn(3, 233, 80, generator=g), lens


@pytest.mark.parametrize("chunk,left", [(16, 48), (32, 32)])
def test_chunked_encoder_equals_masked_full_pass(encoder, chunk: int, left: int) -> None:
    x, lens = _batch()
    with torch.no_grad():
        full, full_lens, full_stacks = encoder.forward_with_stacks(x, lens, chunk_size=chunk,
                                                                   left_context_chunks=left // chunk)
    out, out_lens, stacks = streaming_encode(encoder, x, lens, chunk, left)
    assert out_lens.tolist() == full_lens.tolist()
    for i, n in enumerate(full_lens.tolist()):
        assert (out[i, :n] - full[i, :n]).abs().max() < TOL
        for (a, la), (b, lb) in zip(full_stacks, stacks):
            m = int(la[i])
            assert int(lb[i]) == m
            assert (a[i, :m] - b[i, :m]).abs().max() < TOL
    # the left context matters: a shorter one gives other outputs (so the test can fail)
    other, _, _ = streaming_encode(encoder, x, lens, chunk, chunk)
    if left > chunk:
        assert (other[0, :full_lens[0]] - full[0, :full_lens[0]]).abs().max() > TOL


def test_first_chunks_do_not_wait_for_the_future(encoder) -> None:
    """A chunk's output is final: the first k chunks of a longer input give the same frames."""
    x, lens = _batch(1)
    a, _, _ = streaming_encode(encoder, x[:1], lens[:1], 16, 64)
    short = 2 * 16 * 3 + 13  # exactly three chunks of input
    b, b_lens, _ = streaming_encode(encoder, x[:1, :short], torch.tensor([short]), 16, 64)
    assert int(b_lens[0]) == 26  # the stream ends: its last 3 frames (the look-ahead) form a 4th chunk
    assert (a[0, :24] - b[0, :24]).abs().max() < 1e-5


def test_bad_chunk_settings_raise(encoder) -> None:
    with pytest.raises(ValueError, match=r"chunk_size 15 .*not divisible by \[2, 4, 8\]"):
        encoder.chunk_input_frames(15)  # odd 50 Hz chunk: no whole 25 Hz output frames
    with pytest.raises(ValueError, match="chunk_size 20 .*not divisible by \\[8\\]"):
        streaming_encode(encoder, *_batch(), 20, 80)
    with pytest.raises(ValueError, match="chunk_size 12"):
        encoder(*_batch(), chunk_size=12)  # the masked full pass refuses it too
    states = encoder.get_init_states(64)
    with pytest.raises(ValueError, match="2 \\* chunk_size \\+ 13"):
        encoder.streaming_forward(torch.zeros(1, 46, 80), torch.tensor([46]), states)
    with pytest.raises(ValueError, match="left_context_frames 60"):
        encoder.get_init_states(60)
    with pytest.raises(ValueError, match="expected .* states"):
        encoder.streaming_forward(torch.zeros(1, 45, 80), torch.tensor([45]), states[:-1])
    with pytest.raises(RuntimeError, match="causal"):
        streaming_encode(build_encoder("tiny").eval(), *_batch(), 16, 64)


def _student_config(vocab: int = 24) -> Dict:
    cfg = yaml.safe_load((REPO / "egs/mini/conf/student_tiny.yaml").read_text())
    cfg["encoder"]["preset"] = "tiny-causal"
    cfg["heads"]["asr"]["vocab_size"] = vocab
    cfg["heads"]["at"]["num_classes"] = 5
    cfg["heads"]["sv"]["num_speakers"] = 4
    return cfg


def _student(at_stack=None) -> StudentModel:
    torch.manual_seed(0)
    cfg = _student_config()
    cfg["heads"]["at"]["input_stack"] = at_stack  # both heads on the output (None) or on one stack
    cfg["heads"]["sv"]["input_stack"] = at_stack
    model = build_student(cfg).eval()
    with torch.no_grad():  # a random transducer that emits varied tokens (see tests/test_export.py)
        model.asr_head.joiner.encoder_proj.weight.mul_(30.0)
        model.asr_head.joiner.output_linear.bias.zero_()
    return model


@pytest.mark.parametrize("at_stack", [None, 2])
def test_streaming_heads_equal_masked_full_pass(at_stack) -> None:
    model = _student(at_stack)
    x, lens = _batch(2)
    chunk, left = 32, 64
    with torch.no_grad():
        out, out_lens, stacks = model.encoder.forward_with_stacks(x, lens, chunk, left // chunk)
        greedy = greedy_search_batch(model.asr_head, out, out_lens)
        beam = modified_beam_search(model.asr_head, out, out_lens, beam=3)
        at_in = (out, out_lens) if at_stack is None else stacks[at_stack]
        at_full = torch.sigmoid(model.at_head(*at_in))
        sv_full = model.sv_head.embed(*at_in)
    assert max(len(h) for h in greedy) >= 5  # non-degenerate decoding

    streamer = StreamingStudent(model, chunk, left)
    states = list(stream_utterances(streamer, x, lens))
    final = states[-1][1]
    assert streamer.tokens(final) == greedy
    assert (streamer.at_probs(final) - at_full).abs().max() < TOL
    assert (streamer.sv_embedding(final) - sv_full).abs().max() < 1e-3 * sv_full.abs().max()

    # running values after chunk 2 = the heads on the frames so far of the masked full pass
    k, mid = states[2]
    assert k == 2
    n_mid = mid.frames_out  # 25 Hz frames so far
    if at_stack is None:
        mid_in = (out, n_mid)
    else:
        mid_in = (stacks[at_stack][0], mid.sv_lens)
    with torch.no_grad():
        assert (streamer.at_probs(mid) - torch.sigmoid(model.at_head(*mid_in))).abs().max() < TOL

    beam_streamer = StreamingStudent(model, chunk, left, method="modified_beam_search", beam=3)
    *_, (_, last) = stream_utterances(beam_streamer, x, lens)
    assert beam_streamer.tokens(last) == beam


def test_streaming_student_refuses_bad_settings() -> None:
    model = _student()
    with pytest.raises(ValueError, match="chunk_size 17"):
        StreamingStudent(model, 17, 64)
    with pytest.raises(ValueError, match="unknown streaming decoding method"):
        StreamingStudent(model, 16, 64, method="fast_beam_search")
    cfg = _student_config()
    cfg["encoder"]["preset"] = "tiny"
    with pytest.raises(ValueError, match="causal"):
        StreamingStudent(build_student(cfg).eval(), 16, 64)


def test_iter_chunks_covers_every_frame(encoder) -> None:
    x, lens = _batch()
    chunks = list(iter_chunks(encoder, x, lens, 16))
    assert len(chunks) == -(-((233 - 7) // 2) // 16)
    assert all(c.features.shape == (3, 45, 80) for c in chunks)
    assert torch.equal(chunks[1].features[0], x[0, 32:77])
    assert chunks[-1].feature_lens.tolist()[2] == 0


def test_streaming_training_options_make_the_encoder_causal() -> None:
    import argparse

    from mt2kd_lib.models.encoder_presets import causal_encoder_config, get_config
    from mt2kd_lib.training.streaming_args import add_streaming_args, apply_streaming_args

    p = argparse.ArgumentParser()
    add_streaming_args(p)
    model_cfg = {"encoder": {"preset": "tiny", "dropout": 0.0}, "heads": {}}
    assert apply_streaming_args(model_cfg, p.parse_args([])) is model_cfg  # default: unchanged (non-streaming)
    args = p.parse_args(["--causal", "true", "--chunk-size", "16,32,-1", "--left-context-frames", "64,-1"])
    cfg = get_config(apply_streaming_args(model_cfg, args)["encoder"])
    assert cfg.causal and cfg.chunk_size == (16, 32, -1) and cfg.left_context_frames == (64, -1)
    assert cfg.dropout == 0.0 and cfg.encoder_dim == get_config("tiny").encoder_dim  # the rest is kept
    with pytest.raises(ValueError, match="chunk size 12 .*multiple of 8"):
        causal_encoder_config("tiny", (12, -1), (64,))
    with pytest.raises(ValueError, match="left context 60"):
        causal_encoder_config("tiny", (16,), (60,))
    with pytest.raises(SystemExit):
        p.parse_args(["--chunk-size", "16,x"])
    # training draws one chunk setting per batch from the lists (icefall's scheme); eval uses the first entries
    enc = build_encoder(cfg).train()
    seen = {enc.encoder.get_chunk_info() for _ in range(200)}
    assert seen == {(16, 4), (16, -1), (32, 2), (32, -1), (-1, -1)}
    assert enc.eval().encoder.get_chunk_info() == (16, 4)
