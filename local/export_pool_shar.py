#!/usr/bin/env python3
"""Export the KD pool once as Lhotse Shar cut shards (run.sh stage 5); the teachers' outputs are dumped next to them.

  python local/export_pool_shar.py --cuts data/mini/fbank/kd_cuts_pool.jsonl.gz --out-dir exp/mini/kd_pool_shar
  # a task's training split (the recipe's index.json names it), e.g. for stage-2 AT soft labels:
  python local/export_pool_shar.py --recipe-data data/mini --training-split-of at --out-dir exp/mini/at_train_shar

Streams the manifest; skips the export when ``<out-dir>/pool.json`` exists and was made from the same manifest with
the same shard size (a finished export), so re-running the stage does not change the shards the dumps align with.
"""

import argparse
from pathlib import Path

from lhotse import load_manifest_lazy

from mt2kd_lib.data.contract import read_index
from mt2kd_lib.data.features import fbank_cuts_path
from mt2kd_lib.data.shar import export_pool_shar
from mt2kd_lib.data.teacher_shar import POOL_INFO, read_json
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cuts", type=Path, help="the KD pool manifest (kd_cuts_pool.jsonl.gz), or any cuts manifest")
    src.add_argument("--training-split-of", choices=["asr", "at", "sv"],
                     help="with --recipe-data: that task's training split (index.json), with its features")
    p.add_argument("--recipe-data", type=Path, help="data/<recipe> (manifests/, fbank/)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--shard-size", type=int, default=1000, help="cuts per shard (= per teacher-output tar)")
    args = p.parse_args()
    setup_logger()
    if args.training_split_of:
        if args.recipe_data is None:
            p.error("--training-split-of needs --recipe-data")
        index = read_index(args.recipe_data / "manifests")
        split = index.get(args.training_split_of, {}).get("train")
        if not split:
            p.error(f"{args.recipe_data}/manifests/index.json has no {args.training_split_of} training split")
        args.cuts = fbank_cuts_path(args.recipe_data / "fbank", args.training_split_of, split)
    info = args.out_dir / POOL_INFO
    if info.is_file():
        old = read_json(info)
        if old.get("source") == str(args.cuts) and old.get("shard_size") == args.shard_size:
            print(f"{args.out_dir}: exported before ({old['num_cuts']} cuts, {old['num_shards']} shards)")
            return
    export_pool_shar(load_manifest_lazy(args.cuts), args.out_dir, args.shard_size, source=str(args.cuts))


if __name__ == "__main__":
    main()
