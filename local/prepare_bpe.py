#!/usr/bin/env python3
"""Train the sentencepiece BPE model on all labelled ASR transcripts into <lang-dir> (bpe.model, tokens.txt)."""

import argparse
from pathlib import Path

from lhotse import CutSet

from mt2kd_lib.data import contract
from mt2kd_lib.data.bpe import train_bpe
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--vocab-size", type=int, required=True)
    args = p.parse_args()
    setup_logger()
    index = contract.read_index(args.manifest_dir)
    splits = [index["asr"]["train"]] + list(index.get("teacher_extra", {}).get("asr", []))
    texts = [c.supervisions[0].text for s in splits
             for c in CutSet.from_file(contract.cuts_path(args.manifest_dir, "asr", s))]
    train_bpe(texts, args.lang_dir, args.vocab_size)


if __name__ == "__main__":
    main()
