"""Tiny corpora in the exact official layouts (LibriSpeech, VoxCeleb1/2, AudioSet, MUSAN), for tests.

Audio is short random noise (numpy + soundfile). Each builder returns what a correct preparation must find, so
tests compare manifests against the trees they built — including the deliberately bad items.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

SR = 16000


HAVE_FFMPEG = shutil.which("ffmpeg") is not None


def write_audio(path: Path, seconds: float, sr: int = SR, seed: int = 0) -> Path:
    """Noise of ``seconds`` at ``sr`` Hz; format from the suffix (.wav/.flac/.ogg/.mp3 by soundfile, .m4a/.aac
    by ffmpeg from a temporary wav)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
    if path.suffix.lower() in (".m4a", ".aac"):
        tmp = path.with_suffix(".tmp.wav")
        sf.write(str(tmp), audio, sr)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(tmp), "-c:a", "aac", str(path)], check=True)
        tmp.unlink()
    else:
        sf.write(str(path), audio, sr)
    return path


LIBRISPEECH_PARTS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean",
                     "test-other")


def make_librispeech(root: Path, parts: Sequence[str] = LIBRISPEECH_PARTS) -> Dict[str, Dict[str, str]]:
    """All 7 parts, speaker ``<100+i>`` chapter ``<200+i>``, 2 utterances each -> ``{part: {utt_id: text}}``.

    Bad items in train-clean-100: a transcript line whose flac is missing (``100-200-0002``), a line without
    words (``100-200-0003``, whose flac exists) and one 8 kHz flac (``100-200-0001``, must be resampled).
    """
    expected: Dict[str, Dict[str, str]] = {}
    for i, part in enumerate(LIBRISPEECH_PARTS):
        if part not in parts:
            continue
        spk, chap = 100 + i, 200 + i
        d = root / "LibriSpeech" / part / str(spk) / str(chap)
        texts = {f"{spk}-{chap}-{u:04d}": f"HELLO WORLD {part.upper()} NUMBER {u}" for u in range(2)}
        lines = [f"{k} {v}" for k, v in texts.items()]
        for u, utt in enumerate(texts):
            sr = 8000 if (part == "train-clean-100" and u == 1) else SR
            write_audio(d / f"{utt}.flac", 0.4 + 0.1 * u, sr, seed=i * 10 + u)
        if part == "train-clean-100":
            lines.append(f"{spk}-{chap}-0002 THIS FLAC IS MISSING")
            write_audio(d / f"{spk}-{chap}-0003.flac", 0.3, SR, seed=99)
            lines.append(f"{spk}-{chap}-0003")
            lines[0] = lines[0].replace("HELLO WORLD", "HELLO   WORLD")  # runs of spaces get collapsed
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
        expected[part] = texts
    return expected


# VoxCeleb1: two dev speakers and two verification-test speakers (ids from the published test range).
VOX1_SPEAKERS = {"id10001": "dev", "id10002": "dev", "id10270": "test", "id10271": "test"}
VOX2_SPEAKERS = {"id00012": "dev", "id00015": "dev", "id00017": "test"}


def _vox_utts(speakers: Dict[str, str]) -> List[Tuple[str, str, str]]:
    """(speaker, video, utt) triples: two videos per speaker, utterances 00001 and 00002 in the first."""
    out = []
    for spk in speakers:
        out += [(spk, f"vid{spk[-2:]}A", "00001"), (spk, f"vid{spk[-2:]}A", "00002"), (spk, f"vid{spk[-2:]}B", "00001")]
    return out


def make_voxceleb1(root: Path) -> Dict[str, List[str]]:
    """``<root>/wav/<spk>/<video>/<nnnnn>.wav`` + ``vox1_meta.csv`` + trial lists -> ``{"dev": ids, "test": ids}``.

    ``id10270-vid70A-00002`` is 8 kHz (resampled). Trial lists: ``veri_test.txt`` (O; its last line names the
    unknown ``id10270/nosuch/00009.wav``), ``veri_test2.txt`` (O cleaned), ``list_test_all.txt`` (E, draws on
    dev speakers too).
    """
    lines = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    lines += [f"{spk}\tName_{spk}\t{'m' if n % 2 else 'f'}\tIreland\t{s}" for n, (spk, s) in enumerate(VOX1_SPEAKERS.items())]
    root.mkdir(parents=True, exist_ok=True)
    (root / "vox1_meta.csv").write_text("\n".join(lines) + "\n")
    ids: Dict[str, List[str]] = {"dev": [], "test": []}
    for n, (spk, vid, utt) in enumerate(_vox_utts(VOX1_SPEAKERS)):
        sr = 8000 if (spk, vid, utt) == ("id10270", "vid70A", "00002") else SR
        write_audio(root / "wav" / spk / vid / f"{utt}.wav", 0.5, sr, seed=100 + n)
        ids[VOX1_SPEAKERS[spk]].append(f"{spk}-{vid}-{utt}")
    o = ["1 id10270/vid70A/00001.wav id10270/vid70B/00001.wav",
         "0 id10270/vid70A/00001.wav id10271/vid71A/00001.wav",
         "1 id10271/vid71A/00002.wav id10271/vid71B/00001.wav",
         "0 id10270/vid70A/00002.wav id10271/vid71B/00001.wav",
         "1 id10270/vid70A/00001.wav id10270/nosuch/00009.wav"]
    (root / "veri_test.txt").write_text("\n".join(o) + "\n")
    (root / "veri_test2.txt").write_text("\n".join(o[:4]) + "\n")
    e = ["1 id10001/vid01A/00001.wav id10001/vid01B/00001.wav",
         "0 id10001/vid01A/00001.wav id10270/vid70A/00001.wav",
         "0 id10002/vid02A/00002.wav id10271/vid71B/00001.wav"]
    (root / "list_test_all.txt").write_text("\n".join(e) + "\n")
    return ids


def make_voxceleb2(root: Path, ext: str = ".wav") -> Dict[str, List[str]]:
    """VoxCeleb2 in the archives' folders: dev speakers under ``dev/aac/``, the test speaker under ``aac/`` (the
    test archive); ``vox2_meta.csv`` in its comma-padded official format. ``ext``: ``.wav`` (converted, the
    common practice) or ``.m4a`` (as distributed; needs ffmpeg)."""
    lines = ["VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set "]
    lines += [f"{spk} ,n0{spk[2:]} ,m ,{s} " for spk, s in VOX2_SPEAKERS.items()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "vox2_meta.csv").write_text("\n".join(lines) + "\n")
    ids: Dict[str, List[str]] = {"dev": [], "test": []}
    for n, (spk, vid, utt) in enumerate(_vox_utts(VOX2_SPEAKERS)):
        split = VOX2_SPEAKERS[spk]
        base = root / "dev" / "aac" if split == "dev" else root / "aac"
        write_audio(base / spk / vid / f"{utt}{ext}", 0.5, SR, seed=200 + n)
        ids[split].append(f"{spk}-{vid}-{utt}")
    return ids


AUDIOSET_CLASSES = [("/m/09x0r", "Speech"), ("/m/05zppz", "Male speech, man speaking"), ("/m/04rlf", "Music"),
                    ("/m/0jbk", "Animal")]


def _segment_csv(rows: List[Tuple[str, float, float, str]]) -> str:
    head = ["# Segments csv created Sun Mar  5 10:54:31 2017", "# num_ytids=2, num_segs=2, num_unique_labels=2,"
            " num_positive_labels=3", "# YTID, start_seconds, end_seconds, positive_labels"]
    return "\n".join(head + [f'{y}, {s:.3f}, {e:.3f}, "{m}"' for y, s, e, m in rows]) + "\n"


def make_audioset(root: Path) -> Dict[str, Dict[str, str]]:
    """csvs + wavs -> ``{subset: {ytid: audio_event}}`` for the rows that have audio.

    balanced: ``-a_b12cdEfg`` (named ``<ytid>_<start>_<end>.wav``, ytid with '-' and '_'), ``Xy9-Q_0000a``
    (``<ytid>.wav``, an unknown extra mid that is ignored), ``missing0000`` (no wav: skipped).
    unbalanced: ``unbal000001``. eval: ``evalclip001`` and ``evalwhole01`` (a 3 s whole-video file whose
    labelled segment 1..2 s must be cut out).
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "class_labels_indices.csv", "w") as f:
        f.write("index,mid,display_name\n")
        f.writelines(f'{i},{mid},"{name}"\n' for i, (mid, name) in enumerate(AUDIOSET_CLASSES))
    audio = root / "audio"
    (root / "balanced_train_segments.csv").write_text(_segment_csv([
        ("-a_b12cdEfg", 30.0, 40.0, "/m/09x0r,/m/05zppz"), ("Xy9-Q_0000a", 0.0, 10.0, "/m/04rlf,/m/zzzzz"),
        ("missing0000", 5.0, 15.0, "/m/0jbk")]))
    write_audio(audio / "balanced" / "-a_b12cdEfg_30.000_40.000.wav", 1.0, SR, seed=300)
    write_audio(audio / "balanced" / "Xy9-Q_0000a.wav", 1.0, SR, seed=301)
    (root / "unbalanced_train_segments.csv").write_text(_segment_csv([("unbal000001", 10.0, 20.0, "/m/0jbk")]))
    write_audio(audio / "unbalanced" / "unbal000001_10.000_20.000.wav", 1.0, SR, seed=302)
    (root / "eval_segments.csv").write_text(_segment_csv([
        ("evalclip001", 0.0, 10.0, "/m/0jbk,/m/09x0r"), ("evalwhole01", 1.0, 2.0, "/m/04rlf")]))
    write_audio(audio / "eval" / "evalclip001.wav", 1.0, SR, seed=303)
    write_audio(audio / "eval" / "evalwhole01.wav", 3.0, SR, seed=304)
    return {"balanced": {"-a_b12cdEfg": "0;1", "Xy9-Q_0000a": "2"}, "unbalanced": {"unbal000001": "3"},
            "eval": {"evalclip001": "0;3", "evalwhole01": "2"}}


def make_musan(root: Path, parts: Sequence[str] = ("music", "noise", "speech"),
               bad_annotations: bool = False) -> Dict[str, str]:
    """``<root>/musan/{music,noise,speech}/<source>/*.wav`` + ANNOTATIONS -> ``{cut_id: part}``.

    ``bad_annotations``: the music ANNOTATIONS line has one field (lhotse's parser stops on it; we never read it)."""
    base = root / "musan"
    files = {"music": ("fma", "music-fma-0000", "music-fma-0000 classical N Some_Artist\n"),
             "noise": ("free-sound", "noise-free-sound-0000", "noise-free-sound-0000 http://example.org\n"),
             "speech": ("librivox", "speech-librivox-0000", "speech-librivox-0000 male english\n")}
    files = {k: v for k, v in files.items() if k in parts}
    if bad_annotations and "music" in files:
        files["music"] = files["music"][:2] + ("music-fma-0000\n",)
    for n, (part, (src, stem, ann)) in enumerate(files.items()):
        write_audio(base / part / src / f"{stem}.wav", 0.6, SR, seed=400 + n)
        (base / part / src / "ANNOTATIONS").write_text(ann)
    return {stem: part for part, (_, stem, _) in files.items()}


# One balanced row per AudioSet file naming the downloaders write (see mt2kd_lib/data/corpora/audioset.py), with
# every accepted extension; m4a only where ffmpeg is there to write it.
AUDIOSET_VARIANTS = [  # (ytid, start, end, file name)
    ("plainId0001", 0.0, 10.0, "plainId0001.wav"),
    ("--decimal01", 30.0, 40.0, "--decimal01_30.000_40.000.flac"),
    ("int_clip_01", 30.0, 40.0, "int_clip_01_30_40.ogg"),
    ("msClip-0001", 30.0, 40.0, "msClip-0001_30000_40000.wav"),
    ("startOnly01", 20.0, 30.0, "startOnly01_20.wav"),
    ("startDec_01", 20.0, 30.0, "startDec_01_20.000.mp3"),
    ("dash-range1", 10.0, 20.0, "dash-range1_10-20.wav"),
    ("-yPrefixed1", 0.0, 10.0, "Y-yPrefixed1.wav"),
    ("_yPrefTimes", 5.0, 15.0, "Y_yPrefTimes_5.000_15.000.flac"),
    ("YstartsWith", 0.0, 10.0, "YstartsWith.wav"),  # a ytid that itself begins with 'Y'
    ("m4aClip0001", 0.0, 10.0, "m4aClip0001_0.000_10.000.m4a"),
]


def make_audioset_variants(root: Path, audio_dir: Optional[Path] = None) -> Dict[str, Dict[str, str]]:
    """balanced (every naming variant, label Speech) + eval (one clip), no unbalanced csv ->
    ``{subset: {ytid: audio_event}}`` for the rows whose files exist. Also a file that matches no row."""
    root.mkdir(parents=True, exist_ok=True)
    audio_dir = audio_dir or root
    with open(root / "class_labels_indices.csv", "w") as f:
        f.write("index,mid,display_name\n")
        f.writelines(f'{i},{mid},"{name}"\n' for i, (mid, name) in enumerate(AUDIOSET_CLASSES))
    rows = [v for v in AUDIOSET_VARIANTS if HAVE_FFMPEG or not v[3].endswith(".m4a")]
    (root / "balanced_train_segments.csv").write_text(_segment_csv([(y, s, e, "/m/09x0r") for y, s, e, _ in rows]))
    for n, (_, _, _, name) in enumerate(rows):
        write_audio(audio_dir / "clips" / name, 1.0, SR, seed=500 + n)
    write_audio(audio_dir / "clips" / "notInCsv001_0_10.wav", 1.0, SR, seed=599)
    (root / "eval_segments.csv").write_text(_segment_csv([("evalOnly001", 0.0, 10.0, "/m/04rlf")]))
    write_audio(audio_dir / "Y" / "YevalOnly001.flac", 1.0, SR, seed=600)
    return {"balanced": {y: "0" for y, _, _, _ in rows}, "eval": {"evalOnly001": "2"}}
