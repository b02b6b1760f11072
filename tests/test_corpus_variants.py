"""The paper recipe on corpora as users have them: some parts only, every AudioSet naming, VoxCeleb2 as m4a, a
MUSAN with a malformed ANNOTATIONS file; a missing selected part fails before anything is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lhotse import CutSet

import corpus_layouts as L  # tests/ is on sys.path (pytest rootdir-less import mode)
from mt2kd_lib.data.contract import check_contract, cuts_path

REPO = Path(__file__).resolve().parents[1]
PREPARE = REPO / "egs" / "librispeech_audioset_voxceleb" / "prepare.sh"


def _env(root: Path, **settings: str) -> dict:
    """config.sh variables from the environment, the way a user overrides them; absent corpora left out."""
    return {**os.environ, "dl_dir": str(root / "absent"), "MT2KD_PYTHON": sys.executable,
            **{k: str(v) for k, v in settings.items()}}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Subsets + naming variants, through run.sh stages 1-3 (prepare, features, lang) of the paper recipe."""
    root = tmp_path_factory.mktemp("variants")
    vox2_ext = ".m4a" if L.HAVE_FFMPEG else ".wav"
    exp = {
        "libri": L.make_librispeech(root / "ls", parts=("train-clean-100", "dev-clean", "test-clean")),
        "audioset": L.make_audioset_variants(root / "as", audio_dir=root / "as_audio"),
        "vox1": L.make_voxceleb1(root / "vox1"),
        "vox2": L.make_voxceleb2(root / "vox2", ext=vox2_ext),
        "musan": L.make_musan(root / "musan", parts=("music", "noise"), bad_annotations=True),
    }
    env = _env(root, librispeech_dir=root / "ls", librispeech_train_parts="train-clean-100",
               librispeech_dev_parts="dev-clean", librispeech_test_parts="test-clean",
               audioset_dir=root / "as", audioset_audio_dir=root / "as_audio", audioset_train_parts="balanced",
               voxceleb1_dir=root / "vox1", voxceleb2_dir=root / "vox2", musan_dir=root / "musan",
               musan_parts="music,noise")
    cmd = ["bash", str(REPO / "run.sh"), "--recipe", "egs/librispeech_audioset_voxceleb", "--stage", "1",
           "--stop-stage", "3", "--data-dir", str(root / "data"), "--exp-dir", str(root / "exp"), "--nj", "2",
           "--vocab-size", "40"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    if not L.HAVE_FFMPEG:
        print("ffmpeg not installed: VoxCeleb2 tested as wav, the m4a AudioSet clip left out")
    return root, root / "data" / "manifests", exp, proc.stderr


def test_subsets_index_and_contract(variants):
    root, out, exp, _ = variants
    index = json.loads((out / "index.json").read_text())
    assert index["asr"] == {"train": "train-clean-100", "dev": ["dev-clean"], "test": ["test-clean"]}
    assert index["at"] == {"train": "balanced", "eval": ["eval"]}
    assert index["sv"]["train"] == "vox2-dev"
    assert check_contract(out).ok
    assert sorted(CutSet.from_file(cuts_path(out, "asr", "dev-clean")).ids) == sorted(exp["libri"]["dev-clean"])
    # Stages 2-3 ran: fbank of every split, BPE model.
    assert (root / "data" / "fbank" / "asr_cuts_test-clean.jsonl.gz").is_file()
    assert (root / "data" / "lang_bpe_40" / "bpe.model").is_file()


def test_every_audioset_naming_found(variants):
    _, out, exp, log = variants
    train = CutSet.from_file(cuts_path(out, "at", "balanced")).to_eager()
    assert {c.id: c.supervisions[0].custom["audio_event"] for c in train} == exp["audioset"]["balanced"]
    ev = CutSet.from_file(cuts_path(out, "at", "eval"))
    assert {c.id: c.supervisions[0].custom["audio_event"] for c in ev} == exp["audioset"]["eval"]
    for cut in train:  # every format decodes, at 16 kHz, 1 s (m4a: ffmpeg adds AAC priming, a few ms)
        audio = cut.load_audio()
        assert cut.sampling_rate == 16000 and abs(audio.shape[1] - 16000) < 1200, cut.id
    assert "segments have no audio file" not in log  # every row matched


def test_voxceleb2_m4a(variants):
    _, out, exp, _ = variants
    if not L.HAVE_FFMPEG:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg): VoxCeleb2 m4a not tested")
    train = CutSet.from_file(cuts_path(out, "sv", "vox2-dev")).to_eager()
    assert sorted(train.ids) == sorted(exp["vox2"]["dev"])
    cut = train[exp["vox2"]["dev"][0]]
    assert cut.recording.sources[0].type == "command" and "ffmpeg" in cut.recording.sources[0].source
    assert abs(cut.load_audio().shape[1] - 8000) < 1200  # 0.5 s
    feats = CutSet.from_file(REPO / out.parent / "fbank" / "sv_cuts_vox2-dev.jsonl.gz")
    assert next(iter(feats)).load_features().shape[1] == 80


def test_musan_from_audio_alone(variants):
    _, out, exp, _ = variants
    musan = CutSet.from_file(out / "musan_cuts.jsonl.gz")
    assert {c.id: c.custom["musan_part"] for c in musan} == exp["musan"]  # malformed ANNOTATIONS not read


def test_audioset_names():
    from mt2kd_lib.data.corpora.audioset import _ytid_of

    ytids = {v[0] for v in L.AUDIOSET_VARIANTS} | {"a_b-c_1"}
    for ytid, _, _, name in L.AUDIOSET_VARIANTS:
        assert _ytid_of(Path(name).stem, ytids) == ytid, name
    assert _ytid_of("a_b-c_1_3_4", ytids) == "a_b-c_1"  # '_' in the id, parsed from the right
    for stem in ("plainId0001_x_y", "plainId0001_10_20_30", "plainId0001-10", "Zplainid0001", "plainId0001_1-2-3"):
        assert _ytid_of(stem, ytids) is None, stem


def _prepare(root: Path, manifest_dir: Path, **settings) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PREPARE), "--manifest-dir", str(manifest_dir), "--nj", "1"],
                          capture_output=True, text=True, env=_env(root, **settings), timeout=300)


def test_missing_selected_part_fails_before_writing(tmp_path):
    L.make_librispeech(tmp_path / "ls", parts=("train-clean-100", "dev-clean", "test-clean"))
    L.make_musan(tmp_path / "musan", parts=("music",))
    out = tmp_path / "data" / "manifests"
    # Defaults = the paper's parts: most are absent here -> every missing part named, nothing written.
    proc = _prepare(tmp_path, out, librispeech_dir=tmp_path / "ls", musan_dir=tmp_path / "musan")
    assert proc.returncode != 0
    for missing in ("'train-clean-360'", "'dev-other'", "'test-other'", "librispeech_train_parts", "'noise'"):
        assert missing in proc.stderr, missing
    assert not (tmp_path / "data").exists()
    # Unselected parts absent is fine.
    proc = _prepare(tmp_path, out, librispeech_dir=tmp_path / "ls", musan_dir=tmp_path / "musan",
                    librispeech_train_parts="train-clean-100", librispeech_dev_parts="dev-clean",
                    librispeech_test_parts="test-clean", musan_parts="music")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "index.json").read_text())["asr"]["dev"] == ["dev-clean"]


def test_late_failure_leaves_no_partial_folder(tmp_path):
    """AudioSet whose files match no csv row fails after LibriSpeech was prepared: still nothing written, and the
    error shows what was found and the accepted names."""
    L.make_librispeech(tmp_path / "ls", parts=("train-clean-100",))
    L.make_audioset(tmp_path / "as")
    for wav in (tmp_path / "as" / "audio").rglob("*.wav"):
        wav.rename(wav.with_name("clip-" + wav.name))  # a naming we do not know
    out = tmp_path / "data" / "manifests"
    proc = _prepare(tmp_path, out, librispeech_dir=tmp_path / "ls", librispeech_train_parts="train-clean-100",
                    librispeech_dev_parts="", librispeech_test_parts="", audioset_dir=tmp_path / "as")
    assert proc.returncode != 0
    assert "no audio file under" in proc.stderr and "clip--a_b12cdEfg_30.000_40.000.wav" in proc.stderr
    assert "<ytid>_<start>_<end>" in proc.stderr and "Y<ytid>" in proc.stderr
    assert not (tmp_path / "data").exists()
    assert not list(tmp_path.glob(".manifests.partial-*"))
