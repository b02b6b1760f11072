"""MVQ codebook KD: the quantizer, the dump of codebook indexes (read back by stock lhotse), the CE head and loss."""

import dataclasses
import functools

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("multi_quantization")
from lhotse import CutSet, Recording  # noqa: E402

from mt2kd_lib.data.dataset import collate_optional_field  # noqa: E402
from mt2kd_lib.models.kd_model import build_kd_model  # noqa: E402
from mt2kd_lib.models.kd_mvq_head import MvqKDHead, mvq_ce_loss  # noqa: E402
from mt2kd_lib.teachers.mvq import (QUANTIZER_NAME, MvqConfig, check_codebook_field, decode_indexes,  # noqa: E402
                                    encode_frames, load_quantizer, mvq_teacher_fields, relative_error,
                                    save_quantizer, train_quantizer)
from mt2kd_lib.data.teacher_shar import load_dump_config, pool_shards, read_kd_cuts, shard_paths  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _frames(n: int = 3500, dim: int = 16) -> np.ndarray:
    """Correlated frames around a few clusters: structure a quantizer can exploit (the last 500 held out)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, dim)) * 2.0
    x = centres[rng.integers(0, 12, n)] + 0.2 * rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim))
    return (x + 5.0).astype(np.float32)


@pytest.fixture(scope="module")
def quantizer(threads):
    return train_quantizer(_frames()[:3000], MvqConfig(num_codebooks=4, train_iters=100, batch_frames=128))


def test_quantizer_reconstructs_far_below_the_variance(quantizer):
    x = _frames()[3000:]  # frames the quantizer was not trained on
    idx = encode_frames(quantizer, x)
    assert idx.dtype == np.uint8 and idx.shape == (500, 4)
    assert len(np.unique(idx[:, 0])) > 8  # the codebooks are used, not collapsed onto one centre
    rec = decode_indexes(quantizer, idx)
    assert rec.shape == x.shape and rec.dtype == np.float32
    rel = relative_error(quantizer, x)  # mean squared error / total variance
    assert rel < 0.2, rel
    # decoding is the sum of one centre per codebook
    centres = quantizer.quantizer.get_centers().detach()
    manual = sum(centres[c, idx[:, c].astype(np.int64)] for c in range(4)).numpy() * quantizer.scale + quantizer.mean
    assert np.allclose(rec, manual, atol=1e-4)


def test_quantizer_file_round_trip_and_errors(quantizer, tmp_path):
    path = tmp_path / QUANTIZER_NAME
    save_quantizer(quantizer, path)
    q2 = load_quantizer(path, {"dim": 16, "num_codebooks": 4, "quantizer_id": quantizer.get_id()})
    x = _frames()[3000:3100]
    assert np.array_equal(encode_frames(q2, x), encode_frames(quantizer, x))
    with pytest.raises(RuntimeError, match=f"{path}.*num_codebooks=4.*8"):
        load_quantizer(path, {"num_codebooks": 8})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pt")):
        load_quantizer(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:500])
    with pytest.raises(RuntimeError, match=f"{bad} is corrupt"):
        load_quantizer(bad)


def test_mvq_config_checks():
    with pytest.raises(ValueError, match="power of two"):
        MvqConfig(num_codebooks=6)


# ---------------------------------------------------------------------------------------------------------------
# The dump stage with MVQ


@pytest.fixture(scope="module")
def mvq_dump(tmp_path_factory, threads):
    pytest.importorskip("resemblyzer")
    from mt2kd_lib.data.shar import export_pool_shar
    from mt2kd_lib.teachers.dump import dump_teacher
    from mt2kd_lib.teachers.resemblyzer_teacher import ResemblyzerTeacher

    root = tmp_path_factory.mktemp("mvq_dump")
    rng = np.random.default_rng(0)
    cuts = []
    for i, d in enumerate([1.5, 2.0, 1.0, 2.5]):
        t = np.arange(int(d * SR)) / SR
        x = sum(0.08 / k * np.sin(2 * np.pi * k * (110 + 40 * i) * t) for k in range(1, 5))
        path = root / f"utt{i}.wav"
        sf.write(path, (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32), SR)
        cuts.append(dataclasses.replace(Recording.from_file(path, recording_id=f"utt{i}").to_cut(), id=f"utt{i}"))
    cuts = CutSet.from_cuts(cuts)
    pool = root / "pool"
    export_pool_shar(cuts, pool, 2)  # two shards of two cuts
    factory = functools.partial(ResemblyzerTeacher, level="frame")
    cfg = MvqConfig(num_codebooks=4, train_iters=10, batch_frames=32)
    # two workers: the quantizer's frames are sampled in one of them (MvqConfig pickled)
    summary = dump_teacher(pool, factory, root / "out", teacher_name="frm", num_jobs=2, num_threads=1,
                           progress=False, mvq=cfg)
    return dict(root=root, out=root / "out", pool=pool, cuts=cuts, summary=summary, factory=factory, cfg=cfg,
                teacher=factory(device="cpu"))


def test_dump_stores_uint8_indexes_read_back_by_stock_lhotse(mvq_dump):
    out, summary = mvq_dump["out"], mvq_dump["summary"]
    tdir = out / "frm"
    cfg = load_dump_config(out, "frm")
    assert cfg["field"] == "frm_codebook_indexes" and cfg["target"] == "mvq" and cfg["tick_power"] is None
    assert cfg["mvq"]["num_codebooks"] == 4 and (tdir / QUANTIZER_NAME).is_file()
    assert 0.0 < cfg["mvq"]["relative_error"] < 1.0  # the quantizer's reconstruction error, recorded per dump
    tars = [shard_paths(tdir, "frm_codebook_indexes", i)["tar"] for i in range(2)]
    assert all(p.is_file() for p in tars)
    assert summary["num_written"] == 4 and summary["tar_bytes"] == sum(p.stat().st_size for p in tars)
    quantizer = load_quantizer(tdir / QUANTIZER_NAME)
    dim = mvq_dump["teacher"].spec.dim
    # stock lhotse: the pool's cut shards plus the teacher's field tars
    fields = {"cuts": pool_shards(mvq_dump["pool"]), "frm_codebook_indexes": [str(p) for p in tars]}
    seen = frames = 0
    for cut in CutSet.from_shar(fields=fields):
        idx = cut.load_custom("frm_codebook_indexes")
        assert idx.dtype == np.uint8 and idx.ndim == 2 and idx.shape[1] == 4
        frames += idx.shape[0]
        floats = mvq_dump["teacher"].infer_batch([cut.load_audio()[0].astype(np.float32)])[0]
        assert idx.shape[0] == floats.shape[0]
        assert np.array_equal(idx, encode_frames(quantizer, floats, mvq_dump["cfg"].refine_iters))
        assert decode_indexes(quantizer, idx).shape == (idx.shape[0], dim)
        seen += 1
    assert seen == 4
    # the size is compared with a float32 archive of the frames the indexes stand for
    assert summary["float32_bytes"] == 4 * frames * dim
    assert summary["tar_to_float32_ratio"] == pytest.approx(summary["tar_bytes"] / summary["float32_bytes"])


def test_collation_and_kd_config_from_an_mvq_dump(mvq_dump):
    stream, names = read_kd_cuts(mvq_dump["pool"], mvq_dump["out"], ["frm"], shuffle_shards=False,
                                 split_for_dataloading=False)
    assert names == ["frm_codebook_indexes"]
    cuts = CutSet.from_cuts(list(stream))
    batch = collate_optional_field(cuts, "frm_codebook_indexes")
    values, lens = batch["frm_codebook_indexes"], batch["frm_codebook_indexes_lens"]
    # lhotse's collation widens the uint8 arrays to int64: the loss takes any integer type
    assert not values.is_floating_point() and values.shape[0] == 4 and values.shape[2] == 4
    assert 0 <= int(values.min()) and int(values.max()) <= 255
    assert batch["frm_codebook_indexes_mask"].all() and lens.max() == values.shape[1]
    kd = mvq_teacher_fields(mvq_dump["out"], "frm", load_dump_config(mvq_dump["out"], "frm"))
    assert kd == {"kind": "mvq", "num_codebooks": 4, "codebook_size": 256}
    check_codebook_field(cuts, "frm_codebook_indexes", 4)
    with pytest.raises(ValueError, match=r"cut utt0 .*expects \(frames, 8\)"):
        check_codebook_field(cuts, "frm_codebook_indexes", 8)


def test_resume_checks_the_quantizer_and_the_codebooks(mvq_dump, tmp_path):
    import shutil

    from mt2kd_lib.teachers.dump import dump_teacher

    out = tmp_path / "out"
    shutil.copytree(mvq_dump["out"], out)
    tdir = out / "frm"
    before = {p.name: p.stat().st_mtime_ns for p in tdir.glob("*.tar")}
    kw = dict(teacher_name="frm", num_threads=1, progress=False)
    s = dump_teacher(mvq_dump["pool"], mvq_dump["factory"], out, mvq=mvq_dump["cfg"], **kw)
    assert s["this_run"]["shards_processed"] == 0
    assert before and {p.name: p.stat().st_mtime_ns for p in tdir.glob("*.tar")} == before
    with pytest.raises(ValueError, match="4 MVQ codebooks, this run asks for 8"):
        dump_teacher(mvq_dump["pool"], mvq_dump["factory"], out, mvq=MvqConfig(num_codebooks=8), **kw)
    with pytest.raises(ValueError, match="field='frm_codebook_indexes'"):  # a float dump into an MVQ folder
        dump_teacher(mvq_dump["pool"], mvq_dump["factory"], out, **kw)
    (tdir / QUANTIZER_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=f"{tdir / QUANTIZER_NAME} is corrupt"):
        dump_teacher(mvq_dump["pool"], mvq_dump["factory"], out, mvq=mvq_dump["cfg"], **kw)
    (tdir / QUANTIZER_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"{tdir / QUANTIZER_NAME} is missing"):
        mvq_teacher_fields(out, "frm", load_dump_config(out, "frm"))


# ---------------------------------------------------------------------------------------------------------------
# The KD head and loss


def test_ce_loss_values_padding_and_codebook_check():
    logits = torch.zeros(2, 5, 3, 256)  # uniform: CE = log 256 everywhere
    target = torch.randint(0, 256, (2, 4, 3), dtype=torch.uint8)
    loss = mvq_ce_loss(logits, torch.tensor([5, 2]), target, torch.tensor([4, 3]))
    assert torch.allclose(loss, torch.full((2,), float(np.log(256))))
    logits[1, 2:, :, 7] = 100.0  # beyond utterance 1's valid length (2 frames): must not count
    logits[0, 0, 0, int(target[0, 0, 0])] = 50.0  # one confident correct frame-codebook of 4 x 3
    loss2 = mvq_ce_loss(logits, torch.tensor([5, 2]), target, torch.tensor([4, 3]))
    assert torch.allclose(loss2[1], loss[1])
    assert torch.allclose(loss2[0], loss[0] * 11 / 12, atol=1e-4)
    with pytest.raises(ValueError, match="shape \\(2, 4, 2\\).*predicts 3 codebooks"):
        mvq_ce_loss(logits, torch.tensor([5, 2]), target[..., :2], torch.tensor([4, 3]))


def test_head_stacks_teacher_frames_and_learns_fixed_targets():
    torch.manual_seed(0)
    n, t, c = 4, 6, 8
    x = torch.randn(n, t, c)
    lens = torch.tensor([6, 5, 4, 6])
    head = MvqKDHead(c, num_codebooks=2, codebook_size=16, stack=2)
    logits, logit_lens = head(x, lens)
    assert logits.shape == (n, 2 * t, 2, 16) and logit_lens.tolist() == [12, 10, 8, 12]
    target = torch.randint(0, 16, (n, 2 * t, 2), dtype=torch.uint8)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = mvq_ce_loss(*head(x, lens), target, 2 * lens).mean().item()
    for _ in range(150):
        opt.zero_grad()
        loss = mvq_ce_loss(*head(x, lens), target, 2 * lens).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_kd_model_with_an_mvq_teacher_masks_other_tasks():
    torch.manual_seed(0)
    teacher = dict(name="asr_t", task="asr", field="asr_t_codebook_indexes", kind="mvq", dim=96, frame_shift=0.04,
                   num_codebooks=4, codebook_size=256)
    model = build_kd_model({"encoder": "tiny", "kd": {"teachers": [teacher]}})
    n, frames = 3, 120  # 1.2 s of fbank -> 27 student frames
    feats = torch.randn(n, frames, 80)
    target = torch.randint(0, 256, (n, 40, 4), dtype=torch.uint8)
    batch = {"features": feats, "feature_lens": torch.full((n,), frames), "cut_ids": ["a", "b", "c"],
             "task": ["kd"] * n, "origin": ["asr", "at", "asr"], "asr_t_codebook_indexes": target,
             "asr_t_codebook_indexes_lens": torch.full((n,), 27), "asr_t_codebook_indexes_mask": torch.ones(n, dtype=bool)}
    model.train()
    loss, info = model(batch)
    assert info["kd_asr_t_utts"] == 2.0  # the "at" cut is masked out
    assert abs(info["kd_asr_t_loss"] / 2 - np.log(256)) < 1.0  # a fresh head: close to uniform
    loss.backward()
    grad = model.kd_heads["asr_t"].proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # The masked cut's targets do not matter; with no cut of the teacher's task there is no loss and no gradient.
    batch2 = dict(batch, asr_t_codebook_indexes=target.clone())
    batch2["asr_t_codebook_indexes"][1] = 255 - target[1]
    model.eval()  # no layer-skip randomness: the two forwards are comparable
    with torch.no_grad():
        assert torch.allclose(model(batch)[0], model(batch2)[0])
    model.zero_grad()
    model.train()
    loss, info = model(dict(batch, origin=["at", "sv", "at"]))
    loss.backward()
    assert info["kd_asr_t_utts"] == 0.0 and loss.item() == 0.0
    grad = model.kd_heads["asr_t"].proj.weight.grad
    assert grad is None or grad.abs().sum() == 0
    bad = dict(batch, asr_t_codebook_indexes=target[..., :2])
    with pytest.raises(ValueError, match="teacher asr_t .*predicts 4 codebooks"):
        model(bad)
