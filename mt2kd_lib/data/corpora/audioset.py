"""AudioSet -> AT CutSets (lhotse has no AudioSet recipe; this follows icefall's label convention).

Layout of ``<audioset_dir>``::

    class_labels_indices.csv          header "index,mid,display_name", e.g. 0,/m/09x0r,"Speech"
    balanced_train_segments.csv       3 comment lines starting with '#', then
    unbalanced_train_segments.csv       YTID, start_seconds, end_seconds, "mid1,mid2"
    eval_segments.csv
    **/<name>.<ext>                   audio, anywhere below <audioset_dir> (or a separate audio dir)

Audio file names: every naming the common downloaders write is recognised (``<ytid>`` is the csv's YouTube id,
which may itself contain ``-`` and ``_``)::

    <ytid>                      --PJHxphWEs.wav          (plain id; HF/Kaggle mirrors)
    <ytid>_<start>_<end>        --PJHxphWEs_30.000_40.000.wav, --PJHxphWEs_30_40.flac  (audiosetdl & co.)
    <ytid>_<start>-<end>        --PJHxphWEs_30-40.wav
    <ytid>_<start>              --PJHxphWEs_30.wav, --PJHxphWEs_30.000.wav
    Y<ytid>[...]                Y--PJHxphWEs.wav, Y--PJHxphWEs_30.000_40.000.wav  (audioset_tagging_cnn's 'Y' prefix)

``<start>``/``<end>`` may be integers, decimals or milliseconds (``30000_40000``); they are not compared with the
csv (a ytid appears once per csv), only required to be numbers. Extensions: ``AUDIO_EXTENSIONS`` (wav, flac, ogg,
opus, mp3, m4a, aac; AAC is read through ffmpeg, see :mod:`scan`). When no file matches any row, the error lists a few
of the file names found and these patterns.

Each csv row whose audio file exists becomes one cut with id ``<ytid>`` and a supervision whose custom field
``audio_event`` is the ``;``-joined sorted class indices of its mids (the contract's format). Files are taken
to be the 10 s segment clips that AudioSet mirrors distribute; a file that is clearly the whole video (at least
``end_seconds`` long and longer than the segment) is cut to ``[start, end]``. Rows without audio are skipped
with a logged count (most corpora downloaded from YouTube miss some videos); rows with mids that are not in
``class_labels_indices.csv`` lose those mids (logged) and are skipped if none is left.
"""

import csv
import re
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from lhotse import CutSet, SupervisionSegment

from mt2kd_lib.data.corpora.scan import AUDIO_EXTENSIONS, recordings_from_files, whole_cut

SEGMENT_CSVS = {
    "balanced": "balanced_train_segments.csv",
    "unbalanced": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
CLASS_LABELS_CSV = "class_labels_indices.csv"
NAME_PATTERNS = ("<ytid>", "<ytid>_<start>_<end>", "<ytid>_<start>-<end>", "<ytid>_<start>", "Y<ytid>[...]")
_NUMBER = re.compile(r"\d+(\.\d+)?$")


@dataclass(frozen=True)
class Segment:
    """One row of an AudioSet segment csv."""

    ytid: str
    start: float
    end: float
    mids: Tuple[str, ...]


def read_class_labels_csv(path: Union[str, Path]) -> List[Tuple[int, str, str]]:
    """Official ``class_labels_indices.csv`` -> ``[(index, mid, display_name)]``, checked to be 0..K-1."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if [h.strip() for h in reader.fieldnames or []] != ["index", "mid", "display_name"]:
            raise ValueError(f"{path}: header must be index,mid,display_name, got {reader.fieldnames}")
        rows = [(int(r["index"]), r["mid"].strip(), r["display_name"].strip()) for r in reader]
    if [r[0] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: indices must be 0..{len(rows) - 1} in order")
    mids = [r[1] for r in rows]
    if len(set(mids)) != len(mids):
        raise ValueError(f"{path}: duplicate mids")
    return rows


def write_class_labels_csv(rows: List[Tuple[int, str, str]], path: Union[str, Path]) -> None:
    """Write rows back in the official format (quoting display names that contain commas)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows(rows)


def read_segments_csv(path: Union[str, Path]) -> List[Segment]:
    """Official segment csv -> rows; '#' comment lines are skipped, malformed rows raise ValueError naming the line."""
    path = Path(path)
    segments = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f, skipinitialspace=True), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 4:
                raise ValueError(f"{path}:{n}: expected 'YTID, start, end, \"mid,...\"', got {row}")
            try:
                start, end = float(row[1]), float(row[2])
            except ValueError:
                raise ValueError(f"{path}:{n}: start/end are not numbers: {row[1]!r}, {row[2]!r}")
            if end <= start:
                raise ValueError(f"{path}:{n}: end {end} <= start {start}")
            mids = tuple(m.strip() for m in row[3].split(",") if m.strip())
            segments.append(Segment(row[0].strip(), start, end, mids))
    return segments


def _is_time(text: str) -> bool:
    return bool(_NUMBER.match(text))


def _ytid_of(stem: str, ytids: set) -> Optional[str]:
    """The csv ytid a file stem names (see the module docs for the patterns), or None.

    ytids may contain '_' and '-', so candidates are formed by splitting time fields off the right and each one is
    looked up in the csv's ytids; an exact match wins over a 'Y'-prefixed reading (ytids may start with 'Y')."""
    for name in (stem, stem[1:] if stem.startswith("Y") else None):
        if name is None:
            continue
        if name in ytids:
            return name
        head, *times = name.rsplit("_", 2)
        if len(times) == 2 and all(map(_is_time, times)) and head in ytids:  # <ytid>_<start>_<end>
            return head
        head, _, last = name.rpartition("_")
        if head in ytids and (_is_time(last) or (last.count("-") == 1 and all(map(_is_time, last.split("-"))))):
            return head  # <ytid>_<start> or <ytid>_<start>-<end>
    return None


def list_audio_files(audio_dir: Union[str, Path]) -> List[Path]:
    """Every file below ``audio_dir`` with an audio extension (sorted, so the first of duplicates is stable)."""
    return sorted(p for p in Path(audio_dir).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def index_audio_files(audio_dir: Union[str, Path], ytids: set, files: Optional[List[Path]] = None) -> Dict[str, Path]:
    """``{ytid: path}`` for the audio files below ``audio_dir`` whose names match a wanted ytid."""
    found: Dict[str, Path] = {}
    for p in list_audio_files(audio_dir) if files is None else files:
        ytid = _ytid_of(p.stem, ytids)
        if ytid is not None:
            found.setdefault(ytid, p)
    return found


def no_match_message(subset: str, csv_name: str, audio_dir: Path, files: List[Path], ytids: set) -> str:
    """The error when no csv row has a file: what was found, what was looked for, which names are accepted."""
    found = ", ".join(p.name for p in files[:5]) or "no audio files at all"
    wanted = ", ".join(sorted(ytids)[:3])
    return (f"audioset/{subset}: no audio file under {audio_dir} matches a row of {csv_name}. Found {len(files)} "
            f"audio files, e.g. {found}; ytids wanted e.g. {wanted}. Accepted names: {', '.join(NAME_PATTERNS)} "
            f"(start/end: integers, decimals or milliseconds) with extension {'/'.join(AUDIO_EXTENSIONS)}")


def prepare_audioset_cuts(
    audioset_dir: Union[str, Path],
    subset: str,
    num_jobs: int = 1,
    audio_dir: Optional[Union[str, Path]] = None,
) -> CutSet:
    """One AudioSet subset (``balanced``/``unbalanced``/``eval``) as AT cuts with ``audio_event`` labels.

    ``audio_dir`` defaults to ``audioset_dir``. Raises FileNotFoundError for a missing csv and RuntimeError when
    no row of the subset has audio.
    """
    if subset not in SEGMENT_CSVS:
        raise ValueError(f"unknown AudioSet subset {subset!r}; expected one of {list(SEGMENT_CSVS)}")
    audioset_dir = Path(audioset_dir)
    for name in (CLASS_LABELS_CSV, SEGMENT_CSVS[subset]):
        if not (audioset_dir / name).is_file():
            raise FileNotFoundError(f"AudioSet {subset}: {audioset_dir / name} not found")
    mid_to_index = {mid: i for i, mid, _ in read_class_labels_csv(audioset_dir / CLASS_LABELS_CSV)}
    segments = read_segments_csv(audioset_dir / SEGMENT_CSVS[subset])
    dup = len(segments) - len({s.ytid for s in segments})
    if dup:
        raise ValueError(f"{SEGMENT_CSVS[subset]}: {dup} YouTube ids appear more than once")
    audio_dir = Path(audio_dir or audioset_dir)
    ytids = {s.ytid for s in segments}
    all_files = list_audio_files(audio_dir)
    files = index_audio_files(audio_dir, ytids, all_files)
    if segments and not files:
        raise FileNotFoundError(no_match_message(subset, SEGMENT_CSVS[subset], audio_dir, all_files, ytids))
    missing = [s.ytid for s in segments if s.ytid not in files]
    if missing:
        logging.warning(f"audioset/{subset}: {len(missing)} of {len(segments)} segments have no audio file; "
                        f"skipped (e.g. {missing[:3]})")
    labels: Dict[str, str] = {}
    unknown_mids: Dict[str, int] = {}
    for s in segments:
        if s.ytid not in files:
            continue
        idx = sorted({mid_to_index[m] for m in s.mids if m in mid_to_index})
        for m in s.mids:
            if m not in mid_to_index:
                unknown_mids[m] = unknown_mids.get(m, 0) + 1
        if idx:
            labels[s.ytid] = ";".join(map(str, idx))
    if unknown_mids:
        logging.warning(f"audioset/{subset}: mids not in {CLASS_LABELS_CSV} were ignored: {unknown_mids}")
    unlabelled = [y for y in files if y not in labels]
    if unlabelled:
        logging.warning(f"audioset/{subset}: skipped {len(unlabelled)} segments without a known label; e.g. {unlabelled[:3]}")
    items = [(s.ytid, files[s.ytid]) for s in segments if s.ytid in labels]
    if not items:
        raise RuntimeError(f"audioset/{subset}: no segment of {SEGMENT_CSVS[subset]} has labelled audio under "
                           f"{audio_dir}")
    by_id = {s.ytid: s for s in segments}
    cuts = []
    for rec in recordings_from_files(items, num_jobs, f"audioset/{subset}"):
        seg = by_id[rec.id]
        cut = whole_cut(rec)
        if rec.duration >= seg.end and rec.duration > seg.end - seg.start + 0.5:
            # A whole-video file: keep only the labelled segment.
            cut = cut.truncate(offset=seg.start, duration=seg.end - seg.start, preserve_id=True)
        # Supervision times are relative to the cut, so the label spans [0, cut.duration].
        cut.supervisions = [SupervisionSegment(
            id=rec.id, recording_id=rec.id, start=0.0, duration=cut.duration, channel=cut.channel,
            custom={"audio_event": labels[rec.id]})]
        cuts.append(cut)
    return CutSet.from_cuts(cuts)
