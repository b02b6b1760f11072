"""RESULTS.md's decoding section: WER and real-time factor of MT2KD and of the best ASR baseline for every decoding
method (from each system's ``results.json`` ``asr.methods``, written by the evaluate stage with several
``--decoding-methods``), and the deployment parity of HLG decoding (``hlg_parity.json`` of
tools/compare_sherpa_hlg.py)."""

from typing import Dict, List, Optional

BASELINE_GROUPS = ("single-task", "multi-task")


def _methods(row: dict) -> Dict[str, dict]:
    return row.get("asr", {}).get("methods", {})


def _mean_wer(entry: dict) -> Optional[float]:
    wers = list(entry.get("wer", {}).values())
    return sum(wers) / len(wers) if wers else None


def _cells(entry: Optional[dict], tests: List[str]) -> List[str]:
    """WER per test set and RTF of one method of one system; the reason where it was not run."""
    if entry is None:
        return ["-"] * len(tests) + ["-"]
    if "skipped" in entry:
        return [f"not run: {entry['skipped']}"] + [""] * len(tests)
    return [f"{entry['wer'][t]:.2f}" if t in entry.get("wer", {}) else "-" for t in tests] + [f"{entry['rtf']:.3f}"]


def decoding_table(rows: List[dict], system: str = "mt2kd") -> str:
    """One line per decoding method: ``system``'s WER per test set and RTF, then those of the baseline (a
    single-task or multi-task-from-scratch system with an ASR head) with the lowest mean WER for that method.
    Empty string when no system recorded several methods."""
    method_rows = [r for r in rows if _methods(r)]
    if not method_rows:
        return ""
    methods: List[str] = []
    for r in method_rows:
        methods += [m for m in _methods(r) if m not in methods]
    tests = sorted({t for r in method_rows for e in _methods(r).values() for t in e.get("wer", {})})
    target = next((r for r in method_rows if r["system"] == system), None)
    baselines = [r for r in method_rows if r.get("group") in BASELINE_GROUPS]
    head = ["method"] + [f"{system} WER {t} (%)" for t in tests] + [f"{system} RTF", "best baseline"]
    head += [f"baseline WER {t} (%)" for t in tests] + ["baseline RTF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m] + _cells(_methods(target).get(m) if target else None, tests)
        ranked = [(_mean_wer(_methods(r)[m]), r["system"], r) for r in baselines if m in _methods(r)]
        scored = sorted((w, name, r) for w, name, r in ranked if w is not None)
        if scored:
            best = scored[0][2]
        else:  # every baseline skipped it: show why
            best = ranked[0][2] if ranked else None
        cells += [best["system"] if best else "-"] + _cells(_methods(best).get(m) if best else None, tests)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parity_table(res: dict) -> str:
    """tools/compare_sherpa_hlg.py's result: WER, RTF and agreement of k2 and sherpa-onnx HLG decoding."""
    n, same = res["num_utts"], res["num_identical"]
    lines = ["| decoder | WER (%) | RTF | identical transcripts |", "|---|---|---|---|"]
    for name, label in (("k2_hlg_1best", "k2 HLG 1-best (torch)"), ("sherpa_onnx_hlg", "sherpa-onnx CTC + HLG.fst")):
        lines.append(f"| {label} | {res['wer'][name]:.2f} | {res['rtf'][name]:.3f} | {same}/{n} "
                     f"({100 * res['agreement']:.1f}%) |")
    return "\n".join(lines)
