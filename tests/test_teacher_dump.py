"""Teacher dump into Shar fields beside the KD pool's Shar shards, with the real resemblyzer speaker encoder (its
weights ship in its wheel).

Covers: both teacher levels, stock lhotse read-back (``CutSet.from_shar``) vs the float outputs, collation, summary
numbers, resume after an interrupted dump, corrupt-tar detection, too-short audio, dim mismatch, job splits, the
CLI, origin filtering with no-data markers, integer outputs, and several teachers' fields read as one Shar stream.
"""

import dataclasses
import functools
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("resemblyzer")

from lhotse import CutSet, Recording  # noqa: E402
from lhotse.array import Array, TemporalArray  # noqa: E402
from lhotse.dataset.collation import collate_custom_field  # noqa: E402
from lhotse.utils import compute_num_frames  # noqa: E402

from mt2kd_lib.data.shar import export_pool_shar  # noqa: E402
from mt2kd_lib.data.teacher_shar import (  # noqa: E402
    read_kd_cuts,
    read_teacher_cuts,
    shard_is_finished,
    shard_paths,
)
from mt2kd_lib.teachers.dump import dump_teacher, factory_from_config  # noqa: E402
from mt2kd_lib.teachers.resemblyzer_teacher import ResemblyzerTeacher, normalize_volume  # noqa: E402
from mt2kd_lib.teachers.shar_writer import verify_teacher_shard  # noqa: E402
from conftest import load_script

SR = 16000
DURATIONS = [1.0, 2.0, 3.0, 1.5, 0.3, 2.5, 1.2]  # index 4 is shorter than the utterance teacher's 0.5 s minimum
SHORT_ID = "utt4"

UttFactory = functools.partial(ResemblyzerTeacher, level="utterance")
FrameFactory = functools.partial(ResemblyzerTeacher, level="frame")


def _write_cuts(folder: Path, durations: List[float], seed: int = 0) -> CutSet:
    """Tones with speaker-ish harmonics plus noise, one wav per cut."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cuts = []
    for i, d in enumerate(durations):
        t = np.arange(int(d * SR)) / SR
        f0 = 110 + 40 * i
        x = sum(0.08 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 5)) + 0.01 * rng.standard_normal(t.size)
        path = folder / f"utt{i}.wav"
        sf.write(path, x.astype(np.float32), SR)
        cut = Recording.from_file(path, recording_id=f"utt{i}").to_cut()
        cuts.append(dataclasses.replace(cut, id=f"utt{i}"))
    return CutSet.from_cuts(cuts)


def _pool(cuts: CutSet, folder: Path, shard_size: int) -> Path:
    export_pool_shar(cuts, folder, shard_size)
    return folder


def _dumped(out: Path, teacher: str, pool: Path) -> List:
    """The pool cuts that carry the teacher's output, read back with lhotse's Shar reader."""
    field = {"resemblyzer": "resemblyzer_embedding", "resemblyzer_frame": "resemblyzer_frame_embedding",
             "spk": "spk_embedding"}[teacher]
    return [c for c in read_teacher_cuts(out, teacher, pool) if c.custom.get(field) is not None]


def _audio(cut) -> np.ndarray:
    return cut.load_audio()[0].astype(np.float32)


@pytest.fixture(scope="module")
def threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 busy cores: one thread is far faster for the LSTM
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data(tmp_path_factory, threads) -> Dict:
    root = tmp_path_factory.mktemp("dump")
    cuts = _write_cuts(root / "wav", DURATIONS)
    return {"root": root, "cuts": cuts, "pool": _pool(cuts, root / "pool", 3)}


@pytest.fixture(scope="module")
def teachers(threads) -> Dict[str, ResemblyzerTeacher]:
    return {"utterance": ResemblyzerTeacher("utterance"), "frame": ResemblyzerTeacher("frame")}


@pytest.fixture(scope="module")
def utt_dump(data) -> Dict:
    out = data["root"] / "out"
    summary = dump_teacher(data["pool"], UttFactory, out, num_threads=1, progress=False)
    return {"out": out, "summary": summary}


@pytest.fixture(scope="module")
def frame_dump(data) -> Dict:
    out = data["root"] / "out"
    summary = dump_teacher(data["pool"], FrameFactory, out, num_jobs=2, progress=False)
    return {"out": out, "summary": summary}


# ---------------------------------------------------------------------------------------------------------------
# The teacher itself


def test_resemblyzer_teacher_outputs(data, teachers):
    cuts = list(data["cuts"])
    a, b = _audio(cuts[1]), _audio(cuts[3])
    utt, frm = teachers["utterance"], teachers["frame"]
    assert utt.spec.dim == 256 and utt.spec.task == "sv" and utt.spec.level == "utterance"
    assert frm.spec.frame_shift == 0.01 and frm.spec.level == "frame"
    e = utt.infer_batch([a, b])
    assert [x.shape for x in e] == [(256,), (256,)]
    np.testing.assert_allclose([np.linalg.norm(x) for x in e], 1.0, atol=1e-5)
    # identical to the official embed_utterance on the volume-normalised (not VAD-trimmed) audio
    ref = utt.encoder.embed_utterance(normalize_volume(a))
    np.testing.assert_allclose(e[0], ref, atol=1e-6)
    # two different "speakers" are not identical
    assert float(e[0] @ e[1]) < 0.999
    s = frm.infer_batch([a, b])
    assert s[0].shape == ((a.size + 80) // 160, 256) and s[1].shape == ((b.size + 80) // 160, 256)
    assert np.abs(s[0]).max() < 1.0  # LSTM hidden states live in (-1, 1)
    # padded batching is exact: b alone gives the same states as b in a batch with the longer a
    np.testing.assert_allclose(frm.infer_batch([b])[0], s[1], atol=1e-5)
    with pytest.raises(ValueError, match="shorter than teacher resemblyzer"):
        utt.infer_batch([np.zeros(1000, np.float32)])
    with pytest.raises(ValueError, match="level"):
        ResemblyzerTeacher("segment")


# ---------------------------------------------------------------------------------------------------------------
# Utterance level


def test_utterance_dump_files_readback_and_summary(data, teachers, utt_dump):
    out, summary = utt_dump["out"], utt_dump["summary"]
    tdir = out / "resemblyzer"
    field = "resemblyzer_embedding"
    for i in range(3):
        for key in ("tar", "crc", "done"):
            assert shard_paths(tdir, field, i)[key].is_file(), (i, key)
        for key in ("tmp_tar", "tmp_crc", "tmp_blobs"):
            assert not shard_paths(tdir, field, i)[key].exists()
    # too-short audio: skipped, counted, listed in the done marker
    skipped = json.loads(shard_paths(tdir, field, 1)["done"].read_text())["skipped"]
    assert skipped[0][0] == SHORT_ID and "min_duration" in skipped[0][1]
    assert summary["num_skipped"] == 1 and summary["num_written"] == 6 and summary["num_cuts"] == 7

    tp = summary["tick_power"]
    cuts = _dumped(out, "resemblyzer", data["pool"])
    assert [c.id for c in cuts] == [c.id for c in data["cuts"] if c.id != SHORT_ID]
    by_id = {c.id: c for c in data["cuts"]}
    errs = []
    for c in cuts:
        assert isinstance(c.custom[field], Array)
        stored = c.load_custom(field)
        np.testing.assert_array_equal(stored, c.load_resemblyzer_embedding())  # cut.load_<field>()
        ref = teachers["utterance"].infer_batch([_audio(by_id[c.id])])[0]
        errs.append(np.abs(stored - ref).max())
    errs = np.array(errs)
    # lilcom error: non-zero (lossy), within half a tick, and what the summary measured
    assert 0 < errs.max() <= 2.0 ** (tp - 1) + 1e-6
    assert errs.max() == pytest.approx(summary["max_abs_error"], abs=1e-5)

    batch = collate_custom_field(CutSet.from_cuts(cuts), field)
    assert tuple(batch.shape) == (6, 256)
    np.testing.assert_allclose(batch[2].numpy(), cuts[2].load_custom(field))

    # tiny shards: the tars' fixed overhead (headers, 10 KiB records) dominates; the frame test checks compression
    assert summary["bytes_per_value"] == pytest.approx(4 * summary["tar_to_float32_ratio"])
    assert summary["float32_bytes"] == 6 * 256 * 4
    assert summary["hours"] == pytest.approx((sum(DURATIONS) - 0.3) / 3600, rel=1e-3)
    assert summary["this_run"]["audio_seconds_per_second"] > 0
    assert 0 < summary["rms_rel_error"] < 0.02 and summary["max_rel_error"] < 0.02
    on_disk = json.loads((tdir / "summary.json").read_text())
    assert on_disk["tar_bytes"] == summary["tar_bytes"] == sum(
        shard_paths(tdir, field, i)["tar"].stat().st_size for i in range(3))


# ---------------------------------------------------------------------------------------------------------------
# Frame level, two worker processes


def test_frame_dump_two_workers(data, teachers, frame_dump):
    out, summary = frame_dump["out"], frame_dump["summary"]
    assert summary["num_shards"] == summary["num_shards_done"] == 3
    assert summary["num_skipped"] == 0  # 0.3 s is long enough for frame level
    field = "resemblyzer_frame_embedding"
    cuts = _dumped(out, "resemblyzer_frame", data["pool"])
    by_id = {c.id: c for c in data["cuts"]}
    tol = 2.0 ** (summary["tick_power"] - 1) + 1e-5
    for c in cuts:
        ta = c.custom[field]
        assert isinstance(ta, TemporalArray) and ta.frame_shift == 0.01 and ta.temporal_dim == 0
        stored = c.load_custom(field)
        assert stored.shape == (compute_num_frames(c.duration, 0.01, SR), 256)
        ref = teachers["frame"].infer_batch([_audio(by_id[c.id])])[0]
        assert np.abs(stored - ref).max() <= tol
    padded, lens = collate_custom_field(CutSet.from_cuts(cuts), field, pad_value=0.0)
    assert tuple(padded.shape) == (7, 300, 256)
    assert lens.tolist() == [int(d * 100) for d in DURATIONS]
    assert float(padded[4, 30:].abs().max()) == 0.0
    assert summary["tar_to_float32_ratio"] <= 0.3


def test_several_teachers_as_one_shar_stream(data, utt_dump, frame_dump):
    stream, names = read_kd_cuts(data["pool"], utt_dump["out"], ["resemblyzer", "resemblyzer_frame"],
                                 shuffle_shards=False)
    assert stream.is_lazy and names == ["resemblyzer_embedding", "resemblyzer_frame_embedding"]
    pool = CutSet.from_cuts(list(stream))
    assert list(pool.ids) == list(data["cuts"].ids)  # every cut has some teacher (the frame teacher covers utt4)
    keep = ("resemblyzer_embedding", "resemblyzer_frame_embedding")
    fields = {c.id: {k for k in (c.custom or {}) if k in keep and c.custom[k] is not None} for c in pool}
    assert all(c.custom[f + "_crc32"] > 0 for c in pool for f in fields[c.id])  # write-time crc travels along
    assert fields[SHORT_ID] == {"resemblyzer_frame_embedding"}  # missing teacher output = absent field
    assert all(f == {"resemblyzer_embedding", "resemblyzer_frame_embedding"} for k, f in fields.items()
               if k != SHORT_ID)
    both = pool.filter(lambda c: c.id != SHORT_ID)
    assert tuple(collate_custom_field(both, "resemblyzer_embedding").shape) == (6, 256)
    assert collate_custom_field(both, "resemblyzer_frame_embedding", pad_value=0.0)[0].shape[0] == 6


# ---------------------------------------------------------------------------------------------------------------
# Robustness


def _snapshot(tdir: Path, index: int, field: str = "resemblyzer_embedding") -> Dict[str, tuple]:
    out = {}
    for key in ("tar", "crc", "done"):
        st = shard_paths(tdir, field, index)[key].stat()
        out[key] = (st.st_mtime_ns, st.st_size)
    return out


def test_resume_after_interrupted_dump(tmp_path, threads):
    cuts = _write_cuts(tmp_path / "wav", [1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 0.7], seed=1)
    pool = _pool(cuts, tmp_path / "pool", 2)
    wav = tmp_path / "wav" / "utt4.wav"  # belongs to shard 2 with shard_size 2
    hidden = tmp_path / "utt4.wav.bak"
    shutil.move(wav, hidden)
    out = tmp_path / "out"
    field = "resemblyzer_embedding"
    with pytest.raises(RuntimeError, match="utt4"):
        dump_teacher(pool, UttFactory, out, num_threads=1, progress=False)
    tdir = out / "resemblyzer"
    assert [shard_is_finished(tdir, field, i)[0] for i in range(4)] == [True, True, False, False]
    assert not shard_paths(tdir, field, 2)["tmp_blobs"].exists()  # the failed shard cleaned up after itself
    with pytest.raises(RuntimeError, match="not finished"):
        read_teacher_cuts(out, "resemblyzer", pool)
    before = {i: _snapshot(tdir, i) for i in (0, 1)}

    shutil.move(hidden, wav)
    summary = dump_teacher(pool, UttFactory, out, num_threads=1, progress=False)
    assert summary["this_run"]["shards_processed"] == 2
    assert summary["num_shards_done"] == 4 and summary["num_written"] == 7
    assert {i: _snapshot(tdir, i) for i in (0, 1)} == before  # verified shards not rewritten
    assert len(_dumped(out, "resemblyzer", pool)) == 7

    # resuming over another pool export (other shards) is refused instead of mixing shard layouts
    other = _pool(cuts, tmp_path / "pool3", 3)
    with pytest.raises(ValueError, match="pool"):
        dump_teacher(other, UttFactory, out, num_threads=1, progress=False)
    with pytest.raises(ValueError, match="another KD pool"):
        read_teacher_cuts(out, "resemblyzer", other)


def test_corrupt_archive_detected_and_redone(tmp_path, threads):
    cuts = _write_cuts(tmp_path / "wav", [1.0, 1.3, 0.9, 1.1], seed=2)
    pool = _pool(cuts, tmp_path / "pool", 2)
    out = tmp_path / "out"
    # two independent jobs split the shards
    s0 = dump_teacher(pool, UttFactory, out, job_index=0, num_job_splits=2, num_threads=1, progress=False)
    assert s0["num_shards_done"] == 1
    s1 = dump_teacher(pool, UttFactory, out, job_index=1, num_job_splits=2, num_threads=1, progress=False)
    assert s1["num_shards_done"] == 2 and s1["this_run"]["shards_processed"] == 1
    tdir = out / "resemblyzer"
    field = "resemblyzer_embedding"

    # truncated tar: verification names the file; the cheap resume check notices; re-running redoes it
    tar = shard_paths(tdir, field, 0)["tar"]
    data = tar.read_bytes()
    tar.write_bytes(data[:600])  # inside the first member's data
    with pytest.raises(RuntimeError, match="resemblyzer_embedding.000000.tar"):
        verify_teacher_shard(tdir, field, 0)
    assert not shard_is_finished(tdir, field, 0)[0]
    keep = _snapshot(tdir, 1)
    s = dump_teacher(pool, UttFactory, out, num_threads=1, progress=False)
    assert s["this_run"]["shards_processed"] == 1 and _snapshot(tdir, 1) == keep
    assert verify_teacher_shard(tdir, field, 0) == 2

    # same-size corruption of a lilcom blob passes the cheap check but not a full re-verification
    tar1 = shard_paths(tdir, field, 1)["tar"]
    raw = bytearray(tar1.read_bytes())
    for k in range(512 + 40, 512 + 80):  # inside the first member's data (after its 512-byte tar header)
        raw[k] ^= 0x5A
    tar1.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="resemblyzer_embedding.000001.tar"):
        verify_teacher_shard(tdir, field, 1)
    s = dump_teacher(pool, UttFactory, out, num_threads=1, progress=False)
    assert s["this_run"]["shards_processed"] == 0
    s = dump_teacher(pool, UttFactory, out, num_threads=1, progress=False, verify_existing=True)
    assert s["this_run"]["shards_processed"] == 1
    verify_teacher_shard(tdir, field, 1)


def _wrong_dim_teacher(device: str) -> ResemblyzerTeacher:
    """The real teacher with a spec that lies about its dimension."""
    t = ResemblyzerTeacher("utterance", device=device)
    t.spec = dataclasses.replace(t.spec, dim=128)
    return t


def test_bad_inputs(tmp_path, data, threads):
    with pytest.raises(ValueError, match=r"resemblyzer.*utt0|utt0.*resemblyzer"):
        dump_teacher(data["pool"], _wrong_dim_teacher, tmp_path / "o", tick_power=-10, num_threads=1,
                     progress=False)
    assert not shard_paths(tmp_path / "o" / "resemblyzer", "resemblyzer_embedding", 0)["done"].exists()
    with pytest.raises(ValueError, match="shard_size"):
        export_pool_shar(data["cuts"], tmp_path / "p", shard_size=0)
    with pytest.raises(ValueError, match="job_index"):
        dump_teacher(data["pool"], UttFactory, tmp_path / "o2", job_index=2, num_job_splits=2)
    with pytest.raises(FileNotFoundError, match="pool.json"):
        dump_teacher(tmp_path / "nowhere", UttFactory, tmp_path / "o2")
    dup = _pool(CutSet.from_cuts([data["cuts"][0], data["cuts"][0]]), tmp_path / "dup", 2)
    with pytest.raises(ValueError, match="two outputs for cut utt0"):
        dump_teacher(dup, UttFactory, tmp_path / "o3", num_threads=1, progress=False)


def test_cli_with_teachers_yaml(tmp_path, data, threads, monkeypatch):
    cli = load_script("local/dump_teacher.py")

    pool = _pool(data["cuts"].subset(first=3), tmp_path / "pool", 2)
    cfg = tmp_path / "teachers.yaml"
    cfg.write_text("teachers:\n  spk:\n    kind: resemblyzer\n    level: utterance\n    dim: 256\n")
    f = factory_from_config("spk", cfg)
    assert f.kind == "resemblyzer" and f.kwargs == {"level": "utterance"} and f.expected_dim == 256
    argv = ["dump_teacher.py", "--pool-dir", str(pool), "--teacher", "spk", "--teachers-config", str(cfg),
            "--out-dir", str(tmp_path / "out"), "--num-threads", "1", "--no-progress"]
    monkeypatch.setattr(sys, "argv", argv)
    cli.main()
    got = _dumped(tmp_path / "out", "spk", pool)
    assert len(got) == 3 and got[0].load_spk_embedding().shape == (256,)
    cfg.write_text("teachers:\n  spk:\n    kind: resemblyzer\n    dim: 192\n")
    with pytest.raises(ValueError, match="dim 192"):
        factory_from_config("spk", cfg)("cpu")


class _NanTeacher(ResemblyzerTeacher):
    """The real teacher, except that the output of the one utterance of 2.5 s (utt5) carries a NaN / an inf."""

    bad = float("nan")

    def infer_batch(self, audios):
        outs = super().infer_batch(audios)
        for a, o in zip(audios, outs):
            if len(a) == int(2.5 * SR):
                o[0] = self.bad
        return outs


class _InfTeacher(_NanTeacher):
    bad = float("inf")


@pytest.mark.parametrize("factory", [_NanTeacher, _InfTeacher])
def test_non_finite_output_refused_at_dump_naming_the_cut(tmp_path, data, threads, factory):
    out = tmp_path / "o"
    with pytest.raises(ValueError, match="non-finite values in the output for cut utt5"):
        dump_teacher(data["pool"], functools.partial(factory, level="utterance"), out, num_threads=1,
                     progress=False)
    tdir, field = out / "resemblyzer", "resemblyzer_embedding"
    assert shard_is_finished(tdir, field, 0)[0] and not shard_is_finished(tdir, field, 1)[0]  # utt5's shard


def test_flipped_byte_named_at_training_read(tmp_path, threads):
    """One flipped byte in a finished archive: the KD data loader's collation names the shard and the cut."""
    from mt2kd_lib.data.dataset import collate_optional_field

    cuts = _write_cuts(tmp_path / "wav", [1.0, 1.2, 0.9, 1.1], seed=3)
    pool = _pool(cuts, tmp_path / "pool", 2)
    out = tmp_path / "out"
    dump_teacher(pool, FrameFactory, out, num_threads=1, progress=False)
    field = "resemblyzer_frame_embedding"  # a TemporalArray per cut

    def read():
        return CutSet.from_cuts(list(read_kd_cuts(pool, out, ["resemblyzer_frame"], shuffle_shards=False)[0]))

    assert collate_optional_field(read(), field)[f"{field}_mask"].all()  # intact: loads
    tar = shard_paths(out / "resemblyzer_frame", field, 1)["tar"]
    raw = bytearray(tar.read_bytes())
    # the shard's second cut (utt3): its data member follows the first cut's data + json members
    victim = read()[3]
    blob = bytes(victim.custom[field].array.storage_key)
    pos = bytes(raw).index(blob[:64]) + 40  # inside that cut's lilcom blob
    raw[pos] ^= 0x10
    tar.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match=rf"cut {victim.id} \(shard .*cuts.000001.jsonl.gz\)"):
        collate_optional_field(read(), field)


def test_origin_and_integer_outputs(tmp_path, data, threads):
    """A teacher dumped for one origin: other cuts get the no-data marker; integer outputs are stored as .npy."""
    cuts = CutSet.from_cuts(c.with_custom("origin", "sv" if i % 2 == 0 else "asr") for i, c in enumerate(data["cuts"]))
    pool = _pool(cuts, tmp_path / "pool", 3)

    class _Codes(ResemblyzerTeacher):  # the real teacher's embedding quantised to 8-bit codes, as an MVQ teacher
        def infer_batch(self, audios):
            return [np.clip(np.round(o * 127 + 128), 0, 255).astype(np.uint8) for o in super().infer_batch(audios)]

    out = tmp_path / "out"
    s = dump_teacher(pool, functools.partial(_Codes, level="utterance"), out, origin="sv", num_threads=1,
                     progress=False)
    sv = [c.id for c in cuts if c.custom["origin"] == "sv" and c.id != SHORT_ID]
    assert s["num_written"] == len(sv) and s["num_covered"] == 4 and s["num_skipped"] == 1  # utt4: too short
    got = {c.id: c for c in read_teacher_cuts(out, "resemblyzer", pool)}
    assert list(got) == list(cuts.ids)
    assert sorted(k for k, c in got.items() if c.custom.get("resemblyzer_embedding") is not None) == sorted(sv)
    codes = got[sv[0]].load_custom("resemblyzer_embedding")
    assert codes.dtype == np.uint8 and codes.shape == (256,)
    want = _Codes("utterance").infer_batch([_audio(got[sv[0]])])[0]
    np.testing.assert_array_equal(codes, want)  # integers are stored losslessly
