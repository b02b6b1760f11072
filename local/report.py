#!/usr/bin/env python3
"""run.sh stage 10: <recipe>/RESULTS.md (+ results.json, training curves) from every system's results.json."""

import argparse
import json
import logging
import subprocess
from datetime import datetime
from pathlib import Path

from mt2kd_lib.report.curves import plot_curves, read_scalar
from mt2kd_lib.report.decoding import decoding_table, parity_table
from mt2kd_lib.report.stage_times import stage_times_table
from mt2kd_lib.report.tables import comparison, comparison_table, load_results, results_table
from mt2kd_lib.utils.logging import setup_logger


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def decoding_section(rows, exp_dir: Path) -> list:
    """'Decoding methods' (when stage 9 decoded with several methods) and the HLG deployment parity (when
    tools/compare_sherpa_hlg.py wrote <exp-dir>/mt2kd/hlg_parity.json)."""
    table = decoding_table(rows)
    parity = exp_dir / "mt2kd" / "hlg_parity.json"
    if not table and not parity.is_file():
        return []
    methods = list(dict.fromkeys(m for r in rows for m in r.get("asr", {}).get("methods", {})))
    text = ["## Decoding methods", "",
            f"<!-- from the systems' results.json asr.methods (run.sh stage 9 --decoding-methods {','.join(methods)}),"
            f" report by local/report.py at commit {git_commit()} -->",
            "WER per decoding method of MT2KD and of the best baseline for that method (lowest WER among the single-task "
            "and multi-task-from-scratch students); RTF = (encoder + search) seconds / audio seconds, one thread, "
            "all methods timed in the same run on the same encoder output.", ""]
    if table:
        text += [table, ""]
    if parity.is_file():
        res = json.loads(parity.read_text())
        causes = sorted({d["cause"] for d in res["differences"]})
        text += ["### Deployment parity: sherpa-onnx CTC + HLG.fst vs k2 HLG 1-best", "",
                 f"<!-- tools/compare_sherpa_hlg.py --exp-dir {res.get('exp_dir')} --lang-dir {res.get('lang_dir')} "
                 f"--cuts {res.get('cuts')} -->",
                 f"The exported ctc.onnx with HLG.fst in sherpa-onnx and our k2 decode of the same audio "
                 f"(`{parity}`): {res['num_identical']} of {res['num_utts']} transcripts identical.", "",
                 parity_table(res), ""]
        text += [f"Differences: {', '.join(causes)}.", ""] if causes else []
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=None, help="for the data stages' wall times")
    p.add_argument("--recipe", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    setup_logger()
    paths = sorted(args.exp_dir.glob("*/results.json")) + sorted(args.exp_dir.glob("teachers/*/results.json"))
    if not paths:
        raise SystemExit(f"{args.exp_dir}: no results.json found; run the evaluate stage first")
    rows = load_results(paths)
    comp = comparison(rows)
    curves = {}
    for d in sorted(args.exp_dir.glob("**/tensorboard")):
        curves[str(d.parent.relative_to(args.exp_dir))] = read_scalar(d)
    plot = plot_curves(curves, args.exp_dir / "training_curves.png", f"training curves ({args.recipe.name})")
    (args.exp_dir / "results.json").write_text(json.dumps({"systems": rows, "comparison": comp}, indent=2) + "\n")
    notes = args.recipe / "RESULTS_NOTES.md"
    text = [
        f"# Results: {args.recipe.name}",
        "",
        f"Written by `run.sh` stage 10 (local/report.py) on {datetime.now():%Y-%m-%d %H:%M} from `{args.exp_dir}`.",
        "Every number below comes from the evaluation stage of that run (`*/results.json`).",
        "",
        "## All systems",
        "",
        results_table(rows),
        "",
        "## MT2KD against the baselines",
        "",
        "WER: relative difference (negative = MT2KD better); mAP, EER: absolute difference.",
        "",
        comparison_table(comp) if comp else "(no MT2KD system evaluated)",
        "",
        f"Training curves: `{plot}`.",
        "",
        "## Wall time per stage",
        "",
        "Stage 8 (baselines) runs at nice 19 beside stages 4-7 (teachers to fine-tuning) when `train_jobs` >= 2.",
        "",
        stage_times_table([(args.data_dir or args.exp_dir) / ".done", args.exp_dir / ".done"]),
        "",
    ]
    at = text.index(f"Training curves: `{plot}`.")
    text[at:at] = decoding_section(rows, args.exp_dir)
    if notes.is_file():
        text += [notes.read_text()]
    args.out.write_text("\n".join(text))
    logging.info(f"wrote {args.out}")
    print(results_table(rows))


if __name__ == "__main__":
    main()
