"""Bad input never becomes a silently wrong manifest: it is repaired with a logged count or dropped by name."""

import logging

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from mt2kd_lib.data import contract
from mt2kd_lib.data.sanitize import sanitize_cuts


def _cut(path, sr=16000, seconds=0.5, text="HELLO WORLD", speaker="s1", write=True, samples=None):
    if write:
        n = int(sr * seconds) if samples is None else samples
        sf.write(str(path), (0.1 * np.sin(np.arange(n) / 5)).astype(np.float32), sr)
    rec = Recording.from_file(path) if write and (samples is None or samples > 0) else Recording(
        id=path.stem, sources=[], sampling_rate=sr, num_samples=int(sr * seconds), duration=seconds)
    if not write or samples == 0:
        from lhotse.audio import AudioSource

        rec = Recording(id=path.stem, sources=[AudioSource(type="file", channels=[0], source=str(path))],
                        sampling_rate=sr, num_samples=max(samples or 0, 0) if write else int(sr * seconds),
                        duration=(samples or 0) / sr if write else seconds)
    sup = SupervisionSegment(id=path.stem, recording_id=rec.id, start=0, duration=rec.duration, text=text,
                             speaker=speaker)
    return MonoCut(id=path.stem, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


def test_sanitize_drops_and_repairs_by_name(tmp_path, caplog):
    good = _cut(tmp_path / "good.wav")
    missing = _cut(tmp_path / "missing.wav", write=False)
    corrupt_path = tmp_path / "corrupt.wav"
    corrupt_path.write_bytes(b"RIFF\x00\x00not really a wav file")
    corrupt = _cut(tmp_path / "corrupt.wav", write=False)
    empty = _cut(tmp_path / "zero.wav", samples=0)
    resample = _cut(tmp_path / "eight_k.wav", sr=8000)
    no_text = _cut(tmp_path / "no_text.wav", text="  ")
    digits = _cut(tmp_path / "digits.wav", text="123 456")
    with caplog.at_level(logging.INFO):
        out = sanitize_cuts(CutSet.from_cuts([good, missing, corrupt, empty, resample, no_text, digits]), "asr", "t")
    assert sorted(out.ids) == ["eight_k", "good"]
    assert out["eight_k"].sampling_rate == 16000
    assert out["eight_k"].load_audio().shape[1] == 8000  # 0.5 s at 16 kHz after resampling
    log = caplog.text
    for expected in ("resampled 1 cuts from 8000 Hz", "missing audio file", "missing.wav", "unreadable audio file",
                     "corrupt.wav", "zero-length audio", "empty transcript", "no_text", "non-text transcript",
                     "'123 456'", "kept 2 of 7 cuts"):
        assert expected in log, expected


def test_sanitize_sv_needs_speaker_and_refuses_all_bad(tmp_path):
    nospk = _cut(tmp_path / "nospk.wav", speaker=None)
    with pytest.raises(ValueError, match="no usable cuts"):
        sanitize_cuts(CutSet.from_cuts([nospk]), "sv", "sv test")


def test_contract_reports_unknown_trial_ids_and_bad_labels(tmp_path):
    m = tmp_path / "manifests"
    m.mkdir()
    a, b = _cut(tmp_path / "a.wav", speaker="x"), _cut(tmp_path / "b.wav", speaker="y")
    CutSet.from_cuts([a, b]).to_file(contract.cuts_path(m, "sv", "train"))
    CutSet.from_cuts([a, b]).to_file(contract.cuts_path(m, "sv", "test"))
    contract.trials_path(m, "O").write_text("1 a b\n0 a ghost\n")
    contract.write_index(m, {"sv": {"train": "train", "test": "test", "trials": ["O"]}})
    report = contract.check_contract(m)
    assert not report.ok and any("ghost" in p for p in report.problems)
    contract.trials_path(m, "O").write_text("yes a b\n")
    with pytest.raises(ValueError, match="sv_trials_O.txt:1"):
        contract.check_contract(m)
    # A dev trial list must use the sv.dev split's cuts, not the test ones.
    c = _cut(tmp_path / "c.wav", speaker="z")
    CutSet.from_cuts([c]).to_file(contract.cuts_path(m, "sv", "dev"))
    contract.trials_path(m, "O").write_text("0 a b\n")
    contract.trials_path(m, "dev").write_text("0 c a\n")
    contract.write_index(m, {"sv": {"train": "train", "test": "test", "trials": ["O"], "dev": "dev",
                                    "dev_trials": ["dev"]}})
    report = contract.check_contract(m)
    assert report.problems == [f"{contract.trials_path(m, 'dev')}: 1 ids are not sv dev cuts, e.g. ['a']"]
    contract.write_index(m, {"sv": {"train": "train", "test": "test", "trials": ["O"], "dev_trials": ["dev"]}})
    assert any("sv.dev_trials needs sv.dev" in p for p in contract.check_contract(m).problems)


def test_audio_event_parsing_names_the_cut():
    assert contract.parse_audio_event("0;7", 10, "c1") == [0, 7]
    with pytest.raises(ValueError, match="c2.*empty"):
        contract.parse_audio_event("", 10, "c2")
    with pytest.raises(ValueError, match="c3.*outside"):
        contract.parse_audio_event("3;12", 10, "c3")
    with pytest.raises(ValueError, match="c4"):
        contract.parse_audio_event("dog;cat", 10, "c4")


def test_missing_index_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare stage"):
        contract.read_index(tmp_path)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_truncated_file_dropped_by_name(tmp_path, caplog, suffix):
    """A file cut short after its header was written (interrupted copy) still claims its full length in the header;
    it is dropped by name instead of failing the features stage later."""
    good = _cut(tmp_path / f"good{suffix}", seconds=1.0)
    cut = _cut(tmp_path / f"short{suffix}", seconds=1.0)
    raw = (tmp_path / f"short{suffix}").read_bytes()
    (tmp_path / f"short{suffix}").write_bytes(raw[: len(raw) // 2])
    with caplog.at_level(logging.INFO):
        out = sanitize_cuts(CutSet.from_cuts([good, cut]), "asr", "t")
    assert out.ids == ["good"] if isinstance(out.ids, list) else list(out.ids) == ["good"]
    assert "dropped 1 cuts: truncated audio file" in caplog.text and f"short{suffix}" in caplog.text
    assert out["good"].load_audio().shape == (1, 16000)
