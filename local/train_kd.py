#!/usr/bin/env python3
"""MT2KD stage 1: multi-teacher knowledge distillation of a Zipformer2 student on the unlabelled KD pool.

  python local/train_kd.py --recipe-data data/mini --teacher-dir exp/mini/teacher_outputs \
      --teachers asr_teacher,at_teacher,sv_teacher --exp-dir exp/mini/kd \
      --model-config egs/mini/conf/student_tiny.yaml --num-epochs 4

The teachers' outputs are the dumps of run.sh stage 5: Shar fields (``<teacher-dir>/<name>/<field>.NNNNNN.tar``)
aligned with the KD pool's Shar shards (``--pool-dir``, by default the pool the dumps record); see
mt2kd_lib/data/teacher_shar.py. The pool and every teacher's outputs are read as one lazy stream
(``CutSet.from_shar``): each DDP rank and dataloader worker reads its own shards, and no manifest is held in memory.
What each teacher is (task, frame-level or not, dimension, frame shift) is read from its ``dump_config.json``. Loss
scales default to the paper's 1 / 1 / 10 for the ASR / AT / SV teachers.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

from lhotse import CutSet

from mt2kd_lib.data.datamodule import NUM_BUCKETS, make_spec_augment, make_train_dl
from mt2kd_lib.data.dataset import MultiTaskDataset
from mt2kd_lib.data.teacher_shar import dump_pool_dir, load_dump_config, pool_duration_bins, read_kd_cuts
from mt2kd_lib.models.factory import load_model_config
from mt2kd_lib.models.kd_model import build_kd_model
from mt2kd_lib.models.icefall_init import add_icefall_init_args, init_from_icefall
from mt2kd_lib.models.kd_init import check_sv_head_matches_teachers
from mt2kd_lib.teachers.mvq import mvq_teacher_fields
from mt2kd_lib.training.streaming_args import add_streaming_args, apply_streaming_args
from mt2kd_lib.training.trainer import (
    Trainer, cleanup_distributed, fix_random_seed)
from mt2kd_lib.training.launch import (
    add_schedule_args,
    init_process,
    launch,
    params_from_args,
    str2bool,
)
from mt2kd_lib.utils.logging import setup_logger

DEFAULT_SCALES = {"asr": 1.0, "at": 1.0, "sv": 10.0}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-data", type=Path, required=True)
    p.add_argument("--teacher-dir", type=Path, required=True, help="run.sh stage-5 output (one folder per teacher)")
    p.add_argument("--teachers", required=True, help="comma-separated teacher dump names")
    p.add_argument("--pool-dir", type=Path, default=None,
                   help="the KD pool's Shar export (default: the one the teachers' dumps were aligned with)")
    p.add_argument("--shuffle-shards", type=str2bool, default=True,
                   help="read the pool's shards in a new random order every epoch (the pool is ordered by origin)")
    p.add_argument("--buffer-size", type=int, default=20000,
                   help="cuts (with their teacher outputs) the bucketing sampler holds in memory")
    p.add_argument("--num-workers", type=int, default=0, help="dataloader workers (each reads its own shards)")
    p.add_argument("--scales", default="", help="per-teacher loss scales name=x,...; default by task 1/1/10")
    p.add_argument("--mask-by-task", type=str2bool, default=True, help="task-ID masking (false: all on all cuts)")
    p.add_argument("--sv-input-stack", default=None,
                   help="encoder stack the SV KD head reads: an index or 'output'; default: the model config's "
                        "heads.sv.input_stack, the stack stage 2's SV head reads")
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--model-config", type=Path, required=True, help="its 'encoder' is the student encoder")
    p.add_argument("--num-epochs", type=int, default=4)
    p.add_argument("--start-epoch", type=int, default=1)
    p.add_argument("--max-duration", type=float, default=300.0)
    add_schedule_args(p)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--spec-augment", type=str2bool, default=True, help="the student sees augmented input")
    p.add_argument("--musan-cuts", type=Path, default=None)
    p.add_argument("--tensorboard", type=str2bool, default=True)
    p.add_argument("--device", default=None)
    p.add_argument("--world-size", type=int, default=1, help="DDP processes to spawn (torchrun also works)")
    p.add_argument("--master-port", type=int, default=12356)
    add_icefall_init_args(p, with_head=False)  # the KD student has no transducer head
    add_streaming_args(p)
    return p


def kd_input_stacks(model_cfg: Dict, sv_input_stack: Optional[str]) -> Dict[str, Optional[int]]:
    """Encoder stack each task's KD head reads: by default the one the model config's task head reads, so that KD
    trains the layers stage 2 builds on (None: the final output)."""
    heads = model_cfg.get("heads") or {}
    stacks = {task: (heads.get(task) or {}).get("input_stack") for task in ("at", "sv")}
    if sv_input_stack is not None:
        stacks["sv"] = None if str(sv_input_stack) == "output" else int(sv_input_stack)
    return {task: None if s is None else int(s) for task, s in stacks.items()}


def teacher_configs(args, input_stacks: Optional[Dict[str, Optional[int]]] = None) -> List[Dict]:
    input_stacks = input_stacks or {}
    scales = dict(item.split("=") for item in args.scales.split(",") if item)
    out = []
    for name in args.teachers.split(","):
        dump = load_dump_config(args.teacher_dir, name)
        spec = dump["spec"]
        kind = "frame" if spec["level"] == "frame" else (
            "probabilities" if spec["output_kind"] == "probabilities" else "utterance")
        out.append(dict(
            name=name, task=spec["task"], field=dump["field"], kind=kind, dim=int(spec["dim"]),
            frame_shift=spec.get("frame_shift"), scale=float(scales.get(name, DEFAULT_SCALES[spec["task"]])),
            input_stack=input_stacks.get(spec["task"]),
        ))
        # {} unless the dump stored codebook indexes; a missing or foreign quantizer.pt is named here. An index
        # array with another number of codebooks is named (teacher, field) by the MVQ loss on its first batch.
        out[-1].update(mvq_teacher_fields(args.teacher_dir, name, dump))
    unknown = set(scales) - {t["name"] for t in out}
    if unknown:
        raise ValueError(f"--scales names {sorted(unknown)} are not among --teachers {args.teachers}")
    return out


def run(rank: int, world_size: int, args: argparse.Namespace) -> None:
    device = init_process(rank, world_size, args)
    setup_logger(args.exp_dir / "log" / ("log-train.txt" if rank == 0 else f"log-train-rank{rank}.txt"),
                 logging.INFO if rank == 0 else logging.WARNING)
    logging.info(f"train_kd.py {' '.join(sys.argv[1:])}")
    fix_random_seed(args.seed)

    model_cfg = apply_streaming_args(load_model_config(args.model_config), args)
    teachers = teacher_configs(args, kd_input_stacks(model_cfg, args.sv_input_stack))
    for t in teachers:
        logging.info(f"teacher {t['name']}: task {t['task']}, {t['kind']}, dim {t['dim']}, scale {t['scale']}")
    check_sv_head_matches_teachers(model_cfg, teachers)
    names = [t["name"] for t in teachers]
    pool_dir = args.pool_dir or dump_pool_dir(args.teacher_dir, names[0])
    cuts, fields = read_kd_cuts(pool_dir, args.teacher_dir, names, shuffle_shards=args.shuffle_shards,
                                seed=args.seed, split_for_dataloading=True)
    bins = pool_duration_bins(pool_dir, NUM_BUCKETS)
    if bins is None:
        logging.info(f"{pool_dir}/pool.json has no duration sample: the sampler estimates its buckets by reading cuts")

    cfg = {"encoder": model_cfg["encoder"], "kd": {"mask_by_task": args.mask_by_task, "teachers": teachers}}
    musan = CutSet.from_file(args.musan_cuts) if args.musan_cuts else None  # noise cuts: small, sampled at random
    ds = MultiTaskDataset(teacher_fields=fields, musan_cuts=musan,
                          spec_augment=make_spec_augment() if args.spec_augment else None)
    train_dl = make_train_dl({"kd": cuts}, None, args.max_duration, ds, seed=args.seed, world_size=world_size,
                             rank=rank, num_workers=args.num_workers, buffer_size=args.buffer_size, iterable=True,
                             duration_bins=bins)
    fix_random_seed(args.seed)
    model = build_kd_model(cfg)
    if args.init_from_icefall is not None and args.start_epoch == 1:
        init_from_icefall(model, args.init_from_icefall, "encoder")
    logging.info(f"KD student: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters "
                 f"(encoder {sum(p.numel() for p in model.encoder.parameters()) / 1e6:.2f} M)")
    params = params_from_args(args)
    Trainer(model, params, train_dl, None, device=device, rank=rank, world_size=world_size, model_config=cfg).fit()
    logging.info(f"Done: skipped {params.skipped_batches} batches, {params.skipped_utts} utterances")
    if world_size > 1:
        cleanup_distributed()


def main() -> None:
    launch(run, get_parser().parse_args())


if __name__ == "__main__":
    main()
