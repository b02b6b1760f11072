#!/usr/bin/env python3
"""Evaluate one trained system on the tasks it supports (ASR WER with icefall result files, AT mAP, SV EER and
minDCF with a DET plot) and write <exp-dir>/results.json (the layout mt2kd_lib/report/tables.py reads).

  python local/evaluate.py --exp-dir exp/mini/single_asr --recipe-data data/mini --epoch 10 --avg 3 \
      --decoding-method modified_beam_search --beam-size 4
  python local/evaluate.py ... --decoding-methods greedy_search,fast_beam_search,ctc_hlg_1best
"""

import argparse
import json
import logging
from pathlib import Path

import torch

from mt2kd_lib.decoding.methods import METHODS, parse_methods
from mt2kd_lib.evaluation.evaluate import evaluate_student, load_averaged_model
from mt2kd_lib.training.launch import add_averaged_model_arg, str2bool
from mt2kd_lib.utils.logging import setup_logger


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--recipe-data", type=Path, required=True, help="data/<recipe>: manifests/, fbank/, lang_bpe_*/")
    p.add_argument("--lang-dir", type=Path, default=None, help="default: the one <recipe-data>/lang_bpe_* folder")
    p.add_argument("--epoch", type=int, default=None, help="default: the last epoch-N.pt")
    p.add_argument("--avg", type=int, default=1)
    add_averaged_model_arg(p)
    p.add_argument("--task", choices=["asr", "at", "sv", "all"], default="all")
    p.add_argument("--decoding-method", choices=["greedy_search", "modified_beam_search"], default="greedy_search")
    p.add_argument("--decoding-methods", default=None,
                   help=f"comma-separated methods decoded in one pass, the first one gives 'wer' (default: "
                        f"--decoding-method); any of {', '.join(METHODS)}, or all")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--eval-dev", type=str2bool, default=True,
                   help="also the dev sets (asr.dev, sv.dev_trials): reported apart, for choosing settings")
    p.add_argument("--system", default=None, help="name in the results table (default: the exp dir's name)")
    p.add_argument("--group", default="single-task", help="teacher / single-task / multi-task / mt2kd / ablation")
    return p


def main() -> None:
    args = get_parser().parse_args()
    setup_logger(args.exp_dir / "log" / "log-evaluate.txt")
    torch.set_num_threads(args.num_threads)
    model = load_averaged_model(args.exp_dir, args.epoch, args.avg, args.use_averaged_model)
    tasks = model.tasks if args.task == "all" else [args.task]
    missing = [t for t in tasks if t not in model.tasks]
    if missing:
        raise ValueError(f"the model in {args.exp_dir} has no {missing} head (it has {model.tasks})")
    lang_dir = args.lang_dir or next(iter(sorted(args.recipe_data.glob("lang_bpe_*"))), None)
    methods = parse_methods(args.decoding_methods or args.decoding_method)
    res = evaluate_student(model, args.recipe_data, args.exp_dir / methods[0], lang_dir, tasks,
                           methods[0], args.beam_size, asr_methods=methods, dev=args.eval_dev)
    res.update(system=args.system or args.exp_dir.name, group=args.group, avg=args.avg,
               use_averaged_model=args.use_averaged_model)
    (args.exp_dir / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    logging.info(f"results: {json.dumps(res)}")


if __name__ == "__main__":
    main()
