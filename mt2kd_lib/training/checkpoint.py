"""Atomic checkpoints (icefall layout: ``epoch-N.pt``, ``checkpoint-<batch>.pt``) and checkpoint averaging.

A checkpoint is a dict: ``model`` (state_dict), ``module_attrs`` (see :func:`module_attributes`), ``optimizer``, ``scheduler``, ``sampler``, ``grad_scaler``
(state_dicts or None), ``params`` (plain dict of the training parameters incl. ``batch_idx_train``),
``model_config`` (what :func:`mt2kd_lib.models.factory.build_student` needs), ``rng`` (torch / cuda /
python / numpy states) and anything passed in ``extra``.
"""

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

PathLike = Union[str, Path]


def _state(obj: Any) -> Optional[Dict[str, Any]]:
    return obj.state_dict() if obj is not None else None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def rng_state() -> Dict[str, Any]:
    """Every RNG a training step draws from (dropout, Balancer/Whiten sampling, SpecAugment, MUSAN)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def module_attributes(model: nn.Module) -> Dict[str, Dict[str, Any]]:
    """Plain int/float/bool attributes of every submodule (``module name -> {attr: value}``).

    Some modules adapt such attributes while training without keeping them in the state_dict (e.g.
    Zipformer's ``Whiten.prob`` drops once the whitening constraint holds); saving them is what makes a
    resumed run continue exactly.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for name, m in unwrap(model).named_modules():
        attrs = {k: v for k, v in vars(m).items()
                 if not k.startswith("_") and k != "training" and type(v) in (int, float, bool)}
        if attrs:
            out[name] = attrs
    return out


def restore_module_attributes(model: nn.Module, attrs: Dict[str, Dict[str, Any]]) -> None:
    """Inverse of :func:`module_attributes` (modules or attributes that no longer exist are ignored)."""
    modules = dict(unwrap(model).named_modules())
    for name, values in attrs.items():
        m = modules.get(name)
        if m is None:
            continue
        for k, v in values.items():
            if hasattr(m, k):
                setattr(m, k, v)


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = None,
    sampler: Any = None,
    scaler: Any = None,
    params: Optional[Dict[str, Any]] = None,
    model_config: Optional[Dict[str, Any]] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write the checkpoint to ``path`` atomically (a temporary file in the same folder, then os.replace),
    so an interrupted save never leaves a truncated ``epoch-N.pt``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt: Dict[str, Any] = {
        "model": unwrap(model).state_dict(),
        "module_attrs": module_attributes(model),
        "optimizer": _state(optimizer),
        "scheduler": _state(scheduler),
        "sampler": _state(sampler),
        "grad_scaler": _state(scaler),
        "params": dict(params or {}),
        "model_config": model_config,
        "rng": rng_state(),
    }
    if extra:
        ckpt.update(extra)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    logging.info(f"Saved checkpoint to {path}")
    return path


def load_checkpoint(
    path: PathLike,
    model: Optional[nn.Module] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = None,
    sampler: Any = None,
    scaler: Any = None,
    restore_rng: bool = False,
    strict: bool = True,
) -> Dict[str, Any]:
    """Load ``path`` into the given objects (those that are not None) and return the whole checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    logging.info(f"Loading checkpoint from {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if model is not None:
        unwrap(model).load_state_dict(ckpt["model"], strict=strict)
        restore_module_attributes(model, ckpt.get("module_attrs", {}))
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("sampler", sampler),
                      ("grad_scaler", scaler)):
        if obj is None:
            continue
        if ckpt.get(name) is None:
            raise ValueError(f"{path}: checkpoint has no {name} state to resume from")
        obj.load_state_dict(ckpt[name])
    if restore_rng:
        set_rng_state(ckpt["rng"])
    return ckpt


def average_state_dicts(states: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of model state_dicts (float64 accumulation; integer buffers taken from the last,
    as icefall does for e.g. ``num_batches_tracked``)."""
    if not states:
        raise ValueError("average_state_dicts: no state dicts given")
    keys = list(states[0].keys())
    for k, s in enumerate(states[1:], 1):
        if list(s.keys()) != keys:
            diff = sorted(set(keys) ^ set(s.keys()))
            raise ValueError(f"average_state_dicts: state dict {k} has different keys, e.g. {diff[:5]}")
    out: Dict[str, torch.Tensor] = {}
    for key in keys:
        first = states[0][key]
        if first.is_floating_point():
            acc = torch.zeros_like(first, dtype=torch.float64)
            for s in states:
                acc += s[key].to(torch.float64)
            out[key] = (acc / len(states)).to(first.dtype)
        else:
            out[key] = states[-1][key].clone()
    return out


def average_checkpoints(paths: Sequence[PathLike]) -> Dict[str, torch.Tensor]:
    """icefall's ``--avg K`` without ``--use-averaged-model``: the plain mean of the models in ``paths``."""
    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    states = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such checkpoint to average")
        states.append(torch.load(p, map_location="cpu", weights_only=False)["model"])
    return average_state_dicts(states)


def find_checkpoints(exp_dir: PathLike, kind: str = "epoch") -> List[Path]:
    """``epoch-N.pt`` files sorted by N (``kind="epoch"``) or ``checkpoint-B.pt`` sorted by B, newest first."""
    if kind not in ("epoch", "checkpoint"):
        raise ValueError(f"kind must be 'epoch' or 'checkpoint', got {kind!r}")
    pattern = re.compile(rf"^{kind}-(\d+)\.pt$")
    found = []
    for p in Path(exp_dir).glob(f"{kind}-*.pt"):
        m = pattern.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def epoch_checkpoints_for_avg(exp_dir: PathLike, epoch: int, avg: int) -> List[Path]:
    """``epoch-(epoch-avg+1).pt .. epoch-epoch.pt`` (icefall's --epoch/--avg), checked to exist."""
    if avg < 1 or epoch - avg + 1 < 1:
        raise ValueError(f"--epoch {epoch} --avg {avg}: needs 1 <= avg <= epoch")
    paths = [Path(exp_dir) / f"epoch-{e}.pt" for e in range(epoch - avg + 1, epoch + 1)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoints to average are missing: {missing}")
    return paths


def remove_old_checkpoints(exp_dir: PathLike, keep_last_k: int) -> None:
    """Delete all but the newest ``keep_last_k`` ``checkpoint-B.pt`` files (0 keeps all)."""
    if keep_last_k <= 0:
        return
    for p in find_checkpoints(exp_dir, "checkpoint")[keep_last_k:]:
        p.unlink()
