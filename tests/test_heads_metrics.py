"""Tests for the AT / SV heads and the tagging / verification metrics (tiny self-made data, CPU)."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from mt2kd_lib.metrics.tagging import mean_average_precision, write_at_results
from mt2kd_lib.metrics.verification import (
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    plot_det,
    read_trials,
    write_sv_results,
)
from mt2kd_lib.models.heads import ATHead, AttentiveStatsPooling, SVHead, at_bce_loss, masked_mean


def _padded_batch(lens, c, seed=0, pad_value=None):
    """Random (N, max(lens)+2, C) batch; padding is garbage (or ``pad_value``) to prove it is ignored."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lens), max(lens) + 2, c, generator=g)
    for i, n in enumerate(lens):
        x[i, n:] = 1e3 * torch.randn(x.size(1) - n, c, generator=g) if pad_value is None else pad_value
    return x, torch.tensor(lens)


# ----------------------------------------------------------------------------------------------- heads


def test_shapes():
    x, lens = _padded_batch([7, 5, 3], 12)
    at = ATHead(12, 5)
    clip, frames = at(x, lens, return_frames=True)
    assert clip.shape == (3, 5) and frames.shape == (3, 9, 5)
    assert AttentiveStatsPooling(12, attention_channels=16)(x, lens).shape == (3, 24)
    assert AttentiveStatsPooling(12, global_context=False)(x, lens).shape == (3, 24)
    sv = SVHead(12, emb_dim=8, num_speakers=4)
    assert sv.embed(x, lens).shape == (3, 8)
    assert masked_mean(x, lens).shape == (3, 12)


def test_masked_mean_value_and_errors():
    x, lens = _padded_batch([4, 2], 3)
    out = masked_mean(x, lens)
    torch.testing.assert_close(out[0], x[0, :4].mean(0))
    torch.testing.assert_close(out[1], x[1, :2].mean(0))
    with pytest.raises(ValueError, match=r"lens\[1\]=0"):
        masked_mean(x, torch.tensor([4, 0]))
    with pytest.raises(ValueError, match="exceeds"):
        masked_mean(x, torch.tensor([4, 99]))
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        masked_mean(x[0], lens)


def test_at_head_ignores_padding():
    torch.manual_seed(0)
    at = ATHead(6, 4)
    x, lens = _padded_batch([8, 3, 5], 6)
    batch = at(x, lens)
    x_nan, _ = _padded_batch([8, 3, 5], 6, pad_value=float("nan"))
    torch.testing.assert_close(at(x_nan, lens), batch)
    for i, n in enumerate(lens.tolist()):
        alone = at(x[i : i + 1, :n], torch.tensor([n]))
        torch.testing.assert_close(alone[0], batch[i])
    # clip logits are the mean of the valid frame logits
    torch.testing.assert_close(batch[1], at.proj(x[1, :3]).mean(0))


@pytest.mark.parametrize("global_context", [True, False])
def test_pooling_ignores_padding(global_context):
    torch.manual_seed(0)
    pool = AttentiveStatsPooling(6, attention_channels=8, global_context=global_context)
    x, lens = _padded_batch([8, 3, 5], 6)
    # training mode: the masked BN statistics must not see the padding either
    pool.train()
    ref = pool(x, lens)
    x2 = x.clone()
    for i, n in enumerate(lens.tolist()):
        x2[i, n:] = float("nan")
    wider = torch.cat([x2, torch.full((3, 4, 6), 7.0)], dim=1)  # more padding, other content
    torch.testing.assert_close(pool(wider, lens), ref)
    # eval mode: a sequence alone gives the same pooled vector as inside the padded batch
    pool.eval()
    batch = pool(x, lens)
    assert torch.isfinite(batch).all()
    for i, n in enumerate(lens.tolist()):
        torch.testing.assert_close(pool(x[i : i + 1, :n], torch.tensor([n]))[0], batch[i])


def test_pooling_uniform_attention_gives_plain_stats():
    pool = AttentiveStatsPooling(3, attention_channels=4).eval()
    with torch.no_grad():  # zero attention logits -> uniform weights over valid frames
        pool.attn.weight.zero_()
        pool.attn.bias.zero_()
    x, lens = _padded_batch([5, 2], 3)
    out = pool(x, lens)
    for i, n in enumerate(lens.tolist()):
        seq = x[i, :n]
        torch.testing.assert_close(out[i, :3], seq.mean(0))
        torch.testing.assert_close(out[i, 3:], seq.var(0, unbiased=False).sqrt())


def test_at_bce_loss_hand_values():
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    hard = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expect_hard = [-math.log(sig(0.0)), -math.log(1 - sig(2.0)), -math.log(1 - sig(-1.0)), -math.log(sig(0.5))]
    assert at_bce_loss(logits, hard).item() == pytest.approx(sum(expect_hard) / 4, rel=1e-6)
    assert at_bce_loss(logits, hard, reduction="sum").item() == pytest.approx(sum(expect_hard), rel=1e-6)
    soft = torch.tensor([[0.3, 0.8], [0.1, 0.6]])
    expect_soft = [
        -(t * math.log(sig(z)) + (1 - t) * math.log(1 - sig(z)))
        for z, t in zip(logits.flatten().tolist(), soft.flatten().tolist())
    ]
    per = at_bce_loss(logits, soft, reduction="none")
    assert per.shape == (2, 2)
    np.testing.assert_allclose(per.flatten().numpy(), expect_soft, rtol=1e-6)
    with pytest.raises(ValueError, match=r"targets\[1, 0\]=1.5"):
        at_bce_loss(logits, torch.tensor([[1.0, 0.0], [1.5, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        at_bce_loss(logits, hard[:, :1])
    with pytest.raises(ValueError, match="not finite"):
        at_bce_loss(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[1.0, 0.0]]))


def _speaker_data(n_spk=4, per_spk=6, c=8, seed=0):
    """Separable toy data: frames of a speaker scatter around that speaker's mean vector."""
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(n_spk, c, generator=g)
    spk = torch.arange(n_spk).repeat_interleave(per_spk)
    x = means[spk].unsqueeze(1) + 0.5 * torch.randn(len(spk), 12, c, generator=g)
    lens = torch.randint(6, 13, (len(spk),), generator=g)
    return x, lens, spk


@pytest.mark.parametrize("loss", ["softmax", "aam"])
def test_sv_loss_decreases(loss):
    torch.manual_seed(0)
    x, lens, spk = _speaker_data()
    head = SVHead(8, emb_dim=16, num_speakers=4, loss=loss, attention_channels=8)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        value = head.loss(head.embed(x, lens), spk)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    assert losses[-1] < 0.3 * losses[0], losses
    head.eval()
    with torch.no_grad():
        acc = (head.logits(head.embed(x, lens)).argmax(1) == spk).float().mean().item()
    assert acc == 1.0


def test_aam_target_logit_is_cos_theta_plus_margin():
    torch.manual_seed(0)
    head = SVHead(4, emb_dim=6, num_speakers=3, loss="aam", aam_margin=0.3, aam_scale=10.0)
    emb = torch.randn(5, 6)
    target = torch.tensor([0, 1, 2, 0, 1])
    logits = head.classifier(emb, target)
    cos = head.classifier.cosine(emb)
    for i, k in enumerate(target.tolist()):
        theta = math.acos(cos[i, k].item())
        want = 10.0 * (math.cos(theta + 0.3) if theta + 0.3 < math.pi else cos[i, k].item() - 0.3 * math.sin(0.3))
        assert logits[i, k].item() == pytest.approx(want, abs=1e-4)
        others = [j for j in range(3) if j != k]
        torch.testing.assert_close(logits[i, others], 10.0 * cos[i, others])


def test_sv_head_errors():
    emb_only = SVHead(4, emb_dim=6)
    x, lens = _padded_batch([3, 4], 4)
    emb = emb_only.embed(x, lens)
    with pytest.raises(RuntimeError, match="num_speakers=None"):
        emb_only.loss(emb, torch.tensor([0, 1]))
    head = SVHead(4, emb_dim=6, num_speakers=3)
    with pytest.raises(ValueError, match=r"speaker_idx\[1\]=3"):
        head.loss(head.embed(x, lens), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="loss must be"):
        SVHead(4, loss="arcface")


# --------------------------------------------------------------------------------------------- tagging


def test_map_matches_sklearn_random():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(60, 7))
    targets = (rng.random((60, 7)) < 0.3).astype(float)
    targets[0] = 1  # every class has a positive
    m, per = mean_average_precision(torch.from_numpy(scores), targets)
    np.testing.assert_allclose(per, [average_precision_score(targets[:, k], scores[:, k]) for k in range(7)])
    assert m == pytest.approx(average_precision_score(targets, scores, average="macro"))


def test_map_hand_cases(caplog):
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], dtype=float)
    perfect = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.2]])
    m, per = mean_average_precision(perfect, targets)
    assert m == 1.0 and per.tolist() == [1.0, 1.0]
    # class 0 ranked 0.9(+) 0.8(-) 0.7(+): AP = (1/1 + 2/3) / 2
    scores = np.array([[0.9], [0.8], [0.7]])
    m, per = mean_average_precision(scores, np.array([[1.0], [0.0], [1.0]]))
    assert m == pytest.approx(5 / 6)
    # a class with no positive is skipped (NaN) and reported
    t3 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=float)
    s3 = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.4], [0.2, 0.3, 0.1]])
    with caplog.at_level(logging.WARNING):
        m, per = mean_average_precision(s3, t3)
    assert m == 1.0 and math.isnan(per[2]) and "skipped 1 of 3 classes" in caplog.text
    with pytest.raises(ValueError, match="not 0/1"):
        mean_average_precision(s3, t3 * 0.5)
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(s3, np.zeros_like(s3))


def test_write_at_results(tmp_path):
    txt, js = write_at_results(tmp_path, "test", 0.75, np.array([0.5, 1.0, np.nan]), ["dog", "cat", "bird"])
    lines = txt.read_text().splitlines()
    assert lines[0].startswith("mAP 0.7500 over 2 of 3")
    assert "cat" in lines[2] and "skipped" in lines[-1] and "bird" in lines[-1]
    data = json.loads(js.read_text())
    assert data["mAP"] == 0.75 and data["per_class_ap"][2] == {"index": 2, "name": "bird", "ap": None}
    with pytest.raises(ValueError, match="class_names"):
        write_at_results(tmp_path, "bad", 0.5, [0.5, 0.5], ["a"])


# ---------------------------------------------------------------------------------------- verification


def _brute_force_rates(scores, labels):
    """(threshold, p_fa, p_miss) for accept-if-score>=t at every distinct score and +inf."""
    tgt, non = scores[labels == 1], scores[labels == 0]
    out = []
    for t in np.r_[np.unique(scores), np.inf]:
        out.append((t, np.mean(non >= t), np.mean(tgt < t)))
    return out


def test_eer_hand_examples():
    assert compute_eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == (0.0, 0.8)
    # targets 0.9 0.8 0.3, non-targets 0.7 0.2 0.1: at t=0.7 both rates are 1/3
    eer, thr = compute_eer([0.9, 0.8, 0.3, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0, 0])
    assert eer == pytest.approx(1 / 3) and thr == pytest.approx(0.7)
    # targets 2 1, non-targets 1 1 0: the tie at 1 jumps (p_fa, p_miss) from (0, 1/2) to (2/3, 0);
    # the segment meets p_fa = p_miss at 2/7, 3/7 of the way from threshold 2 to 1
    eer, thr = compute_eer([2, 1, 1, 1, 0], [1, 1, 0, 0, 0])
    assert eer == pytest.approx(2 / 7) and thr == pytest.approx(2 - 3 / 7)
    with pytest.raises(ValueError, match="both target and non-target"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match=r"labels\[1\]=2"):
        compute_eer([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match=r"scores\[0\]=nan"):
        compute_eer([float("nan"), 0.2], [1, 0])


def test_eer_matches_brute_force_sweep():
    rng = np.random.default_rng(1)
    for n_tgt, n_non in [(150, 600), (333, 77)]:
        scores = np.r_[rng.normal(1.0, 1.0, n_tgt), rng.normal(-0.5, 1.2, n_non)]
        labels = np.r_[np.ones(n_tgt, int), np.zeros(n_non, int)]
        eer, thr = compute_eer(scores, labels)
        sweep = _brute_force_rates(scores, labels)
        bf = min(max(fa, miss) for _, fa, miss in sweep)
        assert abs(eer - bf) <= 1.0 / min(n_tgt, n_non)
        # the threshold really operates near the EER
        fa = np.mean(scores[labels == 0] >= thr)
        miss = np.mean(scores[labels == 1] < thr)
        assert abs(fa - eer) <= 2.0 / n_non and abs(miss - eer) <= 2.0 / n_tgt


@pytest.mark.parametrize("p_target,c_miss,c_fa", [(0.01, 1, 1), (0.05, 1, 1), (0.3, 10, 1)])
def test_min_dcf_matches_brute_force(p_target, c_miss, c_fa):
    rng = np.random.default_rng(2)
    scores = np.r_[rng.normal(1.5, 1.0, 200), rng.normal(0.0, 1.0, 800)].round(2)  # rounding -> ties
    labels = np.r_[np.ones(200, int), np.zeros(800, int)]
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    rates = _brute_force_rates(scores, labels)
    costs = [(c_miss * p_target * m + c_fa * (1 - p_target) * f) / c_def for _, f, m in rates]
    dcf, thr = compute_min_dcf(scores, labels, p_target, c_miss, c_fa)
    assert dcf == pytest.approx(min(costs), abs=1e-12)
    fa = np.mean(scores[labels == 0] >= thr)
    miss = np.mean(scores[labels == 1] < thr)
    assert (c_miss * p_target * miss + c_fa * (1 - p_target) * fa) / c_def == pytest.approx(dcf)
    assert 0.0 < dcf <= 1.0
    assert compute_min_dcf([3, 2, 1, 0], [1, 1, 0, 0], p_target) == (0.0, 2.0)


def test_read_trials(tmp_path):
    good = tmp_path / "trials.txt"
    good.write_text("1 id1/a.wav id1/b.wav\n\n0 id1/a.wav id2/c.wav\n")
    assert read_trials(good) == [(1, "id1/a.wav", "id1/b.wav"), (0, "id1/a.wav", "id2/c.wav")]
    for name, text, msg in [
        ("fields", "1 a b\n1 a\n", r"fields.txt:2: expected"),
        ("label", "1 a b\ntarget a b\n", r"label.txt:2: label must be 0 or 1, got 'target'"),
        ("extra", "1 a b c\n", r"extra.txt:1: expected"),
        ("empty", "\n\n", "has no trials"),
    ]:
        p = tmp_path / f"{name}.txt"
        p.write_text(text)
        with pytest.raises(ValueError, match=msg):
            read_trials(p)
    with pytest.raises(FileNotFoundError):
        read_trials(tmp_path / "missing.txt")


def test_cosine_scores():
    emb = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([[3.0, 3.0]]), "c": np.array([0.0, 2.0])}
    trials = [(1, "a", "b"), (0, "a", "c"), (1, "b", "c"), (1, "c", "c")]
    np.testing.assert_allclose(cosine_scores(emb, trials), [1 / math.sqrt(2), 0.0, 1 / math.sqrt(2), 1.0])
    with pytest.raises(KeyError, match="zz"):
        cosine_scores(emb, [(1, "a", "zz")])
    with pytest.raises(ValueError, match="'z0' has norm 0"):
        cosine_scores({"a": torch.ones(2), "z0": torch.zeros(2)}, [(0, "a", "z0")])


def test_plot_det_and_sv_results(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(100, int), np.zeros(300, int)]
    curves = {
        "good": (np.r_[rng.normal(2, 1, 100), rng.normal(0, 1, 300)], labels),
        "bad": (np.r_[rng.normal(0.5, 1, 100), rng.normal(0, 1, 300)], labels),
    }
    out = plot_det(curves, tmp_path / "plots" / "det.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    eer, _ = compute_eer(*curves["good"])
    dcf, _ = compute_min_dcf(*curves["good"])
    txt, js = write_sv_results(tmp_path, "vox1-O", eer, dcf, len(labels))
    assert f"EER {100 * eer:.3f}%" in txt.read_text()
    data = json.loads(js.read_text())
    assert data["eer"] == pytest.approx(eer) and data["n_trials"] == 400 and data["min_dcf"] == pytest.approx(dcf)
