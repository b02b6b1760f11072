#!/usr/bin/env python3
"""run.sh stage 9: evaluate every trained system under <exp-dir> on every task it supports.

Systems by folder: teachers/{asr,at,sv} (teachers, each on its own task), single_{asr,at,sv} (single-task
students), multitask_scratch (multi-task from scratch), mt2kd (MT2KD), ablation_* (ablations). Each gets a
results.json (see mt2kd_lib/report/tables.py); a system whose results.json is newer than its checkpoints is
not evaluated again.

With --choose-weights-on-dev true, each student (not the teachers: their weights are those stage 4 chose for the
dump) is evaluated on dev with its mean weights (model_avg) and with its last weights, and the one with the lower
dev error is evaluated on test (mt2kd_lib/evaluation/weights_choice.py); results.json records the choice.
"""

import argparse
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List

import torch

from mt2kd_lib.decoding.methods import METHODS, parse_methods
from mt2kd_lib.evaluation.evaluate import evaluate_student, load_averaged_model
from mt2kd_lib.evaluation.weights_choice import WEIGHTS, choose_on_dev, last_epoch_has_model_avg
from mt2kd_lib.training.checkpoint import find_checkpoints
from mt2kd_lib.training.launch import add_averaged_model_arg, str2bool
from mt2kd_lib.utils.logging import setup_logger


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


def write_json(path: Path, obj: Dict) -> None:
    """Temporary file + rename: a kill mid-write never leaves a partial results.json that looks up to date."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def evaluate_one(name: str, group: str, folder: Path, tasks: List[str], args: argparse.Namespace,
                 epoch: int) -> Dict:
    """Evaluate one system and write its results.json (runs in a worker process when --num-jobs > 1)."""
    lang_dir = next(iter(sorted(args.recipe_data.glob("lang_bpe_*"))), None)
    methods = parse_methods(args.decoding_methods or args.decoding_method)
    use_avg, choice = args.use_averaged_model, None
    if args.choose_weights_on_dev and group != "teacher" and last_epoch_has_model_avg(folder):
        def evaluate_dev(flag: bool) -> dict:  # the first decoding method only: it is the one reported as WER
            model = load_averaged_model(folder, avg=args.avg, use_averaged_model=flag)
            return evaluate_student(model, args.recipe_data, folder / "weights_dev" / WEIGHTS[flag], lang_dir,
                                    tasks, methods[0], dev=True, test=False)
        use_avg, choice = choose_on_dev(evaluate_dev, default=args.use_averaged_model)
        logging.info(f"{name}: {choice['chosen']} weights ({choice})")
    model = load_averaged_model(folder, avg=args.avg, use_averaged_model=use_avg)
    res = evaluate_student(model, args.recipe_data, folder / methods[0], lang_dir,
                           tasks, methods[0], asr_methods=methods, dev=args.eval_dev)
    res.update(system=name, group=group, epoch=epoch, avg=args.avg, use_averaged_model=use_avg)
    if choice is not None:
        res["weights"] = choice
    write_json(folder / "results.json", res)
    logging.info(f"{name}: {json.dumps(res)}")
    return res


def init_process(exp_dir: Path, num_threads: int) -> None:
    """Per process (the main one, or each worker): threads and the shared log file."""
    torch.set_num_threads(num_threads)
    setup_logger(exp_dir / "log-evaluate.txt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--recipe-data", type=Path, required=True)
    p.add_argument("--avg", type=int, default=1)
    add_averaged_model_arg(p)
    p.add_argument("--decoding-method", default="greedy_search", choices=["greedy_search", "modified_beam_search"])
    p.add_argument("--decoding-methods", default=None,
                   help=f"comma-separated methods decoded in one pass, the first one gives 'wer' (default: "
                        f"--decoding-method); any of {', '.join(METHODS)}, or all")
    p.add_argument("--num-jobs", type=int, default=1, help="systems evaluated at once, one process each")
    p.add_argument("--num-threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--eval-dev", type=str2bool, default=True,
                   help="also the dev sets (asr.dev, sv.dev_trials): reported apart, for choosing settings")
    p.add_argument("--choose-weights-on-dev", type=str2bool, default=False,
                   help="each student: mean (model_avg) or last weights, whichever has the lower dev error (ASR dev "
                        "WER, else SV dev EER); --use-averaged-model on a tie, for the teachers, and without dev sets")
    args = p.parse_args()
    init_process(args.exp_dir, args.num_threads)
    todo = []
    for name, group, folder, tasks in systems(args.exp_dir):
        ckpts = find_checkpoints(folder, "epoch") if folder.is_dir() else []
        if not ckpts:
            logging.info(f"{name}: no checkpoints in {folder}, not evaluated")
            continue
        out = folder / "results.json"
        if out.is_file() and out.stat().st_mtime > ckpts[0].stat().st_mtime:
            logging.info(f"{name}: {out} is up to date")
            continue
        todo.append((name, group, folder, tasks, args, int(ckpts[0].stem.split("-")[1])))
    todo.sort(key=lambda item: (-len(item[3]), "asr" not in item[3]))  # the slowest (ASR decoding) first
    if args.num_jobs > 1 and len(todo) > 1:
        # Systems are independent: one process each (spawned, so no torch thread pool is inherited).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.num_jobs, mp_context=ctx, initializer=init_process,
                                 initargs=(args.exp_dir, args.num_threads)) as pool:
            for fut in [pool.submit(evaluate_one, *item) for item in todo]:
                fut.result()  # re-raises a worker's error here
    else:
        for item in todo:
            evaluate_one(*item)
    # An external SV teacher chosen in stage 4 (e.g. resemblyzer) is reported with the EER measured there.
    sel = args.exp_dir / "teachers" / "teachers_selection.json"
    if sel.is_file():
        s = json.loads(sel.read_text())
        if s["sv_teacher"] != "checkpoint":
            folder = args.exp_dir / "teachers" / f"sv_{s['sv_teacher']}"
            chosen = dict(s["sv_candidates"][s["sv_teacher"]])
            res = {"system": f"teacher_sv_{s['sv_teacher']}", "group": "teacher",
                   "params": chosen.pop("params", 0), "sv": chosen}
            write_json(folder / "results.json", res)


if __name__ == "__main__":
    main()
