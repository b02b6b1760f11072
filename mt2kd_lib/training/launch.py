"""Process set-up shared by the training CLIs: single process, ``--world-size N`` spawned DDP processes, or
torchrun (the process group then comes from the environment)."""

import argparse
import dataclasses
import os
from typing import Callable

import torch
import torch.multiprocessing as mp

from mt2kd_lib.training.trainer import TrainParams, init_distributed

RunFn = Callable[[int, int, argparse.Namespace], None]


def device_name(args: argparse.Namespace) -> str:
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def init_process(rank: int, world_size: int, args: argparse.Namespace) -> torch.device:
    """Threads, the process group (when not already there) and this rank's device."""
    torch.set_num_threads(args.num_threads)
    name = device_name(args)
    if world_size > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        init_distributed(rank, world_size, args.master_port, name)
    return torch.device(f"cuda:{rank % torch.cuda.device_count()}" if name == "cuda" else "cpu")


def launch(run: RunFn, args: argparse.Namespace) -> None:
    """Call ``run(rank, world_size, args)`` in every process the arguments / environment ask for."""
    args.exp_dir.mkdir(parents=True, exist_ok=True)
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:  # torchrun
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        if world_size > 1:
            init_distributed(rank, world_size, args.master_port, device_name(args))
        run(rank, world_size, args)
    elif args.world_size > 1:
        mp.spawn(run, args=(args.world_size, args), nprocs=args.world_size, join=True)
    else:
        run(0, 1, args)


def str2bool(v: str) -> bool:
    """argparse type for true/false options: exactly ``true`` or ``false`` (as run.sh passes them); anything else
    (yes, 1, a typo) is an error, not a silent false."""
    if v == "true":
        return True
    if v == "false":
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def add_schedule_args(p: argparse.ArgumentParser) -> None:
    """The optimiser / schedule options both training CLIs share (TrainParams fields of the same names)."""
    p.add_argument("--base-lr", type=float, default=0.045)
    p.add_argument("--lr-batches", type=float, default=7500)
    p.add_argument("--lr-epochs", type=float, default=3.5)
    p.add_argument("--lr-warmup-batches", type=float, default=500)
    p.add_argument("--average-period", type=int, default=200,
                   help="model_avg folds the weights in every N batches (icefall; 0: off); see --use-averaged-model")
    p.add_argument("--model-warmup-batches", type=float, default=4000,
                   help="batches until Zipformer's regularisation warm-up (layer skipping, dropout) ends; icefall: 4000")


def str2bool_or_dev(v: str):
    """argparse type: ``true``/``false`` as :func:`str2bool`, or ``dev`` (kept as the string)."""
    return v if v == "dev" else str2bool(v)


def add_averaged_model_arg(p: argparse.ArgumentParser, help_prefix: str = "", allow_dev: bool = False) -> None:
    """``--use-averaged-model``, the option of every script that loads a trained model (beside its ``--avg``).
    ``allow_dev``: also ``dev``, the choice stage 9 made on dev and recorded in <exp-dir>/results.json
    (mt2kd_lib/evaluation/weights_choice.py)."""
    p.add_argument("--use-averaged-model", type=str2bool_or_dev if allow_dev else str2bool, default=False,
                   help=help_prefix + "the mean weights of the last --avg epochs (checkpoints' model_avg, icefall) "
                        "instead of averaging epoch-N.pt files" +
                        ("; dev: as chosen on dev in stage 9 (<exp-dir>/results.json)" if allow_dev else ""))


def params_from_args(args: argparse.Namespace) -> TrainParams:
    """TrainParams from the CLI options that share its field names (the rest keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainParams) if hasattr(args, f.name)}
    given["exp_dir"] = str(args.exp_dir)
    return TrainParams(**given)
