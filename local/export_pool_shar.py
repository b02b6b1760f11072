#!/usr/bin/env python3
"""Export the KD pool once as Lhotse Shar cut shards (run.sh stage 5); the teachers' outputs are dumped next to them.

  python local/export_pool_shar.py --cuts data/mini/fbank/kd_cuts_pool.jsonl.gz --out-dir exp/mini/kd_pool_shar

Streams the manifest; skips the export when ``<out-dir>/pool.json`` exists and was made from the same manifest with
the same shard size (a finished export), so re-running the stage does not change the shards the dumps align with.
"""

import argparse
from pathlib import Path

from lhotse import load_manifest_lazy

from mt2kd_lib.data.shar import export_pool_shar
from mt2kd_lib.data.teacher_shar import POOL_INFO, read_json
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", type=Path, required=True, help="the KD pool manifest (kd_cuts_pool.jsonl.gz)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--shard-size", type=int, default=1000, help="cuts per shard (= per teacher-output tar)")
    args = p.parse_args()
    setup_logger()
    info = args.out_dir / POOL_INFO
    if info.is_file():
        old = read_json(info)
        if old.get("source") == str(args.cuts) and old.get("shard_size") == args.shard_size:
            print(f"{args.out_dir}: exported before ({old['num_cuts']} cuts, {old['num_shards']} shards)")
            return
    export_pool_shar(load_manifest_lazy(args.cuts), args.out_dir, args.shard_size, source=str(args.cuts))


if __name__ == "__main__":
    main()
