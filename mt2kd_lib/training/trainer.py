"""The one training loop of mt2kd (icefall's ``train.py`` loop, model-agnostic).

Any model whose ``forward(batch, batch_idx_train) -> (loss, info)`` returns a summed loss and an ``info``
dict of floats trains here: ScaledAdam (with its gradient clipping) + Eden, optional AMP on GPU, DDP
(torchrun or spawned processes; gloo on CPU, nccl on GPU), icefall log lines, tensorboard, validation each
epoch, atomic ``epoch-N.pt`` (+ optional ``checkpoint-<batch>.pt``) and exact resumption.

Exact resume: every epoch starts with ``fix_random_seed(seed + epoch - 1)`` and ``sampler.set_epoch(epoch-1)``
(as icefall), and the checkpoint carries the model, optimizer, scheduler and grad-scaler states and the batch
counter, so ``--start-epoch N`` (loading ``epoch-(N-1).pt``) continues bit-for-bit like an uninterrupted run.
Batch checkpoints also carry the sampler state and the RNG states, restored right where training stopped.

Non-finite handling: models mask out non-finite utterances themselves (``info["skipped_utts"]``); a batch
whose gradients are still non-finite after backward is skipped (no optimiser step) and counted.

Encoder freezing (``freeze_encoder_steps = N > 0``, MT2KD fine-tuning): the model's ``encoder`` gets optimiser
groups of its own, which ScaledAdam skips (``frozen`` group flag) for global batches 1..N, so the encoder stays
bit-identical while the heads train; from batch N+1 it trains normally (its optimiser state starts then). The
flag follows ``batch_idx_train``, so a run resumed inside the frozen phase keeps the remaining batches frozen.
"""

import dataclasses
import itertools
import logging
import math
import os
import random
import shutil
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from mt2kd_lib.data.datamodule import train_sampler
from mt2kd_lib.models.zipformer.scaling import set_batch_count
from mt2kd_lib.training.checkpoint import (
    load_checkpoint,
    remove_old_checkpoints,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from mt2kd_lib.training.model_avg import new_model_avg, update_model_avg

logger = logging.getLogger(__name__)

BatchTransform = Callable[[Dict[str, Any]], Dict[str, Any]]
FROZEN_MODULE = "encoder"  # what freeze_encoder_steps freezes (StudentModel.encoder, KDModel.encoder)


@dataclass
class TrainParams:
    """Training hyper-parameters and the loop's own state (saved in every checkpoint)."""

    exp_dir: str = "exp"
    num_epochs: int = 30
    start_epoch: int = 1  # > 1: resume from epoch-(start_epoch-1).pt
    start_batch: int = 0  # > 0: resume from checkpoint-<start_batch>.pt (takes precedence)
    max_duration: float = 200.0  # informational: the DataLoader is built by the caller
    base_lr: float = 0.045  # icefall's ScaledAdam base lr
    lr_batches: float = 7500.0
    lr_epochs: float = 3.5
    lr_warmup_batches: float = 500.0
    # Zipformer's regularisation schedules (layer skipping, dropout, balancer limits) are written for ~4000+
    # batches (icefall); a short CPU run ends them after this many batches instead (the model sees a scaled count).
    model_warmup_batches: float = 4000.0
    clipping_scale: float = 2.0
    seed: int = 42
    use_amp: bool = False
    amp_dtype: str = "bf16"  # "bf16" or "fp16"; AMP runs on GPU only
    log_interval: int = 50
    valid_interval: int = 0  # extra validation every N batches (0: only at the end of each epoch)
    save_every_n: int = 0  # checkpoint-<batch>.pt every N batches (0: off)
    keep_last_k: int = 30
    tensorboard: bool = True
    reset_interval: int = 200  # decay constant of the running tot_loss, as icefall
    freeze_encoder_steps: int = 0  # > 0: the encoder is not updated in global batches 1..N (heads only)
    average_period: int = 200  # model_avg (icefall) folds the weights in every N batches (0: no model_avg)
    # State of the loop (restored on resume).
    batch_idx_train: int = 0
    cur_epoch: int = 0
    cur_batch_idx: int = 0
    best_train_loss: float = float("inf")
    best_valid_loss: float = float("inf")
    best_train_epoch: int = -1
    best_valid_epoch: int = -1
    skipped_batches: int = 0
    skipped_utts: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def update_state(self, saved: Dict[str, Any]) -> None:
        """Take the loop state (not the hyper-parameters) from a checkpoint's ``params``."""
        for key in ("batch_idx_train", "best_train_loss", "best_valid_loss", "best_train_epoch",
                    "best_valid_epoch", "skipped_batches", "skipped_utts", "cur_epoch", "cur_batch_idx"):
            if key in saved:
                setattr(self, key, saved[key])


def fix_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def init_distributed(rank: int, world_size: int, master_port: int = 12354, device: str = "cpu") -> None:
    """Join the process group (gloo on CPU, nccl on GPU); MASTER_ADDR/PORT default to localhost:port."""
    os.environ.setdefault("MASTER_ADDR", "localhost")
    os.environ.setdefault("MASTER_PORT", str(master_port))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    if device.startswith("cuda"):
        torch.cuda.set_device(rank % torch.cuda.device_count())


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


ZIPFORMER_WARMUP_BATCHES = 4000.0  # where icefall's Zipformer schedules reach their main values


class MetricsTracker:
    """Sums of ``info`` values; ``format()`` shows losses normalised by their counts (icefall style)."""

    # loss key -> the count it is normalised by
    NORMALISERS = {
        "loss": "frames", "simple_loss": "asr_frames", "pruned_loss": "asr_frames", "ctc_loss": "asr_frames",
        "at_loss": "at_utts", "sv_loss": "sv_utts",
    }

    def __init__(self) -> None:
        self.sums: Dict[str, float] = defaultdict(float)

    def add(self, info: Dict[str, float], scale: float = 1.0) -> None:
        for k, v in info.items():
            self.sums[k] += scale * float(v)

    def decay(self, factor: float) -> None:
        for k in self.sums:
            self.sums[k] *= factor

    def normalised(self) -> Dict[str, float]:
        out = {}
        pairs = dict(self.NORMALISERS)
        # Per-teacher KD losses (kd_<name>_loss) are sums over utterances, normalised by kd_<name>_utts.
        pairs.update({k: k[: -len("_loss")] + "_utts" for k in self.sums if k.startswith("kd_") and k.endswith("_loss")})
        for key, norm in pairs.items():
            if key in self.sums and self.sums.get(norm, 0.0) > 0:
                out[key] = self.sums[key] / self.sums[norm]
        return out

    def format(self) -> str:
        parts = [f"{k}={v:.4g}" for k, v in self.normalised().items()]
        for count in ("frames", "utterances", "skipped_utts"):
            if count in self.sums:
                parts.append(f"{count}={self.sums[count]:.0f}")
        return ", ".join(parts)

    def all_reduce(self, device: torch.device) -> None:
        """Sum over DDP ranks (a key missing on a rank counts as 0 there)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        all_keys = [None] * dist.get_world_size()
        dist.all_gather_object(all_keys, sorted(self.sums))
        keys = sorted(set().union(*all_keys))
        t = torch.tensor([self.sums.get(k, 0.0) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        self.sums = defaultdict(float, {k: float(v) for k, v in zip(keys, t.tolist())})


def move_batch(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """Tensors of the batch to ``device``; lists (ids, texts, tokens) are left as they are."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def build_optimizer(model: nn.Module, params: TrainParams):
    """ScaledAdam over per-module lr groups (icefall) + the Eden schedule.

    With ``freeze_encoder_steps > 0`` the encoder's parameters get groups of their own (``"module": "encoder"``)
    so that the trainer can freeze them; otherwise the groups are exactly icefall's (checkpoints stay compatible).
    """
    from mt2kd_lib.training.optim import Eden, ScaledAdam, get_parameter_groups_with_lrs

    separate = (FROZEN_MODULE,) if params.freeze_encoder_steps > 0 else ()
    optimizer = ScaledAdam(
        get_parameter_groups_with_lrs(model, lr=params.base_lr, include_names=True, separate_modules=separate),
        lr=params.base_lr,
        clipping_scale=params.clipping_scale,
    )
    scheduler = Eden(optimizer, params.lr_batches, params.lr_epochs, warmup_batches=params.lr_warmup_batches)
    return optimizer, scheduler


class Trainer:
    """Runs epochs of ``model`` over ``train_dl`` (a DataLoader whose ``sampler`` is a lhotse sampler).

    Args:
      model: the (unwrapped) model; wrapped in DDP here when ``world_size > 1``.
      params: :class:`TrainParams`.
      train_dl / valid_dl: DataLoaders (valid may be None).
      device: where to train.
      rank / world_size: DDP position (the process group must already be initialised when world_size > 1).
      model_config: stored in checkpoints so the model can be rebuilt (see models/factory.py).
      batch_transform: applied to every batch on the host before moving it (e.g. BPE-encoding texts).
      optimizer / scheduler: default :func:`build_optimizer`.
    """

    def __init__(
        self,
        model: nn.Module,
        params: TrainParams,
        train_dl: Iterable,
        valid_dl: Optional[Iterable] = None,
        device: Optional[torch.device] = None,
        rank: int = 0,
        world_size: int = 1,
        model_config: Optional[Dict[str, Any]] = None,
        batch_transform: Optional[BatchTransform] = None,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Any = None,
    ) -> None:
        self.params = params
        self.device = device or torch.device("cpu")
        self.rank, self.world_size = rank, world_size
        self.train_dl, self.valid_dl = train_dl, valid_dl
        self.model_config = model_config
        self.batch_transform = batch_transform
        self.exp_dir = Path(params.exp_dir)
        if self.device.type == "cpu":
            # Reuse freed activation memory between steps instead of re-faulting it (about 2x on CPU).
            from mt2kd_lib.models.zipformer.cpu_alloc import tune_cpu_malloc

            tune_cpu_malloc()
        model.to(self.device)
        if optimizer is None:
            optimizer, scheduler = build_optimizer(model, params)
        self.optimizer, self.scheduler = optimizer, scheduler
        self._check_freeze_groups()
        self._encoder_frozen: Optional[bool] = None  # what the optimiser groups are set to (None: not yet)
        self.model = model
        if world_size > 1:
            # find_unused_parameters: a mixed-task batch need not touch every head on every rank.
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        # icefall's running average of the weights (rank 0 only, on the CPU, float64); evaluated with
        # --use-averaged-model (mt2kd_lib/training/model_avg.py).
        self.model_avg = new_model_avg(model) if params.average_period > 0 and rank == 0 else None
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(params.amp_dtype)
        if self.amp_dtype is None:
            raise ValueError(f"amp_dtype must be 'bf16' or 'fp16', got {params.amp_dtype!r}")
        self.use_amp = bool(params.use_amp) and self.device.type == "cuda"
        if params.use_amp and not self.use_amp:
            logger.warning("use_amp is ignored on CPU (AMP runs on GPU only)")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.tb = None
        if params.tensorboard and rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.exp_dir / "tensorboard"))
        self._resume_rng: Optional[Dict[str, Any]] = None
        self._resume_sampler: Optional[Dict[str, Any]] = None

    # ----------------------------------------------------------------- checkpoints
    def resume(self) -> None:
        """Load ``checkpoint-<start_batch>.pt`` or ``epoch-(start_epoch-1).pt`` when asked to."""
        p = self.params
        if p.start_batch > 0:
            path = self.exp_dir / f"checkpoint-{p.start_batch}.pt"
            ckpt = self._load(path)
            p.update_state(ckpt["params"])
            p.start_epoch = int(ckpt["params"]["cur_epoch"])
            self._resume_rng = ckpt["rng"]
            self._resume_sampler = ckpt["sampler"]
        elif p.start_epoch > 1:
            path = self.exp_dir / f"epoch-{p.start_epoch - 1}.pt"
            ckpt = self._load(path)
            p.update_state(ckpt["params"])
            p.cur_batch_idx = 0
        else:
            return
        if self.model_avg is not None:
            if "model_avg" in ckpt:
                self.model_avg = {k: v.to(torch.float64) for k, v in ckpt["model_avg"].items()}
            else:
                logger.warning(f"{path} has no model_avg: the average restarts from the resumed weights")
                self.model_avg = new_model_avg(unwrap(self.model))
        saved = int(ckpt["params"].get("freeze_encoder_steps", 0))
        if saved != p.freeze_encoder_steps:
            logger.warning(f"{path} was trained with freeze_encoder_steps={saved}; continuing with "
                           f"{p.freeze_encoder_steps} (the encoder is frozen while batch_idx_train <= that)")

    def _load(self, path: Path) -> Dict[str, Any]:
        try:
            return load_checkpoint(path, self.model, self.optimizer, self.scheduler, scaler=self.scaler)
        except ValueError as e:
            if "parameter group" not in str(e):
                raise
            raise ValueError(f"{path}: its optimizer groups do not match this run's ({e}); a run with "
                             "freeze_encoder_steps > 0 keeps the encoder in groups of its own, so resume with the "
                             "--freeze-encoder-steps setting it was trained with") from e

    def _save(self, path: Path, with_sampler: bool) -> None:
        if self.rank != 0:
            return
        sampler = train_sampler(self.train_dl) if with_sampler else None
        save_checkpoint(path, self.model, self.optimizer, self.scheduler, sampler, self.scaler,
                        params=self.params.to_dict(), model_config=self.model_config,
                        extra=None if self.model_avg is None else {"model_avg": self.model_avg})

    # ----------------------------------------------------------------- loop
    def fit(self) -> TrainParams:
        """Train epochs ``start_epoch..num_epochs``; returns the final params (with the loop state)."""
        p = self.params
        self.resume()
        for epoch in range(p.start_epoch, p.num_epochs + 1):
            self.scheduler.step_epoch(epoch - 1)
            fix_random_seed(p.seed + epoch - 1)
            sampler = train_sampler(self.train_dl)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch - 1)
            if self._resume_sampler is not None:
                sampler.load_state_dict(self._resume_sampler)
                self._resume_sampler = None
            p.cur_epoch = epoch
            if self.tb is not None:
                self.tb.add_scalar("train/epoch", epoch, p.batch_idx_train)
            t0 = time.time()
            train_loss = self.train_one_epoch(epoch)
            logger.info(f"Epoch {epoch} done in {time.time() - t0:.1f} s; train loss {train_loss:.4g}; "
                        f"skipped so far: {p.skipped_batches} batches, {p.skipped_utts} utterances")
            if train_loss < p.best_train_loss:
                p.best_train_loss, p.best_train_epoch = train_loss, epoch
            valid_loss = self.validate(epoch) if self.valid_dl is not None else math.nan
            is_best_valid = valid_loss < p.best_valid_loss
            if is_best_valid:
                p.best_valid_loss, p.best_valid_epoch = valid_loss, epoch
            p.cur_batch_idx = 0
            path = self.exp_dir / f"epoch-{epoch}.pt"
            self._save(path, with_sampler=True)
            if self.rank == 0 and is_best_valid:
                shutil.copyfile(path, self.exp_dir / "best-valid-loss.pt")
            if self.world_size > 1:
                dist.barrier()
        if self.tb is not None:
            self.tb.close()
        return p

    # ----------------------------------------------------------------- encoder freezing
    def _check_freeze_groups(self) -> None:
        if self.params.freeze_encoder_steps < 0:
            raise ValueError(f"freeze_encoder_steps={self.params.freeze_encoder_steps} must be >= 0")
        if self.params.freeze_encoder_steps > 0 and not any(
                g.get("module") == FROZEN_MODULE for g in self.optimizer.param_groups):
            raise ValueError(f"freeze_encoder_steps={self.params.freeze_encoder_steps} needs optimiser groups of "
                             f"the model's '{FROZEN_MODULE}' of their own (build_optimizer makes them; the model "
                             f"must have an '{FROZEN_MODULE}' submodule with parameters)")

    def _apply_encoder_freeze(self) -> None:
        """Set the encoder groups' ``frozen`` flag for the current global batch, logging each change."""
        p = self.params
        frozen = p.batch_idx_train <= p.freeze_encoder_steps
        for group in self.optimizer.param_groups:
            if group.get("module") == FROZEN_MODULE:
                group["frozen"] = frozen  # every step: a flag restored from a checkpoint must not linger
        if p.freeze_encoder_steps <= 0 or frozen == self._encoder_frozen:
            return
        if frozen:
            logger.info(f"Encoder frozen for batches {p.batch_idx_train}..{p.freeze_encoder_steps} "
                        f"(freeze_encoder_steps={p.freeze_encoder_steps}): only the heads are updated")
        else:
            logger.info(f"Encoder unfrozen from batch {p.batch_idx_train} on "
                        f"(freeze_encoder_steps={p.freeze_encoder_steps}): the whole model trains")
        self._encoder_frozen = frozen

    def _grads_finite(self) -> bool:
        flags = [torch.isfinite(q.grad).all() for q in self.model.parameters() if q.grad is not None]
        return bool(torch.stack(flags).all()) if flags else True

    def train_one_epoch(self, epoch: int) -> float:
        """One pass over ``train_dl``; returns the epoch's loss per frame."""
        p = self.params
        self.model.train()
        tot = MetricsTracker()  # decayed running sums (icefall's tot_loss)
        epoch_sums = MetricsTracker()
        it = iter(self.train_dl)
        skip_until = p.cur_batch_idx
        if self._resume_rng is not None:
            # After creating the iterator (it draws a seed), exactly as the interrupted run was.
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        else:
            skip_until = 0
        if self.world_size > 1:
            it = self._until_any_rank_runs_out(it)
        bar = tqdm(it, desc=f"epoch {epoch}", disable=self.rank != 0, mininterval=5, leave=False)
        batch_idx = skip_until
        for batch in bar:
            batch_idx += 1
            p.batch_idx_train += 1
            p.cur_batch_idx = batch_idx
            set_batch_count(self.model, p.batch_idx_train * ZIPFORMER_WARMUP_BATCHES / p.model_warmup_batches)
            info = self.train_step(batch)
            tot.decay(1.0 - 1.0 / p.reset_interval)
            tot.add(info)
            epoch_sums.add(info)
            lr = self.scheduler.get_last_lr()[0]
            if p.log_interval > 0 and batch_idx % p.log_interval == 0 and self.rank == 0:
                this = MetricsTracker()
                this.add(info)
                logger.info(
                    f"Epoch {epoch}, batch {batch_idx}, loss[{this.format()}], tot_loss[{tot.format()}], "
                    f"batch size: {int(info.get('utterances', 0))}, lr: {lr:.2e}, "
                    f"skipped: {p.skipped_batches} batches / {p.skipped_utts} utts"
                    + (f", grad_scale: {self.scaler.get_scale():.1f}" if self.scaler.is_enabled() else "")
                )
                self._tb_scalars("train/current_", this.normalised())
                self._tb_scalars("train/tot_", tot.normalised())
                if self.tb is not None:
                    self.tb.add_scalar("train/learning_rate", lr, p.batch_idx_train)
            if p.valid_interval > 0 and p.batch_idx_train % p.valid_interval == 0 and self.valid_dl is not None:
                self.validate(epoch)
                self.model.train()
            if self.model_avg is not None and p.batch_idx_train % p.average_period == 0:
                update_model_avg(self.model_avg, unwrap(self.model), p.batch_idx_train, p.average_period)
            if p.save_every_n > 0 and p.batch_idx_train % p.save_every_n == 0:
                self._save(self.exp_dir / f"checkpoint-{p.batch_idx_train}.pt", with_sampler=True)
                if self.rank == 0:
                    remove_old_checkpoints(self.exp_dir, p.keep_last_k)
        epoch_sums.all_reduce(self.device)
        return epoch_sums.normalised().get("loss", math.nan)

    def _until_any_rank_runs_out(self, batches: Iterator[Any]) -> Iterator[Any]:
        """DDP: the batches of this rank while every rank still has one. Ranks need not get the same number of
        batches (Shar shards are split over ranks and workers, and their count need not divide evenly); a rank that
        went on alone would wait forever in the gradient all-reduce. One tiny all-reduce per step; a rank that
        stops with batches left says so (shards are reshuffled every epoch, so other cuts are left out next time)."""
        flag = torch.zeros(1, dtype=torch.int64, device=self.device)
        for batch in itertools.chain(batches, [None]):
            flag.fill_(0 if batch is None else 1)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            if int(flag.item()) == 0:
                if batch is not None:
                    logger.info(f"rank {self.rank}: another rank ran out of batches; this epoch ends here "
                                "(this rank had batches left)")
                return
            yield batch

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        """Forward, backward, (clipped) optimiser step; returns the model's info for this batch."""
        p = self.params
        if self.batch_transform is not None:
            batch = self.batch_transform(batch)
        batch = move_batch(batch, self.device)
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.use_amp else nullcontext()
        with ctx:
            loss, info = self.model(batch, p.batch_idx_train)
        p.skipped_utts += int(info.get("skipped_utts", 0))
        self.scaler.scale(loss).backward()
        self.scheduler.step_batch(p.batch_idx_train)
        self._apply_encoder_freeze()
        # With fp16 the GradScaler itself skips steps with inf gradients; otherwise check here.
        if not self.scaler.is_enabled() and not self._grads_finite():
            p.skipped_batches += 1
            logger.warning(f"Non-finite gradients in batch {p.batch_idx_train} (cuts {batch['cut_ids'][:3]}...); "
                           f"skipping the step (skipped batches so far: {p.skipped_batches})")
            self.optimizer.zero_grad()
            return info
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        return info

    def _tb_scalars(self, prefix: str, values: Dict[str, float]) -> None:
        if self.tb is None:
            return
        for k, v in values.items():
            self.tb.add_scalar(prefix + k, v, self.params.batch_idx_train)

    @torch.no_grad()
    def validate(self, epoch: int) -> float:
        """Loss per frame over ``valid_dl`` (summed over DDP ranks); logged and written to tensorboard."""
        self.model.eval()
        sums = MetricsTracker()
        for batch in self.valid_dl:
            if self.batch_transform is not None:
                batch = self.batch_transform(batch)
            batch = move_batch(batch, self.device)
            _, info = unwrap(self.model)(batch, self.params.batch_idx_train)
            sums.add(info)
        sums.all_reduce(self.device)
        self.model.train()
        logger.info(f"Epoch {epoch}, validation: {sums.format()}")
        self._tb_scalars("train/valid_", sums.normalised())
        return sums.normalised().get("loss", math.nan)
