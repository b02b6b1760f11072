"""The paper's data setup: LibriSpeech 960h (ASR), AudioSet (AT), VoxCeleb (SV), MUSAN (noise) -> contract files.

Split names written (file names follow the contract, e.g. ``asr_cuts_train-960.jsonl.gz``):

* asr: train ``train-960`` (or ``train-clean-100``), dev ``dev-clean``/``dev-other``, test ``test-clean``/``test-other``
* at: train ``balanced`` (or ``full`` = balanced + unbalanced), eval ``eval``; ``class_labels_indices.csv`` copied
* sv: train ``vox2-dev`` (``vox1-vox2-dev`` with VoxCeleb1 dev, ``vox1-dev`` without VoxCeleb2); test ``vox1-test``,
  or ``vox1-all`` when the E/H lists are used (they draw on VoxCeleb1 dev and test); trials ``O``/``E``/``H`` and
  the cleaned ``O-clean``/``E-clean``/``H-clean``, mapped to cut ids (see :mod:`voxceleb`)
* kd: ``pool`` = every cut of the index's training splits, with custom ``origin`` = asr/at/sv
* musan: ``musan_cuts.jsonl.gz``, listed in the index as ``"musan": "musan_cuts.jsonl.gz"``

Every split goes through :func:`mt2kd_lib.data.sanitize.sanitize_cuts` before it is written. An existing
``index.json`` is updated (so corpora can be prepared in separate runs); the KD pool is rebuilt from all training
splits the updated index names.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from lhotse import CutSet

from mt2kd_lib.data.contract import class_labels_path, cuts_path, trials_path, write_index
from mt2kd_lib.data.sanitize import sanitize_cuts

MUSAN_CUTS = "musan_cuts.jsonl.gz"


@dataclass
class CorpusPaths:
    """Where the corpora are, and the split options; ``None`` leaves a corpus out."""

    librispeech_dir: Optional[Path] = None
    librispeech_train_100: bool = False
    audioset_dir: Optional[Path] = None
    audioset_audio_dir: Optional[Path] = None
    audioset_full: bool = False
    voxceleb1_dir: Optional[Path] = None
    voxceleb2_dir: Optional[Path] = None
    voxceleb1_dev_in_train: bool = False
    trials_dir: Optional[Path] = None
    trials: Optional[List[str]] = None  # None: every list found
    strict_trials: bool = False
    musan_dir: Optional[Path] = None


def _write(cuts: CutSet, manifest_dir: Path, task: str, split: str, source: str) -> CutSet:
    cuts = sanitize_cuts(cuts, task, source)
    path = cuts_path(manifest_dir, task, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    cuts.to_file(path)
    logging.info(f"wrote {len(cuts)} cuts to {path}")
    return cuts


def prepare_librispeech_splits(root: Path, manifest_dir: Path, train_100: bool, num_jobs: int) -> dict:
    from mt2kd_lib.data.corpora.librispeech import DEV_PARTS, TEST_PARTS, TRAIN_960, prepare_librispeech_part

    train_parts = ("train-clean-100",) if train_100 else TRAIN_960
    train = [prepare_librispeech_part(root, p, num_jobs) for p in train_parts]
    train_name = "train-clean-100" if train_100 else "train-960"
    _write(CutSet.from_cuts(c for cs in train for c in cs), manifest_dir, "asr", train_name, f"librispeech/{train_name}")
    for part in DEV_PARTS + TEST_PARTS:
        _write(prepare_librispeech_part(root, part, num_jobs), manifest_dir, "asr", part, f"librispeech/{part}")
    return {"train": train_name, "dev": list(DEV_PARTS), "test": list(TEST_PARTS)}


def prepare_audioset_splits(root: Path, audio_dir: Optional[Path], manifest_dir: Path, full: bool, num_jobs: int) -> dict:
    from mt2kd_lib.data.corpora.audioset import (CLASS_LABELS_CSV, prepare_audioset_cuts, read_class_labels_csv,
                                                 write_class_labels_csv)

    write_class_labels_csv(read_class_labels_csv(root / CLASS_LABELS_CSV), class_labels_path(manifest_dir))
    subsets = ["balanced", "unbalanced"] if full else ["balanced"]
    train = [prepare_audioset_cuts(root, s, num_jobs, audio_dir) for s in subsets]
    train_name = "full" if full else "balanced"
    _write(CutSet.from_cuts(c for cs in train for c in cs), manifest_dir, "at", train_name, f"audioset/{train_name}")
    _write(prepare_audioset_cuts(root, "eval", num_jobs, audio_dir), manifest_dir, "at", "eval", "audioset/eval")
    return {"train": train_name, "eval": ["eval"]}


def _choose_trials(paths: CorpusPaths) -> Dict[str, Path]:
    from mt2kd_lib.data.corpora.voxceleb import find_trial_lists

    dirs = [paths.trials_dir, paths.voxceleb1_dir]
    found = find_trial_lists(dirs, paths.trials)
    vox1_dev_trained = paths.voxceleb1_dev_in_train or paths.voxceleb2_dir is None
    eh = [n for n in found if n[0] in "EH"]
    if eh and vox1_dev_trained:
        msg = f"trial lists {eh} use VoxCeleb1 dev speakers, which are in the SV training split"
        if paths.trials is not None:
            raise ValueError(msg + "; drop them or train on VoxCeleb2 dev only")
        logging.warning(msg + "; leaving them out")
        found = {n: p for n, p in found.items() if n not in eh}
    if not found:
        raise FileNotFoundError(f"no VoxCeleb1 trial list found in {[str(d) for d in dirs if d]}")
    return found


def prepare_voxceleb_splits(paths: CorpusPaths, manifest_dir: Path, num_jobs: int) -> dict:
    from mt2kd_lib.data.corpora.voxceleb import map_trials, prepare_voxceleb_cuts, write_trials

    trials = _choose_trials(paths) if paths.voxceleb1_dir else {}  # before the slow part: option errors first
    vox1 = prepare_voxceleb_cuts(paths.voxceleb1_dir, 1, num_jobs) if paths.voxceleb1_dir else None
    vox2 = prepare_voxceleb_cuts(paths.voxceleb2_dir, 2, num_jobs) if paths.voxceleb2_dir else None
    index: dict = {}
    train_parts, names = [], []
    if vox1 is not None and (paths.voxceleb1_dev_in_train or vox2 is None):
        train_parts.append(vox1["dev"])
        names.append("vox1")
    if vox2 is not None:
        train_parts.append(vox2["dev"])
        names.append("vox2")
    train_name = "-".join(names) + "-dev"
    train = _write(CutSet.from_cuts(c for cs in train_parts for c in cs), manifest_dir, "sv", train_name,
                   f"voxceleb/{train_name}")
    index["train"] = train_name
    if vox1 is None:
        logging.warning("voxceleb: no VoxCeleb1 given, so no SV test split or trials")
        return index
    use_all = any(n[0] in "EH" for n in trials)
    test_name = "vox1-all" if use_all else "vox1-test"
    test_cuts = CutSet.from_cuts(list(vox1["test"]) + (list(vox1["dev"]) if use_all else []))
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


def write_kd_pool(manifest_dir: Path, index: dict) -> Optional[str]:
    """Stream every training split the index names into ``kd_cuts_pool.jsonl.gz`` with custom ``origin``."""
    sources = [(task, index[task]["train"]) for task in ("asr", "at", "sv") if index.get(task, {}).get("train")]
    if not sources:
        return None
    path = cuts_path(manifest_dir, "kd", "pool")
    seen, n = set(), 0
    with CutSet.open_writer(path) as writer:
        for task, split in sources:
            for cut in CutSet.from_jsonl_lazy(cuts_path(manifest_dir, task, split)):
                if cut.id in seen:
                    raise ValueError(f"KD pool: cut id {cut.id} ({task}/{split}) already came from another corpus")
                seen.add(cut.id)
                cut.custom = {**(cut.custom or {}), "origin": task}
                writer.write(cut)
                n += 1
    logging.info(f"wrote {n} cuts from {sources} to {path}")
    return "pool"


def prepare_paper_corpora(paths: CorpusPaths, manifest_dir: Path, num_jobs: int = 1,
                          existing_index: Optional[dict] = None) -> dict:
    """Prepare every corpus ``paths`` names, write the contract files and ``index.json``; return the index."""
    if not any([paths.librispeech_dir, paths.audioset_dir, paths.voxceleb1_dir, paths.voxceleb2_dir, paths.musan_dir]):
        raise ValueError("no corpus directory given (LibriSpeech, AudioSet, VoxCeleb1/2 or MUSAN)")
    manifest_dir = Path(manifest_dir)
    manifest_dir.mkdir(parents=True, exist_ok=True)
    index = dict(existing_index or {})
    if paths.librispeech_dir:
        index["asr"] = prepare_librispeech_splits(paths.librispeech_dir, manifest_dir, paths.librispeech_train_100, num_jobs)
    if paths.audioset_dir:
        index["at"] = prepare_audioset_splits(paths.audioset_dir, paths.audioset_audio_dir, manifest_dir,
                                              paths.audioset_full, num_jobs)
    if paths.voxceleb1_dir or paths.voxceleb2_dir:
        index["sv"] = prepare_voxceleb_splits(paths, manifest_dir, num_jobs)
    if paths.musan_dir:
        from mt2kd_lib.data.corpora.musan import prepare_musan_cuts

        sanitize_cuts(prepare_musan_cuts(paths.musan_dir), "kd", "musan").to_file(manifest_dir / MUSAN_CUTS)
        index["musan"] = MUSAN_CUTS
    pool = write_kd_pool(manifest_dir, index)
    if pool:
        index["kd"] = {"pool": pool}
    write_index(manifest_dir, index)
    return index


def download_corpora(paths: CorpusPaths) -> None:
    """Fetch what lhotse can download into the given folders (LibriSpeech, VoxCeleb1/2, MUSAN, the O list)."""
    from lhotse.recipes import download_librispeech, download_musan, download_voxceleb1, download_voxceleb2
    from lhotse.recipes.voxceleb import VOXCELEB1_TRIALS_URL
    from lhotse.utils import resumable_download

    from mt2kd_lib.data.corpora.librispeech import DEV_PARTS, TEST_PARTS, TRAIN_960

    if paths.librispeech_dir:
        train = ("train-clean-100",) if paths.librispeech_train_100 else TRAIN_960
        download_librispeech(paths.librispeech_dir, dataset_parts=list(train + DEV_PARTS + TEST_PARTS))
    if paths.voxceleb1_dir:
        download_voxceleb1(paths.voxceleb1_dir)
        resumable_download(VOXCELEB1_TRIALS_URL, filename=Path(paths.voxceleb1_dir) / "voxceleb1_test_v2.txt")
    if paths.voxceleb2_dir:
        download_voxceleb2(paths.voxceleb2_dir)
    if paths.musan_dir:
        download_musan(paths.musan_dir)
    if paths.audioset_dir:
        logging.warning("AudioSet has no download recipe (audio comes from YouTube); prepare it yourself")
