"""The real-corpus prepare CLI on tiny official-layout trees: counts, ids, texts, speakers, labels, trials, rates."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, Fbank, FbankConfig

from mt2kd_lib.data.contract import check_contract, cuts_path, read_class_labels, read_trials, trials_path
import corpus_layouts as L  # tests/ is on sys.path (pytest rootdir-less import mode)

REPO = Path(__file__).resolve().parents[1]
PREPARE = REPO / "egs" / "librispeech_audioset_voxceleb" / "prepare.sh"  # runs local/prepare_librispeech_audioset_voxceleb.py


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Build every tree once and run the real prepare.sh -> CLI on them (one subprocess: the expensive part)."""
    root = tmp_path_factory.mktemp("corpora")
    exp = {
        "libri": L.make_librispeech(root / "librispeech"),
        "vox1": L.make_voxceleb1(root / "vox1"),
        "vox2": L.make_voxceleb2(root / "vox2"),
        "audioset": L.make_audioset(root / "audioset"),
        "musan": L.make_musan(root / "musan_root"),
    }
    out = root / "data" / "manifests"
    # run.sh stages 1-3 (prepare, features, lang) on the recipe, configured the way a user does it: corpus
    # folders via config.sh variables (here from the environment).
    env = {**os.environ, "dl_dir": str(root / "absent"), "librispeech_dir": str(root / "librispeech"),
           "audioset_dir": str(root / "audioset"), "voxceleb1_dir": str(root / "vox1"),
           "voxceleb2_dir": str(root / "vox2"), "musan_dir": str(root / "musan_root"), "MT2KD_PYTHON": sys.executable}
    cmd = ["bash", str(REPO / "run.sh"), "--recipe", "egs/librispeech_audioset_voxceleb", "--stage", "1",
           "--stop-stage", "3", "--data-dir", str(root / "data"), "--exp-dir", str(root / "exp"), "--nj", "2",
           "--vocab-size", "40"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return root, out, exp, proc.stderr


def test_run_sh_features_and_lang(corpora):
    """Stages 2-3 of run.sh ran on the prepared corpora: fbank for every split, and a BPE model."""
    root, out, _, _ = corpora
    index = json.loads((out / "index.json").read_text())
    from mt2kd_lib.data.contract import all_splits
    from mt2kd_lib.data.features import fbank_cuts_path

    for task, split in all_splits(index):
        cuts = CutSet.from_file(fbank_cuts_path(root / "data" / "fbank", task, split))
        cut = next(iter(cuts))
        assert cut.has_features and cut.load_features().shape[1] == 80
    assert (root / "data" / "lang_bpe_40" / "bpe.model").is_file()


def _cuts(out: Path, task: str, split: str) -> CutSet:
    return CutSet.from_file(cuts_path(out, task, split)).to_eager()


def test_index_and_contract(corpora):
    _, out, _, _ = corpora
    index = json.loads((out / "index.json").read_text())
    assert index["asr"] == {"train": "train-960", "dev": ["dev-clean", "dev-other"], "test": ["test-clean", "test-other"]}
    assert index["at"] == {"train": "full", "eval": ["eval"]}
    assert index["sv"]["train"] == "vox2-dev" and index["sv"]["test"] == "vox1-all"
    assert sorted(index["sv"]["trials"]) == ["E", "O", "O-clean"]
    assert index["kd"] == {"pool": "pool"} and index["musan"] == "musan_cuts.jsonl.gz"
    report = check_contract(out)
    assert report.ok, report.problems


def test_librispeech(corpora):
    _, out, exp, log = corpora
    train = _cuts(out, "asr", "train-960")
    want = {k: v for p in ("train-clean-100", "train-clean-360", "train-other-500") for k, v in exp["libri"][p].items()}
    assert sorted(train.ids) == sorted(want)  # missing flac and wordless line are dropped
    for cut in train:
        assert cut.supervisions[0].text == want[cut.id]  # upper case kept, spaces collapsed
        assert cut.supervisions[0].speaker == cut.id.split("-")[0]
        assert cut.sampling_rate == 16000
    resampled = train["100-200-0001"]
    assert sf.info(resampled.recording.sources[0].source).samplerate == 8000  # source file untouched ...
    assert resampled.load_audio().shape == (1, int(round(0.5 * 16000)))  # ... read at 16 kHz
    for part in ("dev-clean", "dev-other", "test-clean", "test-other"):
        assert sorted(_cuts(out, "asr", part).ids) == sorted(exp["libri"][part])
    assert "skipped 1 transcript lines without words" in log and "100-200-0002 (missing flac)" in log
    assert "resampled 1 cuts from 8000 Hz" in log


def test_voxceleb(corpora):
    _, out, exp, _ = corpora
    train = _cuts(out, "sv", "vox2-dev")
    assert sorted(train.ids) == sorted(exp["vox2"]["dev"])  # vox2 test speaker (aac/ archive) not in train
    assert {c.supervisions[0].speaker for c in train} == {"id00012", "id00015"}
    test = _cuts(out, "sv", "vox1-all")  # E list present -> all of VoxCeleb1
    assert sorted(test.ids) == sorted(exp["vox1"]["dev"] + exp["vox1"]["test"])
    assert test["id10270-vid70A-00002"].load_audio().shape == (1, 8000)  # 8 kHz file resampled
    assert test["id10001-vid01A-00001"].supervisions[0].gender == "f"
    o = read_trials(trials_path(out, "O"))
    assert len(o) == 4 and o[0] == (1, "id10270-vid70A-00001", "id10270-vid70B-00001")  # unknown one skipped
    assert read_trials(trials_path(out, "O-clean")) == o
    e = read_trials(trials_path(out, "E"))
    assert e[2] == (0, "id10002-vid02A-00002", "id10271-vid71B-00001")


def test_audioset(corpora):
    _, out, exp, log = corpora
    assert [r[1] for r in read_class_labels(out)] == [m for m, _ in L.AUDIOSET_CLASSES]
    assert read_class_labels(out)[1][2] == "Male speech, man speaking"
    train = _cuts(out, "at", "full")
    want = {**exp["audioset"]["balanced"], **exp["audioset"]["unbalanced"]}
    assert {c.id: c.supervisions[0].custom["audio_event"] for c in train} == want
    ev = _cuts(out, "at", "eval")
    assert {c.id: c.supervisions[0].custom["audio_event"] for c in ev} == exp["audioset"]["eval"]
    whole = ev["evalwhole01"]
    assert (whole.start, whole.duration) == (1.0, 1.0) and whole.load_audio().shape == (1, 16000)
    assert ev["evalclip001"].duration == 1.0
    assert "1 of 3 segments have no audio file" in log and "/m/zzzzz" in log


def test_kd_pool_and_musan(corpora):
    _, out, exp, _ = corpora
    pool = _cuts(out, "kd", "pool")
    origins = {}
    for c in pool:
        origins.setdefault(c.custom["origin"], set()).add(c.id)
    assert origins["asr"] == set(_cuts(out, "asr", "train-960").ids)
    assert origins["at"] == set(_cuts(out, "at", "full").ids)
    assert origins["sv"] == set(_cuts(out, "sv", "vox2-dev").ids)
    musan = CutSet.from_file(out / "musan_cuts.jsonl.gz")
    assert {c.id: c.custom["musan_part"] for c in musan} == exp["musan"]
    assert all(len(c.supervisions) == 0 and c.sampling_rate == 16000 for c in musan)


def test_index_update_keeps_other_tasks(corpora, tmp_path):
    from mt2kd_lib.data.corpora.paper import CorpusPaths, prepare_paper_corpora

    root, out, _, _ = corpora
    with pytest.raises(ValueError, match="no corpus directory"):
        prepare_paper_corpora(CorpusPaths(), tmp_path)
    index = json.loads((out / "index.json").read_text())
    # A second run with one corpus (into a copy, the module fixture stays intact) keeps the other tasks.
    m = tmp_path / "m"
    m.mkdir()
    for f in out.iterdir():
        (m / f.name).write_bytes(f.read_bytes())
    new = prepare_paper_corpora(CorpusPaths(librispeech_dir=root / "librispeech", librispeech_train_parts=("train-clean-100",)), m, 1,
                                existing_index=index)
    assert new["asr"]["train"] == "train-clean-100" and new["at"] == index["at"] and new["sv"] == index["sv"]
    pool = CutSet.from_file(cuts_path(m, "kd", "pool")).to_eager()
    assert sum(c.custom["origin"] == "asr" for c in pool) == 2  # rebuilt from train-clean-100 (2 usable cuts)
    assert check_contract(m).ok


def test_trial_errors_and_options(corpora, tmp_path, caplog):
    from mt2kd_lib.data.corpora.paper import CorpusPaths, prepare_voxceleb_splits
    from mt2kd_lib.data.corpora.voxceleb import map_trials, voxceleb_cut_id

    root, _, _, _ = corpora
    assert voxceleb_cut_id("id10270/x6uYqmx31kE/00001.wav") == "id10270-x6uYqmx31kE-00001"
    with pytest.raises(ValueError, match="nosuch"):
        known = {f"id1027{s}-vid7{s}{u}" for s in "01" for u in ("A-00001", "A-00002", "B-00001")}
        map_trials(root / "vox1" / "veri_test.txt", known, strict=True)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 id10270/vid70A/00001.wav\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        map_trials(bad, set())
    # VoxCeleb1 dev in training: E (explicitly asked) would test on training speakers -> clear error ...
    paths = CorpusPaths(voxceleb1_dir=root / "vox1", voxceleb1_dev_in_train=True, trials=["O", "E"])
    with pytest.raises(ValueError, match="VoxCeleb1 dev"):
        prepare_voxceleb_splits(paths, tmp_path / "m1", 1)
    # ... and in auto mode E is left out, the test split is VoxCeleb1 test only.
    (tmp_path / "m2").mkdir()
    with caplog.at_level(logging.WARNING):
        idx = prepare_voxceleb_splits(CorpusPaths(voxceleb1_dir=root / "vox1"), tmp_path / "m2", 1)
    assert idx == {"train": "vox1-dev", "test": "vox1-test", "trials": ["O", "O-clean"]}
    assert "leaving them out" in caplog.text


def test_bad_corpus_inputs(corpora, tmp_path):
    from mt2kd_lib.data.corpora.audioset import prepare_audioset_cuts, read_segments_csv
    from mt2kd_lib.data.corpora.librispeech import prepare_librispeech_part
    from mt2kd_lib.data.corpora.voxceleb import prepare_voxceleb_cuts

    root, _, _, _ = corpora
    with pytest.raises(FileNotFoundError, match="train-clean-5"):
        prepare_librispeech_part(root / "librispeech", "train-clean-5")  # a mini_librispeech part, not there
    with pytest.raises(ValueError, match="unknown LibriSpeech part"):
        prepare_librispeech_part(root / "librispeech", "train-clean-7")
    csv = tmp_path / "eval_segments.csv"
    csv.write_text("# c\nabc, 1.0, x, \"/m/0\"\n")
    with pytest.raises(ValueError, match="eval_segments.csv:2"):
        read_segments_csv(csv)
    with pytest.raises(FileNotFoundError, match="class_labels_indices.csv"):
        prepare_audioset_cuts(tmp_path, "eval")
    m4a = tmp_path / "vox2" / "dev" / "aac" / "id00020" / "v" / "00001.m4a"
    m4a.parent.mkdir(parents=True)
    m4a.write_bytes(b"\0" * 64)  # not decodable: every file fails -> clear error, not an empty manifest
    with pytest.raises(RuntimeError, match="convert to wav"):
        prepare_voxceleb_cuts(tmp_path / "vox2", 2)


def test_shar_round_trip(corpora, tmp_path):
    from mt2kd_lib.data.shar import export_shar, read_shar

    _, out, _, _ = corpora
    cuts = _cuts(out, "asr", "train-960").to_eager()
    # Audio shards (flac): the 8 kHz-resampled cut comes back as 16 kHz audio with the same samples.
    paths = export_shar(cuts, tmp_path / "audio", shard_size=2)
    assert len(paths["cuts"]) == 3 and len(paths["recording"]) == 3
    back = read_shar(tmp_path / "audio")
    got = {c.id: c for c in back}
    assert sorted(got) == sorted(cuts.ids)
    for cut in cuts:
        a, b = cut.load_audio(), got[cut.id].load_audio()
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3  # flac is 16-bit: quantisation only
        assert got[cut.id].supervisions[0].text == cut.supervisions[0].text
    # Feature shards (lilcom): features attached in memory, read back lazily.
    feats = cuts.compute_and_store_features(Fbank(FbankConfig(num_mel_bins=40)), tmp_path / "fbank")
    export_shar(feats, tmp_path / "feats", shard_size=4)
    fb = {c.id: c.load_features() for c in read_shar(tmp_path / "feats", shuffle_shards=True, seed=1)}
    for cut in feats:
        ref = cut.load_features()
        assert fb[cut.id].shape == ref.shape and np.abs(fb[cut.id] - ref).max() < 0.1  # lilcom is lossy
    with pytest.raises(ValueError, match="format 'mp4'"):
        export_shar(cuts, tmp_path / "x", fields={"recording": "mp4"})
    with pytest.raises(FileNotFoundError, match="no Shar shards"):
        read_shar(tmp_path / "empty")
