"""Speaker-verification metrics: trial lists, cosine scoring, EER, minDCF, DET plots, result files.

Convention throughout: a trial is *accepted* (declared same-speaker) when
``score >= threshold``; label 1 = target (same speaker), 0 = non-target.
"""

import json
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch

Trial = Tuple[int, str, str]
ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def read_trials(path: Union[str, Path]) -> List[Trial]:
    """Read a VoxCeleb-style trial list: one ``<label 0|1> <enroll_id> <test_id>`` per line.

    Blank lines are skipped; anything else malformed raises ValueError naming
    the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trial list {path} does not exist")
    trials: List[Trial] = []
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ValueError(
                    f"{path}:{lineno}: expected '<0|1> <enroll_id> <test_id>', "
                    f"got {len(fields)} fields: {line.rstrip()!r}"
                )
            if fields[0] not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: label must be 0 or 1, got {fields[0]!r}")
            trials.append((int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise ValueError(f"trial list {path} has no trials")
    return trials


def cosine_scores(embeddings: Mapping[str, Union[torch.Tensor, np.ndarray]], trials: Sequence[Trial]) -> np.ndarray:
    """Cosine similarity for every trial -> float64 array (len(trials),).

    ``embeddings`` maps utterance id -> 1-D embedding (a (1, D) row is accepted).
    Raises KeyError listing ids that are in the trials but not in ``embeddings``.
    """
    if len(trials) == 0:
        raise ValueError("no trials to score")
    ids = sorted({u for _, e, t in trials for u in (e, t)})
    missing = [u for u in ids if u not in embeddings]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise KeyError(f"{len(missing)} trial ids have no embedding: {shown}")

    rows = []
    for u in ids:
        v = embeddings[u]
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().double()
        else:
            v = torch.as_tensor(np.asarray(v, dtype=np.float64))
        if v.dim() == 2 and v.size(0) == 1:
            v = v[0]
        if v.dim() != 1:
            raise ValueError(f"embedding of {u!r} must be 1-D, got shape {tuple(v.shape)}")
        if rows and v.numel() != rows[0].numel():
            raise ValueError(f"embedding of {u!r} has dim {v.numel()}, others have {rows[0].numel()}")
        norm = float(v.norm())
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"embedding of {u!r} has norm {norm}: cannot take a cosine")
        rows.append(v / norm)
    mat = torch.stack(rows)  # (U, D), unit rows
    index = {u: i for i, u in enumerate(ids)}
    e_idx = torch.tensor([index[e] for _, e, _ in trials])
    t_idx = torch.tensor([index[t] for _, _, t in trials])
    return (mat[e_idx] * mat[t_idx]).sum(dim=1).numpy()


def _check_scores_labels(scores: ArrayLike, labels: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Validate and convert to float64 scores and int labels of equal length, both classes present."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    l_raw = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if s.ndim != 1 or l_raw.ndim != 1 or s.shape != l_raw.shape:
        raise ValueError(f"scores {s.shape} and labels {l_raw.shape} must be 1-D of the same length")
    if not np.isfinite(s).all():
        i = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"scores[{i}]={s[i]} is not finite")
    if not np.isin(l_raw, (0, 1)).all():
        i = int(np.flatnonzero(~np.isin(l_raw, (0, 1)))[0])
        raise ValueError(f"labels[{i}]={l_raw[i]} is not 0 or 1")
    lab = l_raw.astype(np.int64)
    if lab.sum() == 0 or lab.sum() == lab.size:
        raise ValueError(f"need both target and non-target trials, got {int(lab.sum())} targets of {lab.size}")
    return s, lab


def det_points(scores: ArrayLike, labels: ArrayLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating points at every distinct threshold: ``(thresholds, p_fa, p_miss)``.

    ``thresholds`` is decreasing and starts with +inf (reject everything:
    p_fa=0, p_miss=1); the last one is the lowest score (accept everything:
    p_fa=1, p_miss=0). Tied scores share one point.
    """
    s, lab = _check_scores_labels(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, lab = s[order], lab[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # s is decreasing here
    tp = np.cumsum(lab)[last_of_group]
    fp = last_of_group + 1 - tp
    n_tgt, n_non = lab.sum(), lab.size - lab.sum()
    p_fa = np.r_[0.0, fp / n_non]
    p_miss = np.r_[1.0, 1.0 - tp / n_tgt]
    thresholds = np.r_[np.inf, s[last_of_group]]
    return thresholds, p_fa, p_miss


def compute_eer(scores: ArrayLike, labels: ArrayLike) -> Tuple[float, float]:
    """Equal error rate and its threshold.

    Walks the ROC and linearly interpolates between the last operating point
    with p_miss > p_fa and the first with p_miss <= p_fa, so the EER is where
    the piecewise-linear DET curve meets p_miss = p_fa exactly.
    """
    thr, p_fa, p_miss = det_points(scores, labels)
    d = p_miss - p_fa  # starts at +1, ends at -1, non-increasing
    i = int(np.flatnonzero(d <= 0)[0])
    if d[i] == 0:
        return float(p_fa[i]), float(thr[i])
    alpha = d[i - 1] / (d[i - 1] - d[i])
    eer = p_fa[i - 1] + alpha * (p_fa[i] - p_fa[i - 1])
    # The point before the crossing may be the +inf "reject all" one; fall back to the real score.
    threshold = thr[i] if np.isinf(thr[i - 1]) else thr[i - 1] + alpha * (thr[i] - thr[i - 1])
    return float(eer), float(threshold)


def compute_min_dcf(
    scores: ArrayLike, labels: ArrayLike, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> Tuple[float, float]:
    """Minimum normalised detection cost (NIST SRE) and the threshold reaching it.

    DCF(t) = c_miss * p_target * P_miss(t) + c_fa * (1 - p_target) * P_fa(t),
    normalised by the cost of the best trivial system,
    min(c_miss * p_target, c_fa * (1 - p_target)). The threshold may be +inf
    (reject every trial) when that is optimal.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target={p_target} must be in (0, 1)")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss={c_miss} and c_fa={c_fa} must be > 0")
    thr, p_fa, p_miss = det_points(scores, labels)
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    i = int(np.argmin(dcf))
    c_def = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[i] / c_def), float(thr[i])


_DET_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8]


def plot_det(curves: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: Union[str, Path]) -> Path:
    """Plot DET curves (P_fa vs P_miss on normal-deviate / probit axes) of several systems to ``path``.

    ``curves`` maps a legend name -> (scores, labels). Uses the Agg canvas
    directly so it never touches the caller's pyplot backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.stats import norm

    if not curves:
        raise ValueError("plot_det needs at least one curve")
    fig = Figure(figsize=(5.5, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = 5e-4, 0.9  # probit of 0 and 1 is infinite: clip into the plotted range
    for name, (scores, labels) in curves.items():
        _, p_fa, p_miss = det_points(scores, labels)
        eer, _ = compute_eer(scores, labels)
        ax.plot(
            norm.ppf(np.clip(p_fa, lo, hi)),
            norm.ppf(np.clip(p_miss, lo, hi)),
            label=f"{name} (EER {100 * eer:.2f}%)",
        )
    ticks = norm.ppf(_DET_TICKS)
    labels_txt = [f"{100 * t:g}" for t in _DET_TICKS]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks)
        axis.set_ticklabels(labels_txt)
    ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
    ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
    ax.plot([norm.ppf(lo), norm.ppf(hi)], [norm.ppf(lo), norm.ppf(hi)], ":", color="grey", linewidth=0.8)
    ax.set_xlabel("False acceptance rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title("DET")
    ax.grid(True, linestyle="--", linewidth=0.5)
    ax.legend(loc="upper right", fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_sv_results(
    res_dir: Union[str, Path],
    name: str,
    eer: float,
    min_dcf: float,
    n_trials: int,
    p_target: float = 0.01,
) -> Tuple[Path, Path]:
    """Write ``sv-<name>.txt`` (one human-readable line) and ``sv-<name>.json``; return both paths."""
    res_dir = Path(res_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    txt_path = res_dir / f"sv-{name}.txt"
    txt_path.write_text(
        f"{name}\tEER {100 * eer:.3f}%\tminDCF(p_target={p_target:g}) {min_dcf:.4f}\ttrials {n_trials}\n"
    )
    json_path = res_dir / f"sv-{name}.json"
    summary: Dict[str, Union[str, float, int]] = {
        "name": name,
        "eer": float(eer),
        "eer_percent": 100.0 * float(eer),
        "min_dcf": float(min_dcf),
        "p_target": float(p_target),
        "n_trials": int(n_trials),
    }
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    logging.info(f"SV results for {name}: EER={100 * eer:.3f}% minDCF={min_dcf:.4f} ({n_trials} trials) -> {txt_path}")
    return txt_path, json_path
