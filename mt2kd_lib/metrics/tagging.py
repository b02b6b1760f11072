"""Audio-tagging metrics: mean average precision over classes, and result files."""

import json
import logging
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from sklearn.metrics import average_precision_score

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Sequence[float]]]


def _to_numpy(a: ArrayLike, name: str) -> np.ndarray:
    """(N, K) float64 numpy copy of a tensor / array / nested list."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, K), got shape {arr.shape}")
    return arr


def mean_average_precision(scores: ArrayLike, targets: ArrayLike) -> Tuple[float, np.ndarray]:
    """Macro mAP of ``scores`` (N, K) against multi-hot ``targets`` (N, K).

    Average precision is computed per class with
    ``sklearn.metrics.average_precision_score``; mAP is the mean over the
    classes with at least one positive. Classes without positives have no
    defined AP: their entry in ``per_class_ap`` is NaN and they are logged
    as skipped. Returns ``(mAP, per_class_ap)`` with ``per_class_ap`` of shape (K,).
    """
    s = _to_numpy(scores, "scores")
    t = _to_numpy(targets, "targets")
    if s.shape != t.shape:
        raise ValueError(f"scores shape {s.shape} != targets shape {t.shape}")
    if s.shape[0] == 0:
        raise ValueError("scores is empty (N=0)")
    if not np.isfinite(s).all():
        n, k = np.argwhere(~np.isfinite(s))[0]
        raise ValueError(f"scores[{n}, {k}]={s[n, k]} is not finite")
    if not np.isin(t, (0.0, 1.0)).all():
        n, k = np.argwhere(~np.isin(t, (0.0, 1.0)))[0]
        raise ValueError(f"targets[{n}, {k}]={t[n, k]} is not 0/1 (mAP needs hard multi-hot labels)")

    per_class = np.full(s.shape[1], np.nan)
    has_pos = t.sum(axis=0) > 0
    if not has_pos.any():
        raise ValueError("no class has a positive target: mAP is undefined")
    for k in np.flatnonzero(has_pos):
        per_class[k] = average_precision_score(t[:, k], s[:, k])
    skipped = np.flatnonzero(~has_pos)
    if skipped.size:
        shown = ", ".join(str(int(k)) for k in skipped[:20]) + (" ..." if skipped.size > 20 else "")
        logging.warning(f"mAP: skipped {skipped.size} of {s.shape[1]} classes with no positive: {shown}")
    return float(np.nanmean(per_class)), per_class


def write_at_results(
    res_dir: Union[str, Path],
    name: str,
    mAP: float,
    per_class_ap: Union[np.ndarray, Sequence[float]],
    class_names: Sequence[str],
) -> Tuple[Path, Path]:
    """Write ``at-<name>.txt`` (table sorted by AP, skipped classes last) and ``at-<name>.json``.

    Returns the (txt, json) paths.
    """
    ap = np.asarray(per_class_ap, dtype=np.float64)
    if ap.ndim != 1 or len(class_names) != ap.shape[0]:
        raise ValueError(f"{len(class_names)} class_names for per_class_ap of shape {ap.shape}")
    res_dir = Path(res_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    n_eval = int(np.isfinite(ap).sum())

    # NaN (skipped) sorts last; otherwise best first.
    order = sorted(range(ap.shape[0]), key=lambda k: (np.isnan(ap[k]), -np.nan_to_num(ap[k])))
    width = max([len("class")] + [len(c) for c in class_names])
    lines = [
        f"mAP {mAP:.4f} over {n_eval} of {ap.shape[0]} classes",
        f"{'idx':>5}  {'class':<{width}}  AP",
    ]
    for k in order:
        val = "skipped (no positive)" if np.isnan(ap[k]) else f"{ap[k]:.4f}"
        lines.append(f"{k:>5}  {class_names[k]:<{width}}  {val}")
    txt_path = res_dir / f"at-{name}.txt"
    txt_path.write_text("\n".join(lines) + "\n")

    summary = {
        "name": name,
        "mAP": float(mAP),
        "num_classes": int(ap.shape[0]),
        "num_evaluated": n_eval,
        # A list (not a dict keyed by name) survives duplicate names; JSON has no NaN, so skipped -> null.
        "per_class_ap": [
            {"index": k, "name": class_names[k], "ap": None if np.isnan(ap[k]) else float(ap[k])}
            for k in range(ap.shape[0])
        ],
    }
    json_path = res_dir / f"at-{name}.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    logging.info(f"AT results for {name}: mAP={mAP:.4f} ({n_eval} classes) -> {txt_path}")
    return txt_path, json_path
