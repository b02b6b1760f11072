#!/usr/bin/env python3
"""Dump one teacher's outputs over the KD pool's Shar shards into verified Shar fields (resumable; see
mt2kd_lib.teachers.dump and mt2kd_lib.data.teacher_shar).

Example::

    python local/export_pool_shar.py --cuts data/fbank/kd_cuts_pool.jsonl.gz --out-dir exp/kd_pool_shar
    python local/dump_teacher.py --pool-dir exp/kd_pool_shar --teacher whisper --origin asr \
        --teachers-config exp/teachers.yaml --out-dir exp/teacher_outputs --num-jobs 2 --device cuda:0,cuda:1
    # or split across nodes: --job-index 3 --num-job-splits 8 --device cuda:0
"""

import argparse
import json

from mt2kd_lib.teachers.dump import dump_teacher, factory_from_config
from mt2kd_lib.teachers.mvq import MvqConfig, frame_target_from_config
from mt2kd_lib.utils.logging import setup_logger


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool-dir", required=True, help="the KD pool's Shar export (local/export_pool_shar.py)")
    p.add_argument("--teacher", required=True, help="teacher name in --teachers-config, or a teacher kind")
    p.add_argument("--teachers-config", default=None, help="yaml with teachers: {name: {kind: ..., ...}}")
    p.add_argument("--out-dir", required=True, help="shards go to <out-dir>/<teacher>/")
    p.add_argument("--num-jobs", type=int, default=1, help="worker processes in this invocation")
    p.add_argument("--job-index", type=int, default=0)
    p.add_argument("--num-job-splits", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device or comma-separated list (round-robin to workers)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tick-power", type=int, default=None, help="lilcom tick power (default: calibrated)")
    p.add_argument("--rel-precision-bits", type=int, default=6)
    p.add_argument("--verify-existing", action="store_true", help="fully re-verify finished shards")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads per teacher")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--origin", default=None,
                   help="only cuts whose custom 'origin' is this get an output (with task-ID masking, a teacher's "
                        "outputs are used only on cuts of its own task); the others get Shar's no-data marker")
    p.add_argument("--frame-target", choices=["l1", "mvq"], default=None,
                   help="frame-level teachers: store float frames (l1, lilcom) or MVQ codebook indexes (mvq); "
                        "default: the teacher's 'target' in --teachers-config, else l1")
    p.add_argument("--num-codebooks", type=int, default=None,
                   help="MVQ codebooks (bytes per frame; default: the yaml's num_codebooks, else 8)")
    p.add_argument("--mvq-train-iters", type=int, default=MvqConfig.train_iters)
    p.add_argument("--mvq-batch-frames", type=int, default=MvqConfig.batch_frames,
                   help="frames per quantizer training step")
    p.add_argument("--mvq-sample-cuts", type=int, default=MvqConfig.sample_cuts,
                   help="cuts whose teacher frames train the quantizer")
    p.add_argument("--mvq-refine-iters", type=int, default=MvqConfig.refine_iters)
    p.add_argument("--log-file", default=None)
    return p


def main() -> None:
    args = get_parser().parse_args()
    setup_logger(args.log_file)
    factory = factory_from_config(args.teacher, args.teachers_config)
    per_teacher = frame_target_from_config(args.teacher, args.teachers_config)
    mvq = None
    if (args.frame_target or per_teacher.get("target", "l1")) == "mvq":
        mvq = MvqConfig(num_codebooks=args.num_codebooks or int(per_teacher.get("num_codebooks", 8)),
                        train_iters=args.mvq_train_iters, batch_frames=args.mvq_batch_frames,
                        sample_cuts=args.mvq_sample_cuts,
                        refine_iters=args.mvq_refine_iters)
    summary = dump_teacher(
        args.pool_dir,
        factory,
        args.out_dir,
        teacher_name=args.teacher,
        origin=args.origin,
        num_jobs=args.num_jobs,
        job_index=args.job_index,
        num_job_splits=args.num_job_splits,
        device=args.device,
        batch_size=args.batch_size,
        tick_power=args.tick_power,
        rel_precision_bits=args.rel_precision_bits,
        verify_existing=args.verify_existing,
        num_threads=args.num_threads,
        progress=not args.no_progress,
        mvq=mvq,
    )
    print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
