"""RESULTS.md in the paper's layout: rows = systems (teachers, single-task, multi-task from scratch, MT2KD,
ablations), columns = params, WER per ASR test set, mAP, EER and minDCF per trial list; then the relative
differences of MT2KD against the best single-task model of each task.

Each system's evaluation writes ``results.json``:
``{"system", "group", "params", "asr": {"wer": {test: %}, "wer_dev": {dev: %}}, "at": {"mAP": x},
"sv": {"eer": {trials: %}, "min_dcf": {trials: x}, "eer_dev": {dev trials: %}, "min_dcf_dev": {...}},
"train_time_s"}``; a task a system does not support is absent. Dev columns (what settings are chosen on) come
after the test ones and are left out of the comparison with the baselines. The last column says which weights were
evaluated (``use_averaged_model``: the mean weights of model_avg, or the last ones; "on dev" when stage 9 chose
them per system on dev, ``weights`` in results.json).
"""

import json
from pathlib import Path
from typing import Dict, List, Optional

GROUP_ORDER = ["teacher", "single-task", "multi-task", "mt2kd", "ablation"]


def load_results(paths: List[Path]) -> List[dict]:
    rows = [json.loads(Path(p).read_text()) for p in paths]
    return sorted(rows, key=lambda r: (GROUP_ORDER.index(r.get("group", "ablation")), r["system"]))


def _columns(rows: List[dict]):
    tests = sorted({t for r in rows for t in r.get("asr", {}).get("wer", {})})
    trials = sorted({t for r in rows for t in r.get("sv", {}).get("eer", {})})
    return tests, trials


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _dev_columns(rows: List[dict]):
    devs = sorted({t for r in rows for t in r.get("asr", {}).get("wer_dev", {})})
    trials = sorted({t for r in rows for t in r.get("sv", {}).get("eer_dev", {})})
    return devs, trials


def _weights(r: dict) -> str:
    if "use_averaged_model" not in r:
        return "-"
    return ("mean" if r["use_averaged_model"] else "last") + (" (on dev)" if "weights" in r else "")


def results_table(rows: List[dict]) -> str:
    tests, trials = _columns(rows)
    devs, dev_trials = _dev_columns(rows)
    with_weights = any("use_averaged_model" in r for r in rows)
    head = ["system", "group", "params (M)"] + [f"WER {t} (%)" for t in tests] + ["mAP"]
    head += [f"EER {t} (%)" for t in trials] + [f"minDCF {t}" for t in trials]
    head += [f"dev: WER {t} (%)" for t in devs] + [f"dev: EER {t} (%)" for t in dev_trials]
    head += ["weights"] if with_weights else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        asr, sv = r.get("asr", {}), r.get("sv", {})
        cells = [r["system"], r.get("group", ""), _fmt(r.get("params", 0) / 1e6, 2)]
        cells += [_fmt(asr.get("wer", {}).get(t)) for t in tests]
        cells += [_fmt(r.get("at", {}).get("mAP"), 3)]
        cells += [_fmt(sv.get("eer", {}).get(t)) for t in trials]
        cells += [_fmt(sv.get("min_dcf", {}).get(t), 3) for t in trials]
        cells += [_fmt(asr.get("wer_dev", {}).get(t)) for t in devs]
        cells += [_fmt(sv.get("eer_dev", {}).get(t)) for t in dev_trials]
        cells += [_weights(r)] if with_weights else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best(rows: List[dict], group: str, get) -> Optional[dict]:
    cands = [r for r in rows if r.get("group") == group and get(r) is not None]
    return min(cands, key=get) if cands else None


def comparison(rows: List[dict], system: str = "mt2kd") -> Dict[str, dict]:
    """MT2KD vs the best single-task model and vs multi-task from scratch, per metric (the paper's claims)."""
    target = next((r for r in rows if r["system"] == system), None)
    if target is None:
        return {}
    tests, trials = _columns(rows)
    out: Dict[str, dict] = {}
    metrics = [(f"WER {t}", lambda r, t=t: r.get("asr", {}).get("wer", {}).get(t), "rel", True) for t in tests]
    metrics += [("mAP", lambda r: r.get("at", {}).get("mAP"), "abs", False)]
    metrics += [(f"EER {t}", lambda r, t=t: r.get("sv", {}).get("eer", {}).get(t), "abs", True) for t in trials]
    for name, get, kind, lower_better in metrics:
        mine = get(target)
        if mine is None:
            continue
        key = get if lower_better else (lambda r, g=get: -g(r) if g(r) is not None else None)
        entry = {"mt2kd": mine}
        for group in ("single-task", "multi-task", "teacher"):
            ref = _best(rows, group, key)
            if ref is None:
                continue
            base = get(ref)
            diff = (mine - base) / base * 100 if kind == "rel" and base else mine - base
            better = mine < base if lower_better else mine > base
            entry[group] = {"system": ref["system"], "value": base, "diff": diff, "kind": kind, "better": better}
        out[name] = entry
    return out


def comparison_table(comp: Dict[str, dict]) -> str:
    lines = ["| metric | MT2KD | best single-task | diff | multi-task from scratch | diff |", "|---|---|---|---|---|---|"]
    for name, e in comp.items():
        cells = [name, _fmt(e["mt2kd"], 3)]
        for group in ("single-task", "multi-task"):
            g = e.get(group)
            if g is None:
                cells += ["-", "-"]
                continue
            unit = "% rel" if g["kind"] == "rel" else " abs"
            cells += [f"{_fmt(g['value'], 3)} ({g['system']})", f"{g['diff']:+.2f}{unit}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
