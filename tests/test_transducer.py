"""Tests of the pruned RNN-T head, its loss backend, greedy/beam decoding and the icefall result files."""

import collections
import logging
import math
from pathlib import Path
from typing import List

import pytest
import torch
from torch import nn

from mt2kd_lib.decoding.asr_results import compute_wer, write_asr_results
from mt2kd_lib.decoding.beam_search import modified_beam_search
from mt2kd_lib.decoding.greedy_search import greedy_search_batch
from mt2kd_lib.losses import rnnt_backend
from mt2kd_lib.losses.transducer_schedule import finite_or_skip, transducer_loss_scales
from mt2kd_lib.models.transducer.transducer import TransducerHead, TransducerLosses

BLANK = 0


def reference_rnnt_loss(logits: torch.Tensor, y: List[int], t_len: int) -> torch.Tensor:
    """Graves RNN-T negative log-likelihood in float64 (one symbol per step, blank moves to next frame).

    logits: (T, U+1, V) joiner outputs for one utterance; alpha[t, u] = log p(first u symbols
    emitted while at frame t).
    """
    logp = torch.log_softmax(logits.double(), dim=-1)
    u_len = len(y)
    neg_inf = torch.tensor(-math.inf, dtype=torch.float64)
    alpha = [[neg_inf] * (u_len + 1) for _ in range(t_len)]
    alpha[0][0] = torch.tensor(0.0, dtype=torch.float64)
    for t in range(t_len):
        for u in range(u_len + 1):
            if t == 0 and u == 0:
                continue
            from_blank = alpha[t - 1][u] + logp[t - 1, u, BLANK] if t > 0 else neg_inf
            from_emit = alpha[t][u - 1] + logp[t, u - 1, y[u - 1]] if u > 0 else neg_inf
            alpha[t][u] = torch.logaddexp(from_blank, from_emit)
    return -(alpha[t_len - 1][u_len] + logp[t_len - 1, u_len, BLANK])


def full_joiner_logits(head: TransducerHead, enc: torch.Tensor, ys: List[List[int]]) -> torch.Tensor:
    """(N, T, S+1, V) joiner outputs on every (frame, label-prefix) pair, built independently of forward()."""
    s_max = max(len(s) for s in ys)
    dec_in = torch.full((len(ys), s_max + 1), BLANK, dtype=torch.int64)
    for i, s in enumerate(ys):
        dec_in[i, 1 : 1 + len(s)] = torch.tensor(s)
    dec = head.decoder(dec_in)  # (N, S+1, D)
    return head.joiner(enc.unsqueeze(2), dec.unsqueeze(1))  # broadcast to (N, T, S+1, V)


def simple_logits(head: TransducerHead, enc: torch.Tensor, ys: List[List[int]]) -> torch.Tensor:
    """Trivial-joiner logits am[t] + lm[u] (what the smoothed loss uses with zero smoothing)."""
    s_max = max(len(s) for s in ys)
    dec_in = torch.full((len(ys), s_max + 1), BLANK, dtype=torch.int64)
    for i, s in enumerate(ys):
        dec_in[i, 1 : 1 + len(s)] = torch.tensor(s)
    lm = head.simple_lm_proj(head.decoder(dec_in))
    am = head.simple_am_proj(enc)
    return am.unsqueeze(2) + lm.unsqueeze(1)


def _tiny_setup(seed: int = 0):
    torch.manual_seed(seed)
    head = TransducerHead(encoder_dim=8, vocab_size=5, decoder_dim=8, joiner_dim=12, context_size=2)
    # Larger random weights than the init so the distributions are far from uniform.
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.5 * torch.randn_like(p))
    enc = torch.randn(2, 6, 8)
    lens = torch.tensor([6, 4])
    ys = [[1, 2, 3], [4, 1]]
    return head, enc, lens, ys


@pytest.mark.parametrize("prune_range", [4, 10])
def test_pruned_equals_full_reference(prune_range: int) -> None:
    head, enc, lens, ys = _tiny_setup()
    out = head(enc, lens, ys, prune_range=prune_range, am_scale=0.0, lm_scale=0.0, reduction="none")
    assert isinstance(out, TransducerLosses) and out.ctc is None
    assert out.pruned.shape == (2,) and out.simple.shape == (2,)

    with torch.no_grad():
        logits = full_joiner_logits(head, enc, ys)
        slog = simple_logits(head, enc, ys)
    ref_full = torch.stack([reference_rnnt_loss(logits[i], ys[i], int(lens[i])) for i in range(2)])
    ref_simple = torch.stack([reference_rnnt_loss(slog[i], ys[i], int(lens[i])) for i in range(2)])
    assert torch.all(ref_full > 0.5)  # non-trivial numbers
    torch.testing.assert_close(out.pruned.double(), ref_full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.simple.double(), ref_simple, rtol=1e-5, atol=1e-4)

    # Sum reduction is the sum of the per-utterance losses.
    simple_sum, pruned_sum = head(enc, lens, ys, prune_range=prune_range, am_scale=0.0, lm_scale=0.0)
    assert abs(float(pruned_sum.detach()) - float(ref_full.sum())) < 1e-3
    assert abs(float(simple_sum.detach()) - float(ref_simple.sum())) < 1e-3

    # The backend's full (unpruned) RNN-T loss agrees with the reference too.
    y_pad = torch.tensor([[1, 2, 3], [4, 1, 0]])
    boundary = torch.tensor([[0, 0, 3, 6], [0, 0, 2, 4]])
    full = rnnt_backend.rnnt_loss(logits.float(), y_pad, BLANK, boundary=boundary, reduction="none")
    torch.testing.assert_close(full.double(), ref_full, rtol=1e-5, atol=1e-4)


def test_small_prune_range_differs_and_lm_scale_changes_simple() -> None:
    """Pruning with range 2 on S=3 discards paths: its loss must be >= the full loss (fewer paths)."""
    head, enc, lens, ys = _tiny_setup(seed=1)
    full = head(enc, lens, ys, prune_range=4, lm_scale=0.0, reduction="none").pruned
    pruned2 = head(enc, lens, ys, prune_range=2, lm_scale=0.0, reduction="none").pruned
    assert torch.all(pruned2 >= full - 1e-4)
    s0 = head(enc, lens, ys, lm_scale=0.0, reduction="none").simple
    s1 = head(enc, lens, ys, lm_scale=0.25, reduction="none").simple
    assert torch.all((s1 - s0).abs() > 1e-4)


def test_gradients_finite_and_nonzero() -> None:
    head, enc, lens, ys = _tiny_setup(seed=2)
    enc = enc.clone().requires_grad_(True)
    simple, pruned = head(enc, lens, ys, prune_range=3)
    (0.5 * simple + pruned).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(enc.grad).all()
    # Frames beyond utterance 1's length (4) must receive no gradient.
    assert enc.grad[1, 4:].abs().sum() == 0
    assert enc.grad[1, :4].abs().sum() > 0


def test_bad_inputs_raise() -> None:
    head, enc, lens, ys = _tiny_setup()
    with pytest.raises(ValueError, match="utterance 1"):
        head(enc, lens, [[1, 2], []])
    with pytest.raises(ValueError, match="utterance 0 has token 7"):
        head(enc, lens, [[1, 7], [2]])
    with pytest.raises(ValueError, match="blank"):
        head(enc, lens, [[1, 0], [2]])
    with pytest.raises(ValueError, match="encoder_out_lens"):
        head(enc, torch.tensor([7, 3]), ys)
    with pytest.raises(ValueError, match="reduction"):
        head(enc, lens, ys, reduction="avg")


def test_non_finite_detection(caplog: pytest.LogCaptureFixture) -> None:
    counter: collections.Counter = collections.Counter()
    assert finite_or_skip(torch.tensor([1.0, 2.0]), "pruned_loss", counter)
    assert counter["pruned_loss"] == 0
    with caplog.at_level(logging.WARNING):
        ok = finite_or_skip(torch.tensor([1.0, math.inf, math.nan]), "pruned_loss", counter, ids=["a", "b", "c"])
    assert not ok and counter["pruned_loss"] == 1
    assert "b=inf" in caplog.text and "c=nan" in caplog.text

    # A real infinite loss: CTC needs at least as many frames as labels (+ repeats).
    torch.manual_seed(0)
    head = TransducerHead(encoder_dim=8, vocab_size=5, decoder_dim=8, joiner_dim=8, use_ctc=True)
    head.eval()
    enc = torch.randn(2, 4, 8)
    losses = head(enc, torch.tensor([4, 2]), [[1, 2], [3, 3, 3]], reduction="none")
    assert losses.ctc is not None and torch.isfinite(losses.ctc[0]) and torch.isinf(losses.ctc[1])
    assert not finite_or_skip(losses.ctc, "ctc_loss", counter)
    assert finite_or_skip(losses.pruned, "pruned_loss", counter)  # RNN-T has no such constraint
    # NaN propagating from the encoder is caught on the batch-summed loss.
    enc[0, 1, 3] = math.nan
    simple, pruned, ctc = head(enc, torch.tensor([4, 2]), [[1, 2], [3]])
    assert not finite_or_skip(simple, "simple_loss", counter)
    assert counter["simple_loss"] == 1 and counter["ctc_loss"] == 1


def test_loss_scales_schedule() -> None:
    assert transducer_loss_scales(0, 2000) == (1.0, 0.1)
    s, p = transducer_loss_scales(1000, 2000, simple_loss_scale=0.5)
    assert math.isclose(s, 0.75) and math.isclose(p, 0.55)
    assert transducer_loss_scales(5000, 2000, 0.5) == (0.5, 1.0)
    with pytest.raises(ValueError):
        transducer_loss_scales(0, 0)


def test_overfit_and_decode() -> None:
    """A tiny encoder + head memorises one batch; greedy and modified beam search recover the labels."""
    torch.manual_seed(0)
    feats = torch.randn(3, 10, 6)
    lens = torch.tensor([10, 7, 9])
    ys = [[1, 2, 3], [3, 1], [2, 2, 4, 1]]
    encoder = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 16))
    head = TransducerHead(encoder_dim=16, vocab_size=5, decoder_dim=16, joiner_dim=32, context_size=2)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    for step in range(300):
        simple, pruned = head(encoder(feats), lens, ys, prune_range=3)
        s_scale, p_scale = transducer_loss_scales(step, warm_step=100)
        loss = s_scale * simple + p_scale * pruned
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = float(pruned.detach()) / 3
    assert final < 0.05, f"did not overfit: pruned loss per utt {final}"
    head.eval()
    with torch.no_grad():
        enc = encoder(feats)
        assert greedy_search_batch(head, enc, lens) == ys
        assert modified_beam_search(head, enc, lens, beam=4) == ys
        assert modified_beam_search(head, enc, lens, beam=1) == ys
        # Decoding a single utterance out of the batch gives the same answer (padding is ignored).
        assert greedy_search_batch(head, enc[1:2, :7], lens[1:2]) == [ys[1]]
        assert modified_beam_search(head, enc[2:3], lens[2:3]) == [ys[2]]


def test_wer_and_result_files(tmp_path: Path) -> None:
    ref = "the cat sat on the mat in the sun today".split()
    hyp = "the dog sat on mat in the big sun today".split()  # cat->dog, del 'the', ins 'big'
    assert compute_wer([ref], [hyp]) == (30.0, 1, 1, 1, 10)
    results = [("utt2", ["a", "b"], ["a", "b"]), ("utt1", ref, hyp)]
    wer = write_asr_results(tmp_path, "test-clean", "greedy_search", results)
    assert math.isclose(wer, 100.0 * 3 / 12)

    recogs = (tmp_path / "recogs-test-clean-greedy_search.txt").read_text().splitlines()
    assert recogs[0] == "utt1:\tref=" + str(ref)
    assert recogs[1] == "utt1:\thyp=" + str(hyp)
    assert recogs[2] == "utt2:\tref=['a', 'b']" and len(recogs) == 4

    errs = (tmp_path / "errs-test-clean-greedy_search.txt").read_text().splitlines()
    assert errs[0] == "%WER = 25.00"
    assert errs[1] == "Errors: 1 insertions, 1 deletions, 1 substitutions, over 12 reference words (10 correct)"
    assert "utt1:\tthe (cat->dog) sat on (the->*) mat in the (*->big) sun today" in errs
    assert "utt2:\ta b" in errs
    i = errs.index("SUBSTITUTIONS: count ref -> hyp")
    assert errs[i + 1] == "1   cat -> dog"
    assert errs[errs.index("DELETIONS: count ref") + 1] == "1   the"
    assert errs[errs.index("INSERTIONS: count hyp") + 1] == "1   big"

    write_asr_results(tmp_path, "test-clean", "beam_4", [("utt1", ref, ref)])
    write_asr_results(tmp_path, "test-clean", "bad", [("utt1", ref, ["x"])])
    summary = (tmp_path / "wer-summary-test-clean.txt").read_text().splitlines()
    assert summary == ["settings\tWER", "beam_4\t0.0", "greedy_search\t25.0", "bad\t100.0"]

    with pytest.raises(ValueError, match="utt9"):
        write_asr_results(tmp_path, "x", "k", [("utt9", "a b", ["a"])])
    with pytest.raises(ValueError, match="no words"):
        compute_wer([[]], [["a"]])
