"""The manifest contract: what every corpus's prepare step writes, and the one function that checks it.

A corpus plugs into ``run.sh`` by writing these files (lhotse ``jsonl.gz`` CutSets, 16 kHz mono audio) under
``data/<recipe>/manifests/``. Nothing downstream knows which corpus produced them.

ASR (speech recognition)
    ``asr_cuts_<split>.jsonl.gz`` for each split named in ``index.json`` (``asr.train``, ``asr.dev``,
    ``asr.test`` — test may list several, e.g. ``test-clean`` and ``test-other``). Every cut has exactly one
    supervision whose ``text`` is a non-empty transcript (upper-case words separated by single spaces).
AT (audio tagging)
    ``at_cuts_<split>.jsonl.gz`` for ``at.train`` and ``at.eval``. Every cut has one supervision whose custom
    field ``audio_event`` is the ``;``-joined list of class indices (into ``class_labels_indices.csv``),
    as in icefall's AudioSet recipe, e.g. ``"0;7"``. ``class_labels_indices.csv`` has the AudioSet header
    ``index,mid,display_name``.
SV (speaker verification)
    ``sv_cuts_<split>.jsonl.gz`` for ``sv.train`` and ``sv.test``; every supervision has ``speaker``.
    ``sv_trials_<name>.txt`` for each name in ``sv.trials``: VoxCeleb format ``<label> <cut_id> <cut_id>``
    (label 1 = same speaker, 0 = different), every id a cut of the ``sv.test`` split. Optional: ``sv.dev``
    (a split of held-out speakers) and ``sv.dev_trials`` (trial lists over it), so that SV settings can be
    chosen on dev as ASR's are; evaluation reports them apart from the test lists.
KD (unlabelled pool for stage-1 distillation)
    ``kd_cuts_pool.jsonl.gz``: any audio; labels, if present, are ignored. Each cut may carry the custom field
    ``origin`` (``asr``/``at``/``sv``/other) naming the domain it came from; task-ID masking uses it.
Index
    ``index.json``: ``{"asr": {"train": "train", "dev": ["dev"], "test": ["test"]},
    "at": {"train": "train", "eval": ["eval"]}, "sv": {"train": "train", "test": "test", "trials": ["O"],
    "dev": "dev", "dev_trials": ["dev"]},
    "kd": {"pool": "pool"}, "teacher_extra": {...optional...}}``. Split names are free; the file names above
    follow from them. A corpus may leave out a task it does not have; stages that need it then say so.

Optional: ``<task>_cuts_<split>.jsonl.gz`` for splits in ``teacher_extra`` (labelled data only the teachers
see, so that teachers know more than the student can learn from its own labelled data, as in the paper).
"""

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lhotse import CutSet

from mt2kd_lib.metrics.verification import read_trials

SAMPLING_RATE = 16000
TASKS = ("asr", "at", "sv")


def cuts_path(manifest_dir: Path, task: str, split: str) -> Path:
    return Path(manifest_dir) / f"{task}_cuts_{split}.jsonl.gz"


def trials_path(manifest_dir: Path, name: str) -> Path:
    return Path(manifest_dir) / f"sv_trials_{name}.txt"


def class_labels_path(manifest_dir: Path) -> Path:
    return Path(manifest_dir) / "class_labels_indices.csv"


def read_index(manifest_dir: Path) -> dict:
    path = Path(manifest_dir) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest index; did the prepare stage run?")
    with open(path) as f:
        return json.load(f)


def write_index(manifest_dir: Path, index: dict) -> None:
    path = Path(manifest_dir) / "index.json"
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _as_list(value) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def all_splits(index: dict) -> List[Tuple[str, str]]:
    """Every (task, split) pair that has a cuts file, training splits first."""
    pairs = []
    for task, keys in (("asr", ("train", "dev", "test")), ("at", ("train", "eval")), ("sv", ("train", "dev", "test"))):
        for key in keys:
            pairs += [(task, s) for s in _as_list(index.get(task, {}).get(key))]
    pairs += [("kd", s) for s in _as_list(index.get("kd", {}).get("pool"))]
    for task, splits in index.get("teacher_extra", {}).items():
        pairs += [(task, s) for s in _as_list(splits)]
    return pairs


def read_class_labels(manifest_dir: Path) -> List[Tuple[int, str, str]]:
    """Rows ``(index, mid, display_name)`` of class_labels_indices.csv, checked to be 0..K-1 in order."""
    return read_class_labels_file(class_labels_path(manifest_dir))


def read_class_labels_file(path: Path) -> List[Tuple[int, str, str]]:
    """:func:`read_class_labels` for a csv at any path (e.g. one copied next to an exported model)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["index", "mid", "display_name"]:
            raise ValueError(f"{path}: header must be index,mid,display_name, got {reader.fieldnames}")
        rows = [(int(r["index"]), r["mid"], r["display_name"]) for r in reader]
    if [r[0] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: indices must be 0..{len(rows) - 1} in order")
    return rows


def parse_audio_event(value: str, num_classes: int, item: str) -> List[int]:
    """``"0;7"`` -> ``[0, 7]``, refusing empty strings and out-of-range indices (naming the cut)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{item}: empty audio_event label string")
    try:
        labels = [int(v) for v in value.split(";")]
    except ValueError:
        raise ValueError(f"{item}: audio_event {value!r} is not a ';'-joined list of class indices")
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"{item}: audio_event indices {bad} outside 0..{num_classes - 1}")
    return labels


@dataclass
class ContractReport:
    """What :func:`check_contract` found: counts per file, and problems (empty when the contract holds)."""

    counts: Dict[str, int] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_cuts(path: Path, task: str, report: ContractReport, num_classes: Optional[int]) -> Optional[CutSet]:
    if not path.is_file():
        report.problems.append(f"{path}: missing")
        return None
    cuts = CutSet.from_file(path)
    n = 0
    for cut in cuts:
        n += 1
        if cut.sampling_rate != SAMPLING_RATE:
            report.problems.append(f"{path}: cut {cut.id} has sampling rate {cut.sampling_rate}, not {SAMPLING_RATE}")
        if cut.duration <= 0:
            report.problems.append(f"{path}: cut {cut.id} has zero duration")
        if task == "kd":
            continue
        if len(cut.supervisions) != 1:
            report.problems.append(f"{path}: cut {cut.id} has {len(cut.supervisions)} supervisions, expected 1")
            continue
        sup = cut.supervisions[0]
        if task == "asr" and not (sup.text or "").strip():
            report.problems.append(f"{path}: cut {cut.id} has an empty transcript")
        if task == "sv" and not sup.speaker:
            report.problems.append(f"{path}: cut {cut.id} has no speaker")
        if task == "at":
            try:
                parse_audio_event((sup.custom or {}).get("audio_event"), num_classes or 0, f"{path}: cut {cut.id}")
            except ValueError as e:
                report.problems.append(str(e))
    report.counts[path.name] = n
    if n == 0:
        report.problems.append(f"{path}: no cuts")
    return cuts


def check_contract(manifest_dir: Path) -> ContractReport:
    """Check every file the index names against the contract above."""
    manifest_dir = Path(manifest_dir)
    report = ContractReport()
    index = read_index(manifest_dir)
    num_classes = None
    if "at" in index:
        try:
            num_classes = len(read_class_labels(manifest_dir))
        except (OSError, ValueError) as e:
            report.problems.append(str(e))
    sv = index.get("sv", {})
    sv_ids = {"test": set(), "dev": set()}
    for task, split in all_splits(index):
        cuts = _check_cuts(cuts_path(manifest_dir, task, split), task, report, num_classes)
        for kind in sv_ids:
            if cuts is not None and task == "sv" and split == sv.get(kind):
                sv_ids[kind] = set(cuts.ids)
    if sv.get("dev_trials") and not sv.get("dev"):
        report.problems.append("index.json: sv.dev_trials needs sv.dev (the split its ids come from)")
    for kind, key in (("test", "trials"), ("dev", "dev_trials")):
        for name in _as_list(sv.get(key)):
            path = trials_path(manifest_dir, name)
            if not path.is_file():
                report.problems.append(f"{path}: missing")
                continue
            trials = read_trials(path)
            unknown = sorted({i for _, a, b in trials for i in (a, b)} - sv_ids[kind])
            if unknown:
                report.problems.append(f"{path}: {len(unknown)} ids are not sv {kind} cuts, e.g. {unknown[:3]}")
            report.counts[path.name] = len(trials)
    for p in report.problems:
        logging.error(p)
    return report
