#!/usr/bin/env python3
"""Train a single-task (asr | at | sv) or multi-task (multi) Zipformer2 student on a contract corpus.

  python local/train.py --task asr --recipe-data data/mini --exp-dir exp/mini/asr_tiny \
      --model-config egs/mini/conf/student_tiny.yaml --num-epochs 10 --max-duration 200

Data (see mt2kd_lib/data/contract.py): training cuts with features from ``<recipe-data>/fbank``, split names
from ``<recipe-data>/manifests/index.json``. Validation: the ASR dev split(s); for AT and SV a held-out
``--valid-fraction`` of the training cuts (the AT eval / SV test sets stay untouched until evaluation, and
SV validation needs training speakers). ``--world-size N`` spawns N DDP processes; under torchrun the
process group comes from the environment. ``--start-epoch N`` resumes from ``epoch-(N-1).pt``.

MT2KD stage 2 (fine-tuning a stage-1 KD encoder, run.sh stage 7):

  python local/train.py --task multi --init-from-kd exp/mini/mt2kd/kd/epoch-6.pt --encoder-lr-scale 0.5 \
      --freeze-encoder-steps 200 --at-soft-labels exp/mini/teacher_outputs --at-soft-teacher at_teacher \
      --recipe-data data/mini --exp-dir exp/mini/mt2kd --model-config egs/mini/conf/student_tiny.yaml

``--freeze-encoder-steps N``: in global batches 1..N (``batch_idx_train``, so resuming inside that range keeps
the rest frozen) the encoder, its convolutional front-end included, is not updated at all -- the optimizer skips
its parameter groups, so no momentum or scale update moves it -- while the transducer decoder/joiner and the AT
and SV heads train. From batch N+1 the encoder trains too, at ``--encoder-lr-scale`` times the Eden lr of that
batch, its optimizer state starting fresh. The log says when the encoder is frozen and when it is unfrozen.
Resume with the same N: the encoder then has optimizer groups of its own, which a checkpoint's layout must match.

``--at-soft-labels DIR --at-soft-teacher NAME [--at-soft-weight W]``: the AT training target becomes
``W * p + (1 - W) * y`` (W = 1 by default) with ``p`` the clip probabilities the AT teacher NAME dumped into
``DIR/NAME`` (run.sh stage 5 with ``finetune_at_soft_labels=true``: over a Shar export of the AT training split,
so the AT cuts are streamed from it with their outputs attached) and ``y`` the multi-hot labels. The export must
hold the AT training manifest's cuts, every one with a teacher output (an error names the missing cuts), and the
teacher's dimension must be the number of AT classes; validation stays on the hard labels (see
mt2kd_lib/data/soft_labels.py).
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from lhotse import CutSet, load_manifest_lazy
from lhotse.lazy import LazyIteratorChain

from mt2kd_lib.data import contract
from mt2kd_lib.data.bpe import load_bpe
from mt2kd_lib.data.datamodule import (
    filter_cuts,
    make_spec_augment,
    make_train_dl,
    speaker_map_from_cuts,
)
from mt2kd_lib.data.dataset import MultiTaskDataset, add_tokens
from mt2kd_lib.data.features import fbank_cuts_path
from mt2kd_lib.data.soft_labels import read_at_soft_label_cuts
from mt2kd_lib.models.factory import (
    build_student,
    complete_model_config,
    load_model_config,
    select_tasks,
    speaker_map_from_config,
)
from mt2kd_lib.models.kd_init import distilled_head_modules, init_from_kd_checkpoint
from mt2kd_lib.models.icefall_init import add_icefall_init_args, init_from_icefall
from mt2kd_lib.training.streaming_args import add_streaming_args, apply_streaming_args
from mt2kd_lib.training.trainer import (
    Trainer,
    cleanup_distributed,
    fix_random_seed,
)
from mt2kd_lib.training.launch import (
    add_schedule_args,
    init_process,
    launch,
    params_from_args,
    str2bool,
)
from mt2kd_lib.utils.logging import setup_logger

TASKS = {"asr": ["asr"], "at": ["at"], "sv": ["sv"], "multi": ["asr", "at", "sv"]}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--recipe-data", type=Path, required=True, help="data/<recipe>: manifests/, fbank/, lang_bpe_*/")
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--model-config", type=Path, required=True, help="model yaml (egs/mini/conf/student_tiny.yaml)")
    p.add_argument("--lang-dir", type=Path, default=None, help="default: the one <recipe-data>/lang_bpe_* folder")
    p.add_argument("--num-epochs", type=int, default=10)
    p.add_argument("--start-epoch", type=int, default=1)
    p.add_argument("--start-batch", type=int, default=0)
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch per process")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--master-port", type=int, default=12354)
    add_schedule_args(p)
    p.add_argument("--warm-step", type=int, default=None, help="transducer warm-up (overrides the model yaml)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--use-amp", type=str2bool, default=False)
    p.add_argument("--amp-dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--valid-interval", type=int, default=0)
    p.add_argument("--save-every-n", type=int, default=0)
    p.add_argument("--keep-last-k", type=int, default=30)
    p.add_argument("--tensorboard", type=str2bool, default=True)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--num-threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--spec-augment", type=str2bool, default=True)
    p.add_argument("--time-warp", type=str2bool, default=False)
    p.add_argument("--musan-cuts", type=Path, default=None, help="MUSAN cuts with features for noise mixing")
    p.add_argument("--task-weights", type=str, default=None, help="multi: mux weights, e.g. asr=2,at=1,sv=1")
    p.add_argument("--valid-fraction", type=float, default=0.05, help="AT/SV training cuts held out to validate")
    p.add_argument("--min-cut-duration", type=float, default=0.3)
    p.add_argument("--max-cut-duration", type=float, default=30.0)
    p.add_argument("--device", type=str, default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--use-teacher-extra", type=str2bool, default=False,
                   help="also train on the index's teacher_extra splits (labelled data only teachers see)")
    p.add_argument("--init-from-kd", type=Path, default=None,
                   help="MT2KD stage 2: start from this stage-1 (local/train_kd.py) checkpoint")
    p.add_argument("--init-from-kd-weights", choices=["last", "mean"], default="last",
                   help="which weights of the --init-from-kd checkpoint: last, or mean (its model_avg)")
    p.add_argument("--distilled-heads-lr-scale", type=float, default=1.0,
                   help="learning-rate multiplier of the head parts taken from KD heads (AT head, SV pooling + "
                        "embedding): smaller keeps more of what was distilled")
    p.add_argument("--encoder-lr-scale", type=float, default=1.0,
                   help="learning-rate multiplier of the encoder (smaller when fine-tuning a KD encoder)")
    p.add_argument("--freeze-encoder-steps", type=int, default=0,
                   help="do not update the encoder in global batches 1..N, only the heads (0: off)")
    p.add_argument("--at-soft-labels", type=Path, default=None,
                   help="teacher-output folder of run.sh stage 5: train AT on the AT teacher's probabilities")
    p.add_argument("--at-soft-teacher", type=str, default=None,
                   help="with --at-soft-labels: the AT teacher's dump name (egs/mini: at_teacher)")
    p.add_argument("--at-soft-weight", type=float, default=None,
                   help="with --at-soft-labels: AT target = W * teacher probs + (1 - W) * hard labels (default 1)")
    add_icefall_init_args(p)
    add_streaming_args(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Option combinations argparse cannot check (fails before any process or data is set up)."""
    if args.init_from_kd is not None and args.init_from_icefall is not None:
        raise ValueError("--init-from-kd and --init-from-icefall both initialise the encoder: give one")
    if args.freeze_encoder_steps < 0:
        raise ValueError(f"--freeze-encoder-steps {args.freeze_encoder_steps} must be >= 0")
    if args.at_soft_labels is None:
        if args.at_soft_teacher is not None or args.at_soft_weight is not None:
            raise ValueError("--at-soft-teacher / --at-soft-weight need --at-soft-labels DIR")
        return
    if "at" not in TASKS[args.task]:
        raise ValueError(f"--at-soft-labels: --task {args.task} trains no AT head")
    if not args.at_soft_teacher:
        raise ValueError("--at-soft-labels needs --at-soft-teacher NAME (the AT teacher's folder under it)")
    if args.at_soft_weight is None:
        args.at_soft_weight = 1.0
    if not 0.0 <= args.at_soft_weight <= 1.0:
        raise ValueError(f"--at-soft-weight {args.at_soft_weight} must be in [0, 1]")


def find_lang_dir(recipe_data: Path) -> Path:
    found = sorted(recipe_data.glob("lang_bpe_*"))
    if len(found) != 1:
        raise ValueError(f"{recipe_data}: expected one lang_bpe_* folder, found {[str(f) for f in found]}; "
                         "pass --lang-dir")
    return found[0]


def split_valid(cuts: CutSet, fraction: float) -> Tuple[CutSet, CutSet]:
    """Deterministic hold-out: every k-th cut (by sorted id) goes to validation; both parts stay lazy.

    One pass collects the ids (strings only, never the cuts) to sort them; only the held-out ids are kept.
    """
    if not 0 < fraction < 0.5:
        raise ValueError(f"--valid-fraction {fraction} must be in (0, 0.5)")
    k = max(2, round(1 / fraction))
    valid_ids = frozenset(sorted(c.id for c in cuts)[k - 1::k])
    return cuts.filter(InSet(valid_ids, False)), cuts.filter(InSet(valid_ids, True))


class InSet:
    """Picklable cut predicate: the cut's id is (``inside``) or is not in ``ids``."""

    def __init__(self, ids: frozenset, inside: bool) -> None:
        self.ids, self.inside = ids, inside

    def __call__(self, cut) -> bool:
        return (cut.id in self.ids) == self.inside


def load_split(fbank_dir: Path, task: str, split: str) -> CutSet:
    """The split's cuts, read lazily (icefall's data modules do the same: nothing is held in memory)."""
    return load_splits(fbank_dir, task, [split])


def load_splits(fbank_dir: Path, task: str, splits: List[str]) -> CutSet:
    """Several splits of one task as one lazy CutSet, in order."""
    paths = [fbank_cuts_path(fbank_dir, task, split) for split in splits]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the features stage (run.sh stage 2)")
    return CutSet.from_files(paths) if len(paths) > 1 else load_manifest_lazy(paths[0])


def parse_weights(spec: Optional[str], tasks: List[str]) -> List[float]:
    if not spec:
        return [1.0] * len(tasks)
    w: Dict[str, float] = {}
    for item in spec.split(","):
        name, _, val = item.partition("=")
        if name not in tasks:
            raise ValueError(f"--task-weights: {name!r} is not one of the trained tasks {tasks}")
        w[name] = float(val)
    return [w.get(t, 1.0) for t in tasks]


def prepare_data(args, tasks: List[str], sp, rank: int, world_size: int, model_cfg: dict):
    """Training/validation DataLoaders and the completed model config."""
    manifest_dir, fbank_dir = args.recipe_data / "manifests", args.recipe_data / "fbank"
    index = contract.read_index(manifest_dir)
    missing = [t for t in tasks if t not in index]
    if missing:
        raise ValueError(f"{manifest_dir}/index.json has no {missing} data; cannot train --task {args.task}")
    train: Dict[str, CutSet] = {}
    valid: Dict[str, CutSet] = {}
    encode = sp.encode if sp is not None else None
    soft_field = None  # --at-soft-labels: the AT teacher's field on the AT training cuts
    for t in tasks:
        cuts = load_split(fbank_dir, t, index[t]["train"])
        if args.use_teacher_extra:
            extra = index.get("teacher_extra", {}).get(t, [])
            cuts = load_splits(fbank_dir, t, [index[t]["train"], *extra])
            logging.info(f"{t}: training on {[index[t]['train'], *extra]}")
        if t == "at" and args.at_soft_labels is not None:
            # The same cuts, streamed from the Shar export the AT teacher was dumped over (outputs attached).
            num_classes = len(contract.read_class_labels(manifest_dir))
            cuts, soft_field = read_at_soft_label_cuts(cuts, args.at_soft_labels, args.at_soft_teacher, num_classes)
        if t == "asr":
            train[t] = filter_cuts(cuts, "asr train", args.min_cut_duration, args.max_cut_duration, encode)
            devs = index["asr"].get("dev") or []
            devs = [devs] if isinstance(devs, str) else devs
            if devs:
                valid[t] = filter_cuts(load_splits(fbank_dir, "asr", devs), "asr dev", args.min_cut_duration,
                                       args.max_cut_duration, encode)
        else:
            cuts = filter_cuts(cuts, f"{t} train", args.min_cut_duration, args.max_cut_duration)
            train[t], valid[t] = split_valid(cuts, args.valid_fraction)
    speakers = None
    if "sv" in tasks:
        speakers = sorted(speaker_map_from_cuts(train["sv"]))
    cfg = complete_model_config(model_cfg, args.lang_dir if "asr" in tasks else None, manifest_dir, speakers)
    if args.warm_step is not None:
        cfg.setdefault("loss", {})["warm_step"] = args.warm_step
    num_classes = cfg["heads"]["at"]["num_classes"] if "at" in tasks else None
    spk_map = speaker_map_from_config(cfg)
    musan = CutSet.from_file(args.musan_cuts) if args.musan_cuts else None  # noise cuts: small, sampled at random
    soft_weight = 1.0 if args.at_soft_weight is None else args.at_soft_weight
    if soft_field is not None:
        logging.info(f"AT: training targets {soft_weight:g} * {args.at_soft_teacher} probabilities + "
                     f"{1 - soft_weight:g} * hard labels; validation on the hard labels")
    train_ds = MultiTaskDataset(
        spk_map, num_classes,
        spec_augment=make_spec_augment(args.time_warp) if args.spec_augment else None,
        musan_cuts=musan, at_soft_field=soft_field, at_soft_weight=soft_weight,
    )
    train_dl = make_train_dl(train, parse_weights(args.task_weights, tasks), args.max_duration, train_ds,
                             seed=args.seed, world_size=world_size, rank=rank, num_workers=args.num_workers)
    valid_dl = None
    if valid:
        valid_ds = MultiTaskDataset(spk_map, num_classes)
        # Validation cuts of all tasks in one loader: tag each then concatenate.
        from mt2kd_lib.data.datamodule import tag_task
        from lhotse.dataset import SimpleCutSampler

        tagged = CutSet(LazyIteratorChain(*(tag_task(cs, t).data for t, cs in valid.items())))
        sampler = SimpleCutSampler(tagged, max_duration=args.max_duration, shuffle=False,
                                   world_size=world_size, rank=rank)
        valid_dl = torch.utils.data.DataLoader(valid_ds, sampler=sampler, batch_size=None, num_workers=0)
    return train_dl, valid_dl, cfg


def run(rank: int, world_size: int, args: argparse.Namespace) -> None:
    device = init_process(rank, world_size, args)
    setup_logger(args.exp_dir / "log" / f"log-train-rank{rank}.txt", logging.INFO if rank == 0 else logging.WARNING)
    logging.info(f"train.py {' '.join(sys.argv[1:])}")
    logging.info(f"device {device}, world size {world_size}")
    fix_random_seed(args.seed)  # model initialisation identical on every rank and every run

    tasks = TASKS[args.task]
    if "asr" in tasks and args.lang_dir is None:
        args.lang_dir = find_lang_dir(args.recipe_data)
    sp = load_bpe(args.lang_dir) if "asr" in tasks else None
    model_cfg = select_tasks(load_model_config(args.model_config), tasks)
    model_cfg = apply_streaming_args(model_cfg, args)
    train_dl, valid_dl, cfg = prepare_data(args, tasks, sp, rank, world_size, model_cfg)
    fix_random_seed(args.seed)
    model = build_student(cfg)
    fresh_start = args.start_epoch == 1 and args.start_batch == 0
    # A resume with --distilled-heads-lr-scale reads the KD checkpoint too (its weights are then replaced by the
    # resumed ones): which head parts came from KD decides the lr groups, laid out as in the checkpoint.
    if args.init_from_kd is not None and (fresh_start or args.distilled_heads_lr_scale != 1.0):
        counts = init_from_kd_checkpoint(model, args.init_from_kd, args.init_from_kd_weights)
        for m in distilled_head_modules(model, counts) if args.distilled_heads_lr_scale != 1.0 else []:
            m.lr_scale = args.distilled_heads_lr_scale  # read by get_parameter_groups_with_lrs
    if args.init_from_icefall is not None and fresh_start:
        init_from_icefall(model, args.init_from_icefall, args.init_from_icefall_parts, args.icefall_bpe,
                          args.lang_dir / "bpe.model" if args.lang_dir is not None else None)
    if args.encoder_lr_scale != 1.0:
        model.encoder.lr_scale = args.encoder_lr_scale  # read by get_parameter_groups_with_lrs
    n_params = sum(q.numel() for q in model.parameters())
    logging.info(f"model: tasks {tasks}, {n_params / 1e6:.2f} M parameters")

    params = params_from_args(args)
    transform = (lambda b: add_tokens(b, sp.encode)) if sp is not None else None
    trainer = Trainer(model, params, train_dl, valid_dl, device=device, rank=rank, world_size=world_size,
                      model_config=cfg, batch_transform=transform)
    trainer.fit()
    logging.info(f"Done. best valid loss {params.best_valid_loss:.4g} (epoch {params.best_valid_epoch}); "
                 f"skipped {params.skipped_batches} batches, {params.skipped_utts} utterances")
    if world_size > 1:
        cleanup_distributed()


def main() -> None:
    args = get_parser().parse_args()
    check_args(args)
    launch(run, args)


if __name__ == "__main__":
    main()
