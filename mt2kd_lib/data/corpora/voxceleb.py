"""VoxCeleb1/2 -> SV CutSets split by the official speaker sets, and VoxCeleb1-O/E/H trial lists -> our cut ids.

Layouts (after unzipping the official archives)::

    VoxCeleb1: <vox1>/wav/<speaker>/<video>/<nnnnn>.wav          + <vox1>/vox1_meta.csv (tab-separated,
               header "VoxCeleb1 ID	VGGFace1 ID	Gender	Nationality	Set", Set = dev|test)
    VoxCeleb2: <vox2>/dev/aac/<speaker>/<video>/<nnnnn>.m4a      + <vox2>/vox2_meta.csv (comma-separated,
               <vox2>/aac/...  (the test archive)                  header "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set ")

Audio is found recursively by extension (``.wav``, ``.flac``, ``.m4a``, ... see :mod:`scan`), so trees where
VoxCeleb2 was converted to wav (``dev/wav/<speaker>/<video>/<nnnnn>.wav``, the common practice) work unchanged.
The official m4a files are read through ffmpeg (:func:`mt2kd_lib.data.corpora.scan.ffmpeg_recording`); without
ffmpeg every m4a fails and a clear error says to install it or convert to wav.
``iden_split.txt`` (the identification split) is not needed. A speaker's set comes from the meta csv; without it, VoxCeleb1 uses the published verification test speakers
(id10270..id10309) and VoxCeleb2 the archive folder (a path part named ``test`` -> test, else dev).

Cut id scheme (the same as lhotse's VoxCeleb recipe): ``<speaker>-<video>-<nnnnn>``, e.g. trial path
``id10270/x6uYqmx31kE/00001.wav`` -> cut ``id10270-x6uYqmx31kE-00001``.

Why not ``lhotse.recipes.prepare_voxceleb``: in lhotse 1.33 it downloads the trial list into the working
directory whenever VoxCeleb1 is given (machines without internet fail), only globs ``*.m4a`` for VoxCeleb2 and
has no E/H lists. We reuse its id scheme and meta-file formats.
"""

import csv
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from lhotse import CutSet, SupervisionSegment

from mt2kd_lib.data.corpora.scan import AUDIO_EXTENSIONS, recordings_from_files, whole_cut

VOX1_TEST_SPEAKERS = {f"id{n}" for n in range(10270, 10310)}
# Trial list name -> official file names (the first found wins). "-clean" are the cleaned lists (*2.txt);
# openslr's voxceleb1_test_v2.txt is the same list as veri_test2.txt.
TRIAL_FILES: Dict[str, Tuple[str, ...]] = {
    "O": ("veri_test.txt",),
    "O-clean": ("veri_test2.txt", "voxceleb1_test_v2.txt"),
    "E": ("list_test_all.txt",),
    "E-clean": ("list_test_all2.txt",),
    "H": ("list_test_hard.txt",),
    "H-clean": ("list_test_hard2.txt",),
}


def voxceleb_cut_id(trial_path: str) -> str:
    """``id10270/x6uYqmx31kE/00001.wav`` -> ``id10270-x6uYqmx31kE-00001`` (refusing paths of another shape)."""
    parts = trial_path.strip().split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{trial_path!r}: expected '<speaker>/<video>/<utt>.<ext>'")
    return "-".join(parts[:2] + [parts[2].rsplit(".", 1)[0]])


def read_speaker_sets(meta_csv: Union[str, Path]) -> Dict[str, Tuple[str, str]]:
    """``vox1_meta.csv``/``vox2_meta.csv`` -> ``{speaker: (set, gender)}`` with set ``dev``/``test``.

    Both official files are read: VoxCeleb1's is tab-separated, VoxCeleb2's comma-separated with padded fields.
    """
    meta_csv = Path(meta_csv)
    with open(meta_csv, newline="") as f:
        header = f.readline()
        delimiter = "\t" if "\t" in header else ","
        names = [h.strip().lower() for h in header.split(delimiter)]
        try:
            set_col, gender_col = names.index("set"), names.index("gender")
        except ValueError:
            raise ValueError(f"{meta_csv}: header needs 'Set' and 'Gender' columns, got {names}")
        out = {}
        for n, row in enumerate(csv.reader(f, delimiter=delimiter), 2):
            row = [c.strip() for c in row]
            if not row or not row[0]:
                continue
            if len(row) <= max(set_col, gender_col):
                raise ValueError(f"{meta_csv}:{n}: expected {len(names)} fields, got {row}")
            out[row[0]] = (row[set_col].lower(), row[gender_col].lower())
    return out


def _speaker_set(speaker: str, rel_path: Path, version: int, meta: Dict[str, Tuple[str, str]]) -> str:
    """The speaker's official set: meta csv, else the fallbacks in the module docs (``rel_path`` is root-relative
    so that a 'test' in the user's own directory names does not count)."""
    if speaker in meta:
        return meta[speaker][0]
    if version == 1:
        return "test" if speaker in VOX1_TEST_SPEAKERS else "dev"
    return "test" if "test" in rel_path.parts[:-3] else "dev"


def _audio_files(root: Path) -> List[Path]:
    files = [p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()]
    return sorted(files)


def prepare_voxceleb_cuts(root: Union[str, Path], version: int, num_jobs: int = 1) -> Dict[str, CutSet]:
    """VoxCeleb``version`` (1 or 2) under ``root`` -> ``{"dev": CutSet, "test": CutSet}`` (a set may be empty).

    Every cut spans one utterance file and has one supervision with ``speaker`` (and ``gender`` from the meta csv
    when known). Unreadable files are skipped with a logged count; duplicate ids (the same utterance under two
    folders) raise ValueError naming them.
    """
    if version not in (1, 2):
        raise ValueError(f"VoxCeleb version must be 1 or 2, got {version}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VoxCeleb{version} directory not found: {root}")
    meta_path = root / f"vox{version}_meta.csv"
    meta = read_speaker_sets(meta_path) if meta_path.is_file() else {}
    if not meta:
        logging.warning(f"voxceleb{version}: no {meta_path.name}; speaker sets inferred (see module docs)")
    files = _audio_files(root)
    if not files:
        raise FileNotFoundError(f"voxceleb{version}: no audio ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    items, seen = [], {}
    for p in files:
        rec_id = f"{p.parent.parent.name}-{p.parent.name}-{p.stem}"
        if rec_id in seen:
            raise ValueError(f"voxceleb{version}: utterance {rec_id} appears twice: {seen[rec_id]} and {p}")
        seen[rec_id] = p
        items.append((rec_id, p))
    recordings = recordings_from_files(items, num_jobs, f"voxceleb{version}")
    out: Dict[str, List] = {"dev": [], "test": []}
    for rec in recordings:
        path = seen[rec.id]
        speaker = path.parent.parent.name
        split = _speaker_set(speaker, path.relative_to(root), version, meta)
        if split not in out:
            raise ValueError(f"voxceleb{version}: speaker {speaker} has unknown set {split!r} in {meta_path.name}")
        gender = meta.get(speaker, ("", None))[1] or None
        sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0, duration=rec.duration, channel=0,
                                 speaker=speaker, gender=gender, custom={"vox_version": version, "vox_set": split})
        out[split].append(whole_cut(rec, sup))
    logging.info(f"voxceleb{version}: {len(out['dev'])} dev and {len(out['test'])} test utterances")
    return {k: CutSet.from_cuts(v) for k, v in out.items()}


def find_trial_lists(
    dirs: Iterable[Union[str, Path]], names: Optional[Sequence[str]] = None
) -> Dict[str, Path]:
    """``{name: path}`` for the trial lists found in ``dirs`` (and their ``meta/`` subfolders).

    ``names`` (e.g. ``["O", "E-clean"]``) restricts the search; a requested name that is not found raises
    FileNotFoundError listing the file names looked for.
    """
    wanted = list(TRIAL_FILES) if names is None else list(names)
    unknown = [n for n in wanted if n not in TRIAL_FILES]
    if unknown:
        raise ValueError(f"unknown trial list names {unknown}; expected some of {list(TRIAL_FILES)}")
    search = [d for base in dirs if base for d in (Path(base), Path(base) / "meta")]
    found = {}
    for name in wanted:
        hits = [d / f for f in TRIAL_FILES[name] for d in search if (d / f).is_file()]
        if hits:
            found[name] = hits[0]
        elif names is not None:
            raise FileNotFoundError(f"trial list {name} ({' or '.join(TRIAL_FILES[name])}) not in {search}")
    return found


def map_trials(
    path: Union[str, Path], known_ids: Set[str], strict: bool = False
) -> List[Tuple[int, str, str]]:
    """Read an official trial list and map its paths to cut ids, keeping trials whose cuts both exist.

    Trials naming an utterance that is not in ``known_ids`` (absent from the corpus, or dropped as unreadable) are
    skipped with a logged count — or raise ValueError naming the first when ``strict``. Malformed lines raise
    ValueError naming the line. No trial left -> ValueError.
    """
    path = Path(path)
    trials, skipped = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or parts[0] not in ("0", "1"):
                raise ValueError(f"{path}:{n}: expected '<0|1> <spk/video/utt.wav> <spk/video/utt.wav>', got {line.strip()!r}")
            try:
                a, b = voxceleb_cut_id(parts[1]), voxceleb_cut_id(parts[2])
            except ValueError as e:
                raise ValueError(f"{path}:{n}: {e}")
            missing = [i for i in (a, b) if i not in known_ids]
            if missing:
                if strict:
                    raise ValueError(f"{path}:{n}: trial names unknown utterance {missing[0]}")
                skipped.append(f"line {n}: {missing[0]}")
                continue
            trials.append((int(parts[0]), a, b))
    if skipped:
        logging.warning(f"{path.name}: skipped {len(skipped)} trials naming unknown utterances; e.g. {skipped[:3]}")
    if not trials:
        raise ValueError(f"{path}: no trial left whose utterances are both in the test cuts")
    return trials


def write_trials(trials: Sequence[Tuple[int, str, str]], path: Union[str, Path]) -> None:
    """Write ``<label> <cut_id> <cut_id>`` lines (the contract's ``sv_trials_<name>.txt``)."""
    Path(path).write_text("".join(f"{lab} {a} {b}\n" for lab, a, b in trials))
