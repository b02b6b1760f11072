"""80-dim log-mel fbank for every contract split, stored with lhotse's LilcomChunkyWriter.

The extractor is lhotse's ``KaldifeatFbank`` when kaldifeat imports (fast, GPU-capable), else lhotse's ``Fbank``;
both use Kaldi's fbank definition (25 ms window, 10 ms shift, 80 bins, no dither), so they give the same numbers
up to float rounding.
"""

import logging
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter
from lhotse.features.base import FeatureExtractor

from mt2kd_lib.data import contract

NUM_MEL_BINS = 80


def make_fbank_extractor(device: str = "cpu") -> FeatureExtractor:
    """KaldifeatFbank when kaldifeat imports, else lhotse's Fbank; both 80-dim, 10 ms shift."""
    try:
        import kaldifeat  # noqa: F401
        from lhotse import KaldifeatFbank, KaldifeatFbankConfig

        return KaldifeatFbank(KaldifeatFbankConfig(device=device, mel_opts={"num_bins": NUM_MEL_BINS}))
    except ImportError:
        return Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS, dither=0.0))


def fbank_cuts_path(fbank_dir: Path, task: str, split: str) -> Path:
    """icefall naming: ``data/<recipe>/fbank/<task>_cuts_<split>.jsonl.gz``."""
    return Path(fbank_dir) / f"{task}_cuts_{split}.jsonl.gz"


def compute_split(cuts: CutSet, storage_path: Path, num_jobs: int, extractor: FeatureExtractor) -> CutSet:
    """Compute and store features for ``cuts``; returns the cuts with features attached."""
    torch.set_num_threads(1)  # the parallelism is num_jobs processes, not threads inside each
    if len(cuts) < 200:
        num_jobs = 1  # starting worker processes costs more than a small split's features
    return cuts.compute_and_store_features(
        extractor=extractor,
        storage_path=str(storage_path),
        num_jobs=num_jobs,
        storage_type=LilcomChunkyWriter,
    )


def compute_fbank_for_contract(manifest_dir: Path, fbank_dir: Path, num_jobs: int = 1) -> List[Path]:
    """Features for every split the manifest index names; the KD pool reuses the training splits' features.

    A split whose output cut manifest exists is skipped, so an interrupted run redoes only unfinished splits.
    """
    fbank_dir = Path(fbank_dir)
    fbank_dir.mkdir(parents=True, exist_ok=True)
    index = contract.read_index(manifest_dir)
    extractor = make_fbank_extractor()
    logging.info(f"feature extractor: {type(extractor).__name__}")
    written: List[Path] = []
    pairs = contract.all_splits(index)
    for task, split in [p for p in pairs if p[0] != "kd"] + [p for p in pairs if p[0] == "kd"]:
        out = fbank_cuts_path(fbank_dir, task, split)
        written.append(out)
        if out.is_file():
            logging.info(f"{out}: exists, skipping")
            continue
        cuts = CutSet.from_file(contract.cuts_path(manifest_dir, task, split))
        if task == "kd":
            cuts = _pool_from_existing(cuts, written[:-1], fbank_dir, num_jobs, extractor)
        else:
            logging.info(f"computing fbank for {task}/{split}: {len(cuts)} cuts")
            cuts = compute_split(cuts, fbank_dir / f"{task}_feats_{split}", num_jobs, extractor)
        tmp = out.with_name(out.name.replace(".jsonl.gz", ".tmp.jsonl.gz"))
        cuts.to_file(tmp)
        tmp.replace(out)
    if index.get("musan"):
        # Noise for on-the-fly mixing in training (lhotse CutMix needs features for precomputed-feature mixing).
        out = Path(fbank_dir) / "musan_cuts.jsonl.gz"
        written.append(out)
        if not out.is_file():
            musan = CutSet.from_file(Path(manifest_dir) / index["musan"])
            logging.info(f"computing fbank for MUSAN: {len(musan)} cuts")
            compute_split(musan, fbank_dir / "musan_feats", num_jobs, extractor).to_file(out)
    return written


def _pool_from_existing(pool: CutSet, done: List[Path], fbank_dir: Path, num_jobs: int, extractor) -> CutSet:
    """Attach features already computed for the same recordings; compute only the rest."""
    features: Dict[str, object] = {}
    for path in done:
        for c in CutSet.from_file(path):
            features[c.recording_id] = c.features
    reused, missing = [], []
    for c in pool:
        if c.recording_id in features and c.start == 0 and abs(features[c.recording_id].duration - c.duration) < 1e-3:
            reused.append(replace(c, features=features[c.recording_id]))
        else:
            missing.append(c)
    logging.info(f"KD pool: reusing features of {len(reused)} cuts, computing {len(missing)}")
    if missing:
        extra = compute_split(CutSet.from_cuts(missing), fbank_dir / "kd_feats_pool", num_jobs, extractor)
        reused += list(extra)
    return CutSet.from_cuts(reused)

