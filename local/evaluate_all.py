#!/usr/bin/env python3
"""run.sh stage 9: evaluate every trained system under <exp-dir> on every task it supports.

Systems by folder: teachers/{asr,at,sv} (teachers, each on its own task), single_{asr,at,sv} (single-task
students), multitask_scratch (multi-task from scratch), mt2kd (MT2KD), ablation_* (ablations). Each gets a
results.json (see mt2kd_lib/report/tables.py); a system whose results.json is newer than its checkpoints is
not evaluated again.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mt2kd_lib.evaluation.evaluate import evaluate_student, load_averaged_model  # noqa: E402
from mt2kd_lib.training.checkpoint import find_checkpoints  # noqa: E402
from mt2kd_lib.utils.logging import setup_logger  # noqa: E402


def systems(exp_dir: Path):
    """(name, group, folder, tasks) of every system found."""
    for t in ("asr", "at", "sv"):
        yield f"teacher_{t}", "teacher", exp_dir / "teachers" / t, [t]
    for t in ("asr", "at", "sv"):
        yield f"single_{t}", "single-task", exp_dir / f"single_{t}", [t]
    yield "multitask_scratch", "multi-task", exp_dir / "multitask_scratch", ["asr", "at", "sv"]
    yield "mt2kd", "mt2kd", exp_dir / "mt2kd", ["asr", "at", "sv"]
    for d in sorted(exp_dir.glob("ablation_*")):
        yield d.name, "ablation", d, ["asr", "at", "sv"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--recipe-data", type=Path, required=True)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--decoding-method", default="greedy_search", choices=["greedy_search", "modified_beam_search"])
    args = p.parse_args()
    setup_logger(args.exp_dir / "log-evaluate.txt")
    lang = sorted(args.recipe_data.glob("lang_bpe_*"))
    for name, group, folder, tasks in systems(args.exp_dir):
        ckpts = find_checkpoints(folder, "epoch") if folder.is_dir() else []
        if not ckpts:
            logging.info(f"{name}: no checkpoints in {folder}, not evaluated")
            continue
        out = folder / "results.json"
        if out.is_file() and out.stat().st_mtime > ckpts[0].stat().st_mtime:
            logging.info(f"{name}: {out} is up to date")
            continue
        model = load_averaged_model(folder, avg=args.avg)
        res = evaluate_student(model, args.recipe_data, folder / args.decoding_method, lang[0] if lang else None,
                               tasks, args.decoding_method)
        res.update(system=name, group=group, epoch=int(ckpts[0].stem.split("-")[1]), avg=args.avg)
        out.write_text(json.dumps(res, indent=2) + "\n")
        logging.info(f"{name}: {json.dumps(res)}")
    # An external SV teacher chosen in stage 4 (e.g. resemblyzer) is reported with the EER measured there.
    sel = args.exp_dir / "teachers" / "teachers_selection.json"
    if sel.is_file():
        s = json.loads(sel.read_text())
        if s["sv_teacher"] != "checkpoint":
            folder = args.exp_dir / "teachers" / f"sv_{s['sv_teacher']}"
            chosen = dict(s["sv_candidates"][s["sv_teacher"]])
            res = {"system": f"teacher_sv_{s['sv_teacher']}", "group": "teacher",
                   "params": chosen.pop("params", 0), "sv": chosen}
            (folder / "results.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
