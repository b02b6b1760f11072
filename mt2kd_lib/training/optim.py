"""ScaledAdam optimizer, Eden learning-rate scheduler and per-module learning-rate groups.

ScaledAdam (Yao et al., Zipformer paper) is Adam whose update for each non-scalar tensor is scaled
by that tensor's current rms value (so the relative change per step is what the lr sets), plus an
explicitly learned overall scale per tensor (updated every ``size_update_period`` steps, kept in
[param_min_rms, param_max_rms]); scalars use plain Adam with ``lr * scalar_lr_scale``.  Optional
gradient clipping against ``clipping_scale`` x the median recent (rms-scaled) gradient norm.

Parameters of equal shape are stacked and updated together (fewer, larger tensor ops).

Frozen groups: a parameter group with ``frozen=True`` is left out of :meth:`ScaledAdam.step` entirely (no
momentum, no scale or scalar-clamp update, no state change), so its parameters stay bit-identical however many
steps pass; its optimiser state is left as it was (in a fresh run: empty until the first unfrozen step, which
starts it as for a new optimiser). A zero gradient or a zero lr is not enough: the momentum ``delta`` and the
rms limit of the scale update still move parameters. The trainer uses this to freeze the encoder for the first
steps of fine-tuning (``get_parameter_groups_with_lrs(separate_modules=...)`` gives a module groups of its own).

Eden: lr = base_lr * ((b^2 + B^2)/B^2)^-0.25 * ((e^2 + E^2)/E^2)^-0.25 * warmup(b), where b / e are
the batch / epoch counts, B = lr_batches, E = lr_epochs and warmup rises linearly from
``warmup_start`` to 1 over ``warmup_batches``.
"""

import logging
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


class ScaledAdam(Optimizer):
    """See module docstring.

    Args:
      params: parameters, (name, parameter) pairs, or groups (dicts with ``params`` or
        ``named_params`` and optionally ``lr``) -- names are used only in clipping diagnostics.
        A group whose ``frozen`` entry is True is skipped by :meth:`step` (see module docstring).
      lr: learning rate (relative change per step for non-scalar tensors), e.g. 0.045.
      clipping_scale: clip the total (rms-scaled) grad norm to this times the median over the last
        ``clipping_update_period`` steps; None disables clipping.
      betas: (momentum, second-moment) coefficients.
      scalar_lr_scale: lr factor for scalar parameters and for learning tensor scales.
      eps: denominator epsilon.
      param_min_rms / param_max_rms: limits of the learned tensor rms.
      scalar_max: scalar parameters are clamped to [-scalar_max, scalar_max].
      size_update_period: steps between updates of the tensor scales.
      clipping_update_period: steps between re-estimates of the clipping threshold.
    """

    def __init__(self, params: Iterable[Any], lr: float = 3e-02, clipping_scale: Optional[float] = None,
                 betas: Tuple[float, float] = (0.9, 0.98), scalar_lr_scale: float = 0.1,
                 eps: float = 1.0e-08, param_min_rms: float = 1.0e-05, param_max_rms: float = 3.0,
                 scalar_max: float = 10.0, size_update_period: int = 4,
                 clipping_update_period: int = 100) -> None:
        if lr <= 0.0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, clipping_scale=clipping_scale, betas=betas,
                        scalar_lr_scale=scalar_lr_scale, eps=eps, param_min_rms=param_min_rms,
                        param_max_rms=param_max_rms, scalar_max=scalar_max,
                        size_update_period=size_update_period,
                        clipping_update_period=clipping_update_period)
        groups, names = self._split_names(params)
        super().__init__(groups, defaults)
        self.parameters_names: List[List[str]] = names

    @staticmethod
    def _split_names(params: Iterable[Any]) -> Tuple[List[Dict[str, Any]], List[List[str]]]:
        items = list(params)
        if len(items) == 0:
            raise ValueError("ScaledAdam got an empty parameter list")
        if not isinstance(items[0], dict):
            items = [{"params": items}]
        groups, names = [], []
        for i, g in enumerate(items):
            g = dict(g)
            if "named_params" in g:
                pairs = list(g.pop("named_params"))
                g["params"] = [p for _, p in pairs]
                names.append([n for n, _ in pairs])
            else:
                plist = list(g["params"])
                if plist and isinstance(plist[0], tuple):
                    names.append([n for n, _ in plist])
                    plist = [p for _, p in plist]
                else:
                    names.append([f"group{i}.param{j}" for j in range(len(plist))])
                g["params"] = plist
            groups.append(g)
        return groups, names

    # --- batching of equal-shape parameters ---------------------------------------------------

    @staticmethod
    def _batches(params: Sequence[Tensor], names: Sequence[str]) -> List[Tuple[List[Tensor], List[str]]]:
        """Group parameters by (dtype, shape) in a deterministic order (state lives on the first)."""
        by_key: Dict[Tuple[Any, ...], Tuple[List[Tensor], List[str]]] = {}
        for p, n in zip(params, names):
            key = (str(p.dtype), *p.shape)
            by_key.setdefault(key, ([], []))
            by_key[key][0].append(p)
            by_key[key][1].append(n)
        return [by_key[k] for k in sorted(by_key, key=str)]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Optional[Tensor]:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, names in zip(self.param_groups, self.parameters_names):
            if group.get("frozen", False):
                continue  # not even the state moves: the parameters stay bit-identical
            stacked: List[Tuple[Tensor, Tensor, Dict[str, Any], List[Tensor], List[str]]] = []
            for plist, nlist in self._batches(group["params"], names):
                p = torch.stack([q.detach() for q in plist])
                g = torch.stack([torch.zeros_like(q) if q.grad is None else q.grad for q in plist])
                if g.is_sparse:
                    raise RuntimeError("ScaledAdam does not support sparse gradients")
                stacked.append((p, g, self.state[plist[0]], plist, nlist))
            if not stacked:
                continue
            first_state = stacked[0][2]
            clip = 1.0 if len(first_state) == 0 else self._clipping_scale(group, stacked)
            for p, g, state, plist, _ in stacked:
                if len(state) == 0:
                    self._init_state(group, p, state)
                self._step_one(group, p, g, state, clip)
                for i, q in enumerate(plist):
                    q.copy_(p[i])
        return loss

    def _init_state(self, group: Dict[str, Any], p: Tensor, state: Dict[str, Any]) -> None:
        state["step"] = 0
        # "delta" is the momentum of the total parameter change (all update kinds combined)
        state["delta"] = torch.zeros_like(p)
        if p[0].numel() > 1:
            dims = list(range(1, p.ndim))
            state["param_rms"] = (p ** 2).mean(dim=dims, keepdim=True).sqrt()
            state["scale_exp_avg_sq"] = torch.zeros_like(state["param_rms"])
            state["scale_grads"] = torch.zeros(group["size_update_period"], *state["param_rms"].shape,
                                               dtype=p.dtype, device=p.device)
        state["exp_avg_sq"] = torch.zeros_like(p)

    def _clipping_scale(self, group: Dict[str, Any],
                        stacked: List[Tuple[Tensor, Tensor, Dict[str, Any], List[Tensor], List[str]]]) -> float:
        clipping_scale = group["clipping_scale"]
        first_state = stacked[0][2]
        step = first_state["step"]
        if clipping_scale is None or step == 0:
            return 1.0
        period = group["clipping_update_period"]
        tot_sumsq = torch.zeros((), device=stacked[0][0].device)
        for p, g, state, _, _ in stacked:
            if p[0].numel() == 1:
                tot_sumsq += (g ** 2).sum() * group["scalar_lr_scale"] ** 2
            else:
                tot_sumsq += ((g * state["param_rms"]) ** 2).sum()
        tot_norm = tot_sumsq.sqrt()
        if "model_norms" not in first_state:
            first_state["model_norms"] = torch.zeros(period, device=tot_norm.device)
        first_state["model_norms"][step % period] = tot_norm
        early = [i for i in (10, 20, 40) if i < period]
        if step % period == 0 or step in early:
            norms = first_state["model_norms"].sort()[0].cpu()
            if step in early:
                norms = norms[-step:]
            quartiles = [norms[min(len(norms) - 1, (len(norms) // 4) * k)].item() for k in range(5)]
            median = quartiles[2]
            if median != median:
                raise RuntimeError("ScaledAdam: too many non-finite gradient norms")
            threshold = clipping_scale * median * (2.0 if step in early else 1.0)
            first_state["model_norm_threshold"] = threshold
            pct = first_state.get("num_clipped", 0) * 100.0 / len(norms)
            first_state["num_clipped"] = 0
            logging.info(f"Clipping_scale={clipping_scale}, grad-norm quartiles "
                         f"{' '.join('%.3e' % q for q in quartiles)}, threshold={threshold:.3e}, "
                         f"percent-clipped={pct:.1f}")
        threshold = first_state.get("model_norm_threshold")
        if threshold is None:
            return 1.0
        ans = min(1.0, (threshold / (tot_norm + 1.0e-20)).item())
        if ans != ans:
            ans = 0.0
        if ans < 1.0:
            first_state["num_clipped"] = first_state.get("num_clipped", 0) + 1
        if ans < 0.1:
            logging.warning(f"Scaling gradients by {ans}, model_norm_threshold={threshold}; "
                            f"largest contributor: {self._dominant(stacked, group['scalar_lr_scale'])}")
        if ans == 0.0:
            for _, g, _, _, _ in stacked:
                g.zero_()  # e.g. inf / nan gradients
        return ans

    @staticmethod
    def _dominant(stacked: List[Tuple[Tensor, Tensor, Dict[str, Any], List[Tensor], List[str]]],
                  scalar_lr_scale: float) -> str:
        best, best_val = "?", -1.0
        for p, g, state, _, names in stacked:
            rms = state["param_rms"] if p[0].numel() > 1 else scalar_lr_scale
            per = ((g * rms) ** 2).flatten(1).sum(1) if g.ndim > 1 else (g * rms) ** 2
            for n, v in zip(names, per.tolist()):
                if v > best_val:
                    best, best_val = n, v
        return f"{best} (sumsq {best_val:.3e})"

    def _step_one(self, group: Dict[str, Any], p: Tensor, grad: Tensor, state: Dict[str, Any],
                  clip: float) -> None:
        if clip != 1.0:
            grad = grad * clip
        beta1, beta2 = group["betas"]
        step = state["step"]
        delta = state["delta"]
        delta.mul_(beta1)
        if p[0].numel() > 1:
            period = group["size_update_period"]
            dims = list(range(1, p.ndim))
            state["scale_grads"][step % period] = (p * grad).sum(dim=dims, keepdim=True)
            if step % period == period - 1:
                state["param_rms"].copy_((p ** 2).mean(dim=dims, keepdim=True).sqrt())
                if step > 0:
                    self._size_update(group, p, state)
            self._step_tensor(group, p, grad, state)
        else:
            self._step_scalar(group, p, grad, state)
        state["step"] = step + 1

    @staticmethod
    def _size_update(group: Dict[str, Any], p: Tensor, state: Dict[str, Any]) -> None:
        """Adam-like step on the log of each tensor's overall scale."""
        beta1, beta2 = group["betas"]
        scale_grads = state["scale_grads"]
        period = scale_grads.shape[0]
        beta2_corr = beta2 ** period
        exp_avg_sq = state["scale_exp_avg_sq"]
        exp_avg_sq.mul_(beta2_corr).add_((scale_grads ** 2).mean(dim=0), alpha=1 - beta2_corr)
        size_step = (state["step"] + 1) // period
        bias_correction2 = 1 - beta2_corr ** size_step
        denom = exp_avg_sq.sqrt() + group["eps"]
        size_lr = group["lr"] * group["scalar_lr_scale"]
        scale_step = -size_lr * (bias_correction2 ** 0.5) * scale_grads.sum(dim=0) / denom
        param_rms = state["param_rms"]
        scale_step.masked_fill_(param_rms < group["param_min_rms"], 0.0)  # do not shrink further
        scale_step = torch.minimum(scale_step, (group["param_max_rms"] - param_rms) / param_rms)
        state["delta"].add_(p * scale_step, alpha=1 - beta1)

    @staticmethod
    def _step_tensor(group: Dict[str, Any], p: Tensor, grad: Tensor, state: Dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2 = 1 - beta2 ** (state["step"] + 1)
        denom = exp_avg_sq if bias_correction2 >= 0.99 else exp_avg_sq * (1.0 / bias_correction2)
        denom = denom.sqrt().add_(group["eps"])
        alpha = -group["lr"] * (1 - beta1) * state["param_rms"].clamp(min=group["param_min_rms"])
        delta = state["delta"]
        delta.add_(grad / denom * alpha)
        p.add_(delta)

    @staticmethod
    def _step_scalar(group: Dict[str, Any], p: Tensor, grad: Tensor, state: Dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2 = 1 - beta2 ** (state["step"] + 1)
        denom = (exp_avg_sq / bias_correction2).sqrt() + group["eps"]
        lr = group["lr"] * group["scalar_lr_scale"]
        delta = state["delta"]
        delta.add_(grad / denom, alpha=-lr * (1 - beta1))
        p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])
        p.add_(delta)


class LRScheduler:
    """Base class for schedulers whose lr depends on both batch and epoch counts."""

    def __init__(self, optimizer: Optimizer, verbose: bool = False) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        self.verbose = verbose
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.base_lrs = [group["base_lr"] for group in optimizer.param_groups]
        self.epoch: float = 0
        self.batch: float = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        missing = {"base_lrs", "epoch", "batch"} - set(state_dict)
        if missing:
            raise ValueError(f"scheduler state_dict lacks {sorted(missing)}")
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"scheduler state has {len(state_dict['base_lrs'])} groups, optimizer "
                             f"has {len(self.optimizer.param_groups)}")
        self.base_lrs = list(state_dict["base_lrs"])
        self.epoch = state_dict["epoch"]
        self.batch = state_dict["batch"]
        self._set_lrs()

    def get_last_lr(self) -> List[float]:
        return self._last_lr

    def get_lr(self) -> List[float]:
        raise NotImplementedError

    def step_batch(self, batch: Optional[float] = None) -> None:
        """Advance (or set, as a count from the start of training) the batch index."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def step_epoch(self, epoch: Optional[float] = None) -> None:
        """Set the epoch at the start of an epoch (or advance it by one at its end)."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._set_lrs()

    def _set_lrs(self) -> None:
        values = self.get_lr()
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, values)):
            group["lr"] = lr
            if self.verbose:
                logging.info(f"Epoch={self.epoch}, batch={self.batch}: lr of group {i} = {lr:.4e}")
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class Eden(LRScheduler):
    """Eden schedule (see module docstring).  Suggested: base lr 0.045 with ScaledAdam,
    lr_batches 7500, lr_epochs 3.5, warmup_batches 500."""

    def __init__(self, optimizer: Optimizer, lr_batches: Union[int, float], lr_epochs: Union[int, float],
                 warmup_batches: Union[int, float] = 500.0, warmup_start: float = 0.5,
                 verbose: bool = False) -> None:
        super().__init__(optimizer, verbose)
        if lr_batches <= 0 or lr_epochs <= 0:
            raise ValueError(f"lr_batches and lr_epochs must be > 0, got {lr_batches}, {lr_epochs}")
        if not 0.0 <= warmup_start <= 1.0:
            raise ValueError(f"warmup_start must be in [0, 1], got {warmup_start}")
        self.lr_batches = lr_batches
        self.lr_epochs = lr_epochs
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start
        self._set_lrs()

    def get_lr(self) -> List[float]:
        factor = (((self.batch ** 2 + self.lr_batches ** 2) / self.lr_batches ** 2) ** -0.25
                  * ((self.epoch ** 2 + self.lr_epochs ** 2) / self.lr_epochs ** 2) ** -0.25)
        if self.batch >= self.warmup_batches:
            warmup = 1.0
        else:
            warmup = self.warmup_start + (1.0 - self.warmup_start) * (self.batch / self.warmup_batches)
        return [x * factor * warmup for x in self.base_lrs]


def get_parameter_groups_with_lrs(model: nn.Module, lr: float, include_names: bool = False,
                                  freeze_modules: Sequence[str] = (),
                                  separate_modules: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Parameter groups whose lr is ``lr`` times the product of the ``lr_scale`` attributes of all
    modules on the parameter's name path (e.g. ``model.encoder.lr_scale = 0.1``).

    Top-level submodules named in ``freeze_modules`` are left out.  Those named in ``separate_modules``
    get groups of their own (never shared with other modules, even at an equal lr), marked with
    ``"module": name`` so that they can be frozen for a while (the ``frozen`` group flag).  Returns
    ``[{"params" | "named_params": [...], "lr": lr_i}, ...]`` (names when ``include_names``).
    """
    scales: Dict[str, float] = defaultdict(lambda: 1.0)
    for name, m in model.named_modules():
        if hasattr(m, "lr_scale"):
            scales[name] = float(m.lr_scale)
    # (lr, module kept separate or None) -> parameters; insertion order keeps the groups deterministic
    lr_to_params: Dict[Tuple[float, Optional[str]], List[Any]] = defaultdict(list)
    for name, param in model.named_parameters():
        parts = name.split(".")
        top = parts[1] if parts[0] == "module" and len(parts) > 1 else parts[0]  # DDP wrapper
        if top in freeze_modules:
            continue
        cur = lr * scales[""]
        prefix = ""
        for part in parts[:-1]:
            prefix = part if prefix == "" else f"{prefix}.{part}"
            cur *= scales[prefix]
        module = top if top in separate_modules else None
        lr_to_params[(cur, module)].append((name, param) if include_names else param)
    key = "named_params" if include_names else "params"
    groups = []
    for (group_lr, module), params in lr_to_params.items():
        groups.append({key: params, "lr": group_lr} if module is None else
                      {key: params, "lr": group_lr, "module": module})
    return groups
