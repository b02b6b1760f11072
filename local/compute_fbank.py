#!/usr/bin/env python3
"""Compute 80-dim fbank for every split of a contract manifest directory (icefall: data/fbank/*_cuts_*)."""

import argparse
from pathlib import Path

from mt2kd_lib.data.features import compute_fbank_for_contract
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--fbank-dir", type=Path, required=True)
    p.add_argument("--nj", type=int, default=2)
    args = p.parse_args()
    setup_logger()
    compute_fbank_for_contract(args.manifest_dir, args.fbank_dir, num_jobs=args.nj)


if __name__ == "__main__":
    main()
