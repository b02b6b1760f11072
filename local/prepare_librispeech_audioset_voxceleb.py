#!/usr/bin/env python3
"""Write the manifest contract for the paper's corpora: LibriSpeech 960h, AudioSet, VoxCeleb1/2 (+ MUSAN).

Only the corpora whose directories are given are prepared, and of each only the selected parts (defaults: the
paper's); a selected part that is missing fails before anything is written. An existing index.json is updated. See
mt2kd_lib/data/corpora/paper.py for the split names and mt2kd_lib/data/corpora/*.py for the expected layouts.
"""

import argparse
import json
import logging
from pathlib import Path

from mt2kd_lib.data.corpora import paper
from mt2kd_lib.data.corpora.paper import CorpusPaths, download_corpora, prepare_paper_corpora
from mt2kd_lib.utils.logging import setup_logger


def _dir(value: str):
    """'' (an unset config.sh variable) means 'not given'."""
    return Path(value) if value else None


def _parts(value: str):
    """'a,b' -> ('a', 'b'); '' selects no part."""
    return tuple(p.strip() for p in value.split(",") if p.strip())


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--num-jobs", "--nj", type=int, default=1, help="threads reading audio headers")
    p.add_argument("--librispeech-dir", type=_dir, help="folder holding LibriSpeech/<part>")
    p.add_argument("--librispeech-train-parts", type=_parts, default=paper.LIBRISPEECH_TRAIN, help="comma list")
    p.add_argument("--librispeech-dev-parts", type=_parts, default=paper.LIBRISPEECH_DEV, help="comma list")
    p.add_argument("--librispeech-test-parts", type=_parts, default=paper.LIBRISPEECH_TEST, help="comma list")
    p.add_argument("--audioset-dir", type=_dir, help="folder with the segment csvs and class_labels_indices.csv")
    p.add_argument("--audioset-audio-dir", type=_dir, help="where the wavs are (default: --audioset-dir)")
    p.add_argument("--audioset-train-parts", type=_parts, default=paper.AUDIOSET_TRAIN, help="balanced,unbalanced")
    p.add_argument("--audioset-eval-parts", type=_parts, default=paper.AUDIOSET_EVAL, help="eval (or empty)")
    p.add_argument("--voxceleb1-dir", type=_dir, help="folder with wav/ and vox1_meta.csv")
    p.add_argument("--voxceleb1-parts", type=_parts, default=paper.VOXCELEB_SETS, help="dev,test")
    p.add_argument("--voxceleb2-parts", type=_parts, default=("dev",), help="dev (paper) or dev,test")
    p.add_argument("--voxceleb2-dir", type=_dir, help="folder with dev/aac (m4a, or converted wav) and vox2_meta.csv")
    p.add_argument("--voxceleb1-dev-in-train", action="store_true", help="add VoxCeleb1 dev to SV train (O trials only)")
    p.add_argument("--voxceleb-trials-dir", type=_dir, help="where the trial lists are (default: --voxceleb1-dir)")
    p.add_argument("--sv-trials", default="auto",
                   help="comma list of O,E,H,O-clean,E-clean,H-clean or 'auto' (every list found)")
    p.add_argument("--strict-trials", action="store_true", help="a trial naming an unknown utterance is an error")
    p.add_argument("--musan-dir", type=_dir, help="folder holding musan/{music,noise,speech}")
    p.add_argument("--musan-parts", type=_parts, default=paper.MUSAN, help="comma list of music,noise,speech")
    p.add_argument("--download", action="store_true", help="download what lhotse can into the given folders first")
    return p


def main() -> None:
    args = get_parser().parse_args()
    setup_logger()
    paths = CorpusPaths(
        librispeech_dir=args.librispeech_dir, librispeech_train_parts=args.librispeech_train_parts,
        librispeech_dev_parts=args.librispeech_dev_parts, librispeech_test_parts=args.librispeech_test_parts,
        audioset_dir=args.audioset_dir, audioset_audio_dir=args.audioset_audio_dir,
        audioset_train_parts=args.audioset_train_parts, audioset_eval_parts=args.audioset_eval_parts,
        voxceleb1_dir=args.voxceleb1_dir, voxceleb1_parts=args.voxceleb1_parts,
        voxceleb2_dir=args.voxceleb2_dir, voxceleb2_parts=args.voxceleb2_parts,
        voxceleb1_dev_in_train=args.voxceleb1_dev_in_train, trials_dir=args.voxceleb_trials_dir,
        trials=None if args.sv_trials == "auto" else [t.strip() for t in args.sv_trials.split(",") if t.strip()],
        strict_trials=args.strict_trials, musan_dir=args.musan_dir, musan_parts=args.musan_parts,
    )
    if args.download:
        download_corpora(paths)
    index_path = args.manifest_dir / "index.json"
    existing = json.loads(index_path.read_text()) if index_path.is_file() else None
    if existing:
        logging.info(f"updating {index_path}: its tasks {sorted(existing)} stay unless prepared again now")
    index = prepare_paper_corpora(paths, args.manifest_dir, args.num_jobs, existing)
    logging.info(f"index: {json.dumps(index, sort_keys=True)}")


if __name__ == "__main__":
    main()
