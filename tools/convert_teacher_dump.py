#!/usr/bin/env python3
"""Convert teacher dumps of the old lilcom-shard layout into Shar fields next to the KD pool (no re-dump needed).

  python tools/convert_teacher_dump.py --old-dir /path/exp/mini/teacher_outputs --pool-dir exp/mini/kd_pool_shar \
      --pool-cuts data/mini/fbank/kd_cuts_pool.jsonl.gz --new-dir exp/mini/teacher_outputs_shar \
      --teachers asr_teacher,at_teacher,sv_teacher

``--pool-cuts``: export the KD pool to Shar first when ``--pool-dir`` has no export yet (run.sh stage 5 does the
same). With the default ``--float-format numpy`` each converted array is checked to be exactly the old values.
"""

import argparse
import json
from pathlib import Path

from lhotse import load_manifest_lazy

from mt2kd_lib.data.shar import export_pool_shar
from mt2kd_lib.data.teacher_shar import POOL_INFO
from mt2kd_lib.teachers.convert import convert_legacy_dump
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-dir", type=Path, required=True, help="old dump folder (one sub-folder per teacher)")
    p.add_argument("--pool-dir", type=Path, required=True, help="the KD pool's Shar export")
    p.add_argument("--pool-cuts", type=Path, default=None, help="export this pool manifest first if needed")
    p.add_argument("--shard-size", type=int, default=500, help="with --pool-cuts: cuts per pool shard")
    p.add_argument("--new-dir", type=Path, required=True)
    p.add_argument("--teachers", required=True, help="comma-separated teacher names")
    p.add_argument("--float-format", choices=["numpy", "lilcom"], default="numpy",
                   help="numpy: the old values bit for bit (4 bytes/value); lilcom: ~1 byte/value, +<= half a tick")
    args = p.parse_args()
    setup_logger()
    if not (args.pool_dir / POOL_INFO).is_file():
        if args.pool_cuts is None:
            raise SystemExit(f"{args.pool_dir} has no pool export: pass --pool-cuts")
        export_pool_shar(load_manifest_lazy(args.pool_cuts), args.pool_dir, args.shard_size, str(args.pool_cuts))
    out = [convert_legacy_dump(args.old_dir, t, args.pool_dir, args.new_dir, args.float_format) for t in args.teachers.split(",")]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
