#!/usr/bin/env python3
"""Lexicon (from the BPE model), Kneser-Ney word n-gram LM (ARPA) and, with k2, the graphs L, LG, HLG (k2 .pt and
OpenFst .fst) into <lang-dir>, from the ASR training transcripts only (run.sh stage 3, after prepare_bpe.py)."""

import argparse
from pathlib import Path

from lhotse import CutSet

from mt2kd_lib.data import contract
from mt2kd_lib.lang.prepare import prepare_lang_graphs
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--lang-dir", type=Path, required=True, help="holds bpe.model; the graphs are written there")
    p.add_argument("--lm-order", type=int, default=3)
    p.add_argument("--arpa", type=Path, default=None, help="an existing ARPA LM instead of the estimated one")
    args = p.parse_args()
    setup_logger()
    index = contract.read_index(args.manifest_dir)
    path = contract.cuts_path(args.manifest_dir, "asr", index["asr"]["train"])
    texts = [c.supervisions[0].text for c in CutSet.from_file(path)]
    prepare_lang_graphs(texts, args.lang_dir, args.lm_order, source=str(path), arpa=args.arpa)


if __name__ == "__main__":
    main()
