#!/usr/bin/env python3
"""Check a manifest directory against the mt2kd contract and with lhotse's validator; exit 1 on any problem."""

import argparse
import logging
import sys
from pathlib import Path

from lhotse import CutSet
from lhotse.qa import validate

from mt2kd_lib.data import contract
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--read-data", action="store_true", help="also load every audio file (slow)")
    args = p.parse_args()
    setup_logger()
    report = contract.check_contract(args.manifest_dir)
    index = contract.read_index(args.manifest_dir)
    for task, split in contract.all_splits(index):
        path = contract.cuts_path(args.manifest_dir, task, split)
        try:
            validate(CutSet.from_file(path), read_data=args.read_data)
        except (AssertionError, ValueError) as e:
            report.problems.append(f"{path}: lhotse validate: {e}")
    for name, n in report.counts.items():
        logging.info(f"{name}: {n}")
    if not report.ok:
        for prob in report.problems:
            logging.error(prob)
        sys.exit(1)
    logging.info(f"{args.manifest_dir}: the manifest contract holds")


if __name__ == "__main__":
    main()
