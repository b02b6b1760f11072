"""The paper's data setup: LibriSpeech 960h (ASR), AudioSet (AT), VoxCeleb (SV), MUSAN (noise) -> contract files.

Split names written (file names follow the contract, e.g. ``asr_cuts_train-960.jsonl.gz``):

* asr: train ``train-960`` (all three training parts; one part: its name, e.g. ``train-clean-100``), dev and test:
  the selected parts (default ``dev-clean``/``dev-other``, ``test-clean``/``test-other``)
* at: train ``full`` (balanced + unbalanced), ``balanced`` or ``unbalanced``; eval ``eval``;
  ``class_labels_indices.csv`` copied
* sv: train ``vox2-dev`` (``vox1-vox2-dev`` with VoxCeleb1 dev, ``vox1-dev`` without VoxCeleb2; ``...-dev-test``
  when VoxCeleb2 test is selected too); test ``vox1-test``, or ``vox1-all`` when the E/H lists are used (they draw
  on VoxCeleb1 dev and test); trials ``O``/``E``/``H`` and the cleaned ``O-clean``/``E-clean``/``H-clean``, mapped
  to cut ids (see :mod:`voxceleb`)
* kd: ``pool`` = every cut of the index's training splits, with custom ``origin`` = asr/at/sv
* musan: ``musan_cuts.jsonl.gz``, listed in the index as ``"musan": "musan_cuts.jsonl.gz"``

Which parts of each corpus are used is a setting (:class:`CorpusPaths`, ``config.sh``; defaults = the paper's). A
part that is not selected need not be on disk; a selected part that is missing fails in :func:`check_parts`,
before anything is written. Everything is written to a temporary folder next to the manifest folder and moved in
at the end, so a failure never leaves a partial manifest folder.

Every split goes through :func:`mt2kd_lib.data.sanitize.sanitize_cuts` before it is written. An existing
``index.json`` is updated (so corpora can be prepared in separate runs); the KD pool is rebuilt from all training
splits the updated index names.
"""

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lhotse import CutSet

from mt2kd_lib.data.contract import class_labels_path, cuts_path, trials_path, write_index
from mt2kd_lib.data.sanitize import sanitize_cuts

MUSAN_CUTS = "musan_cuts.jsonl.gz"
# The paper's parts (repeated here, not imported, so that this module stays cheap to import).
LIBRISPEECH_TRAIN = ("train-clean-100", "train-clean-360", "train-other-500")
LIBRISPEECH_DEV = ("dev-clean", "dev-other")
LIBRISPEECH_TEST = ("test-clean", "test-other")
AUDIOSET_TRAIN = ("balanced", "unbalanced")
AUDIOSET_EVAL = ("eval",)
VOXCELEB_SETS = ("dev", "test")
MUSAN = ("music", "noise", "speech")


@dataclass
class CorpusPaths:
    """Where the corpora are, which of their parts to use, and the split options; ``None`` leaves a corpus out."""

    librispeech_dir: Optional[Path] = None
    librispeech_train_parts: Sequence[str] = LIBRISPEECH_TRAIN
    librispeech_dev_parts: Sequence[str] = LIBRISPEECH_DEV
    librispeech_test_parts: Sequence[str] = LIBRISPEECH_TEST
    audioset_dir: Optional[Path] = None
    audioset_audio_dir: Optional[Path] = None
    audioset_train_parts: Sequence[str] = AUDIOSET_TRAIN
    audioset_eval_parts: Sequence[str] = AUDIOSET_EVAL
    voxceleb1_dir: Optional[Path] = None
    voxceleb1_parts: Sequence[str] = VOXCELEB_SETS  # dev: E/H trials (and training with voxceleb1_dev_in_train)
    voxceleb2_dir: Optional[Path] = None
    voxceleb2_parts: Sequence[str] = ("dev",)  # the paper trains on VoxCeleb2 dev; "dev,test" adds the test speakers
    voxceleb1_dev_in_train: bool = False
    trials_dir: Optional[Path] = None
    trials: Optional[List[str]] = None  # None: every list found
    strict_trials: bool = False
    musan_dir: Optional[Path] = None
    musan_parts: Sequence[str] = MUSAN


def _part_problems(what: str, setting: str, parts: Sequence[str], known: Sequence[str], where: Path,
                   present: callable, required: bool = False) -> List[str]:
    """Problems of one part list: unknown names, an empty list where one is needed, selected parts not on disk."""
    problems = []
    unknown = [p for p in parts if p not in known]
    if unknown:
        problems.append(f"{what}: unknown parts {unknown} in {setting} (expected some of {list(known)})")
    if required and not parts:
        problems.append(f"{what}: {setting} is empty")
    missing = [p for p in parts if p in known and not present(p)]
    if missing:
        problems.append(f"{what}: selected parts {missing} not found under {where} (remove them from {setting} "
                        "in config.sh if you do not have them)")
    return problems


def check_parts(paths: CorpusPaths) -> None:
    """Fail (FileNotFoundError listing every problem) when a selected part is missing or misnamed; parts that are
    not selected are not looked at. Cheap: folders and csv files only, no audio."""
    problems: List[str] = []
    if paths.librispeech_dir:
        from lhotse.recipes.librispeech import LIBRISPEECH

        root = Path(paths.librispeech_dir)
        base = root / "LibriSpeech" if (root / "LibriSpeech").is_dir() else root
        for setting, parts, required in (("librispeech_train_parts", paths.librispeech_train_parts, True),
                                         ("librispeech_dev_parts", paths.librispeech_dev_parts, False),
                                         ("librispeech_test_parts", paths.librispeech_test_parts, False)):
            problems += _part_problems("LibriSpeech", setting, parts, LIBRISPEECH, base,
                                       lambda p: (base / p).is_dir(), required)
    if paths.audioset_dir:
        from mt2kd_lib.data.corpora.audioset import CLASS_LABELS_CSV, SEGMENT_CSVS

        root = Path(paths.audioset_dir)
        if not (root / CLASS_LABELS_CSV).is_file():
            problems.append(f"AudioSet: {root / CLASS_LABELS_CSV} not found")
        present = lambda p: (root / SEGMENT_CSVS[p]).is_file()  # noqa: E731
        problems += _part_problems("AudioSet", "audioset_train_parts", paths.audioset_train_parts, list(SEGMENT_CSVS),
                                   root, present, required=True)
        problems += _part_problems("AudioSet", "audioset_eval_parts", paths.audioset_eval_parts, list(SEGMENT_CSVS),
                                   root, present)
    for version, d, parts in ((1, paths.voxceleb1_dir, paths.voxceleb1_parts),
                              (2, paths.voxceleb2_dir, paths.voxceleb2_parts)):
        if d:
            # Whether a set's speakers are there is only known after the scan (still before anything is written).
            problems += _part_problems(f"VoxCeleb{version}", f"voxceleb{version}_parts", parts, VOXCELEB_SETS, Path(d),
                                       lambda p: Path(d).is_dir(), required=True)
    if paths.musan_dir:
        root = Path(paths.musan_dir)
        base = root / "musan" if (root / "musan").is_dir() else root
        problems += _part_problems("MUSAN", "musan_parts", paths.musan_parts, MUSAN, base,
                                   lambda p: (base / p).is_dir(), required=True)
    if problems:
        raise FileNotFoundError("corpus parts:\n  " + "\n  ".join(problems))


def _split_name(parts: Sequence[str], whole: Sequence[str], whole_name: str) -> str:
    """``whole_name`` for all of ``whole``, a part's own name for one part, else the parts joined."""
    if sorted(parts) == sorted(whole):
        return whole_name
    return parts[0] if len(parts) == 1 else "+".join(parts)


def _write(cuts: CutSet, manifest_dir: Path, task: str, split: str, source: str) -> CutSet:
    cuts = sanitize_cuts(cuts, task, source)
    path = cuts_path(manifest_dir, task, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    cuts.to_file(path)
    logging.info(f"wrote {len(cuts)} cuts to {path}")
    return cuts


def prepare_librispeech_splits(paths: CorpusPaths, manifest_dir: Path, num_jobs: int) -> dict:
    from mt2kd_lib.data.corpora.librispeech import prepare_librispeech_part

    root = paths.librispeech_dir
    train = [prepare_librispeech_part(root, p, num_jobs) for p in paths.librispeech_train_parts]
    train_name = _split_name(paths.librispeech_train_parts, LIBRISPEECH_TRAIN, "train-960")
    _write(CutSet.from_cuts(c for cs in train for c in cs), manifest_dir, "asr", train_name, f"librispeech/{train_name}")
    for part in list(paths.librispeech_dev_parts) + list(paths.librispeech_test_parts):
        _write(prepare_librispeech_part(root, part, num_jobs), manifest_dir, "asr", part, f"librispeech/{part}")
    return {"train": train_name, "dev": list(paths.librispeech_dev_parts), "test": list(paths.librispeech_test_parts)}


def prepare_audioset_splits(paths: CorpusPaths, manifest_dir: Path, num_jobs: int) -> dict:
    from mt2kd_lib.data.corpora.audioset import (CLASS_LABELS_CSV, prepare_audioset_cuts, read_class_labels_csv,
                                                 write_class_labels_csv)

    root, audio_dir = paths.audioset_dir, paths.audioset_audio_dir
    write_class_labels_csv(read_class_labels_csv(root / CLASS_LABELS_CSV), class_labels_path(manifest_dir))
    train = [prepare_audioset_cuts(root, s, num_jobs, audio_dir) for s in paths.audioset_train_parts]
    train_name = _split_name(paths.audioset_train_parts, AUDIOSET_TRAIN, "full")
    _write(CutSet.from_cuts(c for cs in train for c in cs), manifest_dir, "at", train_name, f"audioset/{train_name}")
    for part in paths.audioset_eval_parts:
        _write(prepare_audioset_cuts(root, part, num_jobs, audio_dir), manifest_dir, "at", part, f"audioset/{part}")
    return {"train": train_name, "eval": list(paths.audioset_eval_parts)}


def _choose_trials(paths: CorpusPaths) -> Dict[str, Path]:
    from mt2kd_lib.data.corpora.voxceleb import find_trial_lists

    dirs = [paths.trials_dir, paths.voxceleb1_dir]
    found = find_trial_lists(dirs, paths.trials)
    vox1_dev_trained = paths.voxceleb1_dev_in_train or paths.voxceleb2_dir is None
    eh = [n for n in found if n[0] in "EH"]
    if eh and "dev" not in paths.voxceleb1_parts:
        msg = f"trial lists {eh} use VoxCeleb1 dev speakers, but voxceleb1_parts has no dev"
        if paths.trials is not None:
            raise ValueError(msg + "; drop them or add dev")
        logging.warning(msg + "; leaving them out")
        found = {n: p for n, p in found.items() if n not in eh}
        eh = []
    if eh and vox1_dev_trained:
        msg = f"trial lists {eh} use VoxCeleb1 dev speakers, which are in the SV training split"
        if paths.trials is not None:
            raise ValueError(msg + "; drop them or train on VoxCeleb2 dev only")
        logging.warning(msg + "; leaving them out")
        found = {n: p for n, p in found.items() if n not in eh}
    if not found:
        raise FileNotFoundError(f"no VoxCeleb1 trial list found in {[str(d) for d in dirs if d]}")
    return found


def _selected_sets(cuts: Dict[str, CutSet], parts: Sequence[str], version: int, root: Path) -> Dict[str, CutSet]:
    """The selected sets of one VoxCeleb; a selected set without any utterance is an error (a missing part)."""
    empty = [p for p in parts if len(cuts[p]) == 0]
    if empty:
        raise FileNotFoundError(f"VoxCeleb{version}: selected parts {empty} have no utterance under {root} "
                                f"(remove them from voxceleb{version}_parts in config.sh if you do not have them)")
    return {p: cuts[p] for p in parts}


def prepare_voxceleb_splits(paths: CorpusPaths, manifest_dir: Path, num_jobs: int) -> dict:
    from mt2kd_lib.data.corpora.voxceleb import map_trials, prepare_voxceleb_cuts, write_trials

    if paths.voxceleb1_dir is None and paths.voxceleb2_dir is None:
        raise ValueError("voxceleb: neither VoxCeleb1 nor VoxCeleb2 given")
    vox1_test = paths.voxceleb1_dir is not None and "test" in paths.voxceleb1_parts
    trials = _choose_trials(paths) if vox1_test else {}  # before the slow part: option errors first
    vox1 = vox2 = None
    if paths.voxceleb1_dir:
        vox1 = _selected_sets(prepare_voxceleb_cuts(paths.voxceleb1_dir, 1, num_jobs), paths.voxceleb1_parts, 1,
                              paths.voxceleb1_dir)
    if paths.voxceleb2_dir:
        vox2 = _selected_sets(prepare_voxceleb_cuts(paths.voxceleb2_dir, 2, num_jobs), paths.voxceleb2_parts, 2,
                              paths.voxceleb2_dir)
    index: dict = {}
    train_parts, names = [], []
    if vox1 is not None and (paths.voxceleb1_dev_in_train or vox2 is None):
        if "dev" not in vox1:
            raise ValueError("voxceleb: SV training needs VoxCeleb1 dev (voxceleb1_parts) or VoxCeleb2")
        train_parts.append(vox1["dev"])
        names.append("vox1")
    if vox2 is not None:
        train_parts += list(vox2.values())
        names.append("vox2")
    train_name = "-".join(names) + ("-dev-test" if vox2 is not None and "test" in vox2 else "-dev")
    train = _write(CutSet.from_cuts(c for cs in train_parts for c in cs), manifest_dir, "sv", train_name,
                   f"voxceleb/{train_name}")
    index["train"] = train_name
    if not vox1_test:
        logging.warning("voxceleb: no VoxCeleb1 test given, so no SV test split or trials")
        return index
    use_all = any(n[0] in "EH" for n in trials)
    test_name = "vox1-all" if use_all else "vox1-test"
    test_cuts = CutSet.from_cuts(list(vox1["test"]) + (list(vox1["dev"]) if use_all else []))  # E/H: dev is there
    test = _write(test_cuts, manifest_dir, "sv", test_name, f"voxceleb/{test_name}")
    overlap = {c.supervisions[0].speaker for c in train} & {c.supervisions[0].speaker for c in test}
    if overlap:
        logging.warning(f"voxceleb: {len(overlap)} speakers are in both {train_name} and {test_name}")
    known = set(test.ids)
    for name, path in trials.items():
        mapped = map_trials(path, known, strict=paths.strict_trials)
        write_trials(mapped, trials_path(manifest_dir, name))
        logging.info(f"wrote {len(mapped)} trials ({name}, from {path.name}) to {trials_path(manifest_dir, name)}")
    index.update(test=test_name, trials=list(trials))
    return index


def write_kd_pool(manifest_dir: Path, index: dict, read_dirs: Sequence[Path] = ()) -> Optional[str]:
    """Stream every training split the index names into ``kd_cuts_pool.jsonl.gz`` with custom ``origin``.

    A split is read from the first of ``read_dirs`` (default: ``manifest_dir``) that has its file."""
    sources = [(task, index[task]["train"]) for task in ("asr", "at", "sv") if index.get(task, {}).get("train")]
    if not sources:
        return None
    dirs = list(read_dirs) or [manifest_dir]
    path = cuts_path(manifest_dir, "kd", "pool")
    seen, n = set(), 0
    with CutSet.open_writer(path) as writer:
        for task, split in sources:
            src = next((cuts_path(d, task, split) for d in dirs if cuts_path(d, task, split).is_file()),
                       cuts_path(dirs[-1], task, split))
            for cut in CutSet.from_jsonl_lazy(src):
                if cut.id in seen:
                    raise ValueError(f"KD pool: cut id {cut.id} ({task}/{split}) already came from another corpus")
                seen.add(cut.id)
                cut.custom = {**(cut.custom or {}), "origin": task}
                writer.write(cut)
                n += 1
    logging.info(f"wrote {n} cuts from {sources} to {path}")
    return "pool"


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _publish(staging: Path, manifest_dir: Path) -> None:
    """Move the staged files into ``manifest_dir`` (same filesystem: renames), ``index.json`` last."""
    manifest_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(staging.iterdir(), key=lambda f: f.name == "index.json")
    for f in files:
        os.replace(f, manifest_dir / f.name)


def prepare_paper_corpora(paths: CorpusPaths, manifest_dir: Path, num_jobs: int = 1,
                          existing_index: Optional[dict] = None) -> dict:
    """Prepare every corpus ``paths`` names, write the contract files and ``index.json``; return the index.

    Selected parts are checked first (:func:`check_parts`); the files are written to a temporary folder beside
    ``manifest_dir`` and moved in only when every corpus succeeded, so an error leaves ``manifest_dir`` as it was
    (not created, if it did not exist)."""
    if not any([paths.librispeech_dir, paths.audioset_dir, paths.voxceleb1_dir, paths.voxceleb2_dir, paths.musan_dir]):
        raise ValueError("no corpus directory given (LibriSpeech, AudioSet, VoxCeleb1/2 or MUSAN)")
    check_parts(paths)
    manifest_dir = Path(manifest_dir)
    # The staging folder lives in the nearest existing ancestor: same filesystem (renames), nothing new left behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest_dir.name}.partial-", dir=_existing_ancestor(manifest_dir.parent)))
    try:
        index = dict(existing_index or {})
        if paths.librispeech_dir:
            index["asr"] = prepare_librispeech_splits(paths, staging, num_jobs)
        if paths.audioset_dir:
            index["at"] = prepare_audioset_splits(paths, staging, num_jobs)
        if paths.voxceleb1_dir or paths.voxceleb2_dir:
            index["sv"] = prepare_voxceleb_splits(paths, staging, num_jobs)
        if paths.musan_dir:
            from mt2kd_lib.data.corpora.musan import prepare_musan_cuts

            musan = prepare_musan_cuts(paths.musan_dir, paths.musan_parts, num_jobs)
            sanitize_cuts(musan, "kd", "musan").to_file(staging / MUSAN_CUTS)
            index["musan"] = MUSAN_CUTS
        pool = write_kd_pool(staging, index, read_dirs=[staging, manifest_dir])
        if pool:
            index["kd"] = {"pool": pool}
        write_index(staging, index)
        _publish(staging, manifest_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index


def download_corpora(paths: CorpusPaths) -> None:
    """Fetch what lhotse can download into the given folders (LibriSpeech, VoxCeleb1/2, MUSAN, the O list)."""
    from lhotse.recipes import download_librispeech, download_musan, download_voxceleb1, download_voxceleb2
    from lhotse.recipes.voxceleb import VOXCELEB1_TRIALS_URL
    from lhotse.utils import resumable_download

    if paths.librispeech_dir:
        parts = list(paths.librispeech_train_parts) + list(paths.librispeech_dev_parts) + list(paths.librispeech_test_parts)
        download_librispeech(paths.librispeech_dir, dataset_parts=parts)
    if paths.voxceleb1_dir:
        download_voxceleb1(paths.voxceleb1_dir)
        resumable_download(VOXCELEB1_TRIALS_URL, filename=Path(paths.voxceleb1_dir) / "voxceleb1_test_v2.txt")
    if paths.voxceleb2_dir:
        download_voxceleb2(paths.voxceleb2_dir)
    if paths.musan_dir:
        download_musan(paths.musan_dir)
    if paths.audioset_dir:
        logging.warning("AudioSet has no download recipe (audio comes from YouTube); prepare it yourself")
