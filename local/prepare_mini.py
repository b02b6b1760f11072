#!/usr/bin/env python3
"""Synthesise egs/mini and write its manifests (the manifest contract of mt2kd_lib.data.contract)."""

import argparse
import logging
from pathlib import Path

from mt2kd_lib.data.mini.config import MiniConfig
from mt2kd_lib.data.mini.prepare import prepare_mini
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", type=Path, required=True, help="corpus sizes, e.g. egs/mini/conf/corpus.yaml")
    p.add_argument("--out-dir", type=Path, required=True, help="writes <out-dir>/audio and <out-dir>/manifests")
    p.add_argument("--nj", type=int, default=2)
    args = p.parse_args()
    setup_logger()
    cfg = MiniConfig.from_yaml(args.config)
    logging.info(f"egs/mini config: {cfg.to_dict()}")
    prepare_mini(cfg, args.out_dir, num_jobs=args.nj)


if __name__ == "__main__":
    main()
