#!/usr/bin/env python3
"""Streaming evaluation of a causal student (run.sh --streaming true): WER / mAP / EER per chunk size from
chunk-by-chunk decoding, the real-time factor and latency of chunked decoding, and the same model without chunking
(full context) for comparison. Writes <exp-dir>/streaming_results.json and prints a markdown table.

  python local/evaluate_streaming.py --exp-dir exp/mini/mt2kd --recipe-data data/mini --chunk-sizes 16,32 \
      --left-context-frames 64
"""

import argparse
import json
from pathlib import Path

import torch

from mt2kd_lib.evaluation.evaluate import evaluate_student, load_averaged_model
from mt2kd_lib.evaluation.streaming import evaluate_streaming
from mt2kd_lib.evaluation.weights_choice import resolve_use_averaged_model
from mt2kd_lib.training.launch import add_averaged_model_arg
from mt2kd_lib.training.streaming_args import int_list
from mt2kd_lib.utils.logging import setup_logger


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--recipe-data", type=Path, required=True)
    p.add_argument("--lang-dir", type=Path, default=None, help="default: the one <recipe-data>/lang_bpe_* folder")
    p.add_argument("--epoch", type=int, default=None)
    p.add_argument("--avg", type=int, default=1)
    add_averaged_model_arg(p, allow_dev=True)
    p.add_argument("--chunk-sizes", type=int_list, default=(16, 32), help="50 Hz frames (16 = 320 ms)")
    p.add_argument("--left-context-frames", type=int, default=64, help="50 Hz frames of left context")
    p.add_argument("--full-context", type=str, default="true", choices=["true", "false"],
                   help="also evaluate the model without chunking (its non-streaming numbers)")
    p.add_argument("--latency-utts", type=int, default=20)
    p.add_argument("--num-threads", type=int, default=1)
    return p


def table(rows) -> str:
    lines = ["| mode | chunk | WER % | mAP | EER % | RTF | compute per chunk, ms (mean / p95) | latency ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wer = next(iter(r.get("asr", {}).get("wer", {}).values()), float("nan"))
        eer = next(iter(r.get("sv", {}).get("eer", {}).values()), float("nan"))
        chunk = f"{r['chunk_ms']} ms" if r.get("chunk_size") else "full context"
        comp = f"{r['compute_ms']:.1f} / {r['compute_ms_p95']:.1f}" if "compute_ms" in r else "-"
        lat = f"{r['latency_ms']:.0f}" if "latency_ms" in r else "-"
        rtf = f"{r['rtf']:.3f}" if "rtf" in r else "-"
        lines.append(f"| {r['mode']} | {chunk} | {wer:.2f} | {r.get('at', {}).get('mAP', float('nan')):.4f} | "
                     f"{eer:.2f} | {rtf} | {comp} | {lat} |")
    return "\n".join(lines)


def main() -> None:
    args = get_parser().parse_args()
    setup_logger(args.exp_dir / "log" / "log-evaluate-streaming.txt")
    torch.set_num_threads(args.num_threads)
    model = load_averaged_model(args.exp_dir, args.epoch, args.avg,
                                resolve_use_averaged_model(args.exp_dir, args.use_averaged_model))
    if not model.encoder.config.causal:
        raise ValueError(f"{args.exp_dir}: the model is not causal; train it with --causal true (run.sh --streaming true)")
    lang_dir = args.lang_dir or next(iter(sorted(args.recipe_data.glob("lang_bpe_*"))), None)
    rows = []
    if args.full_context == "true":
        model.encoder.encoder.chunk_size = [-1]  # eval uses the first entry: no chunk mask
        res = evaluate_student(model, args.recipe_data, args.exp_dir / "full_context", lang_dir)
        rows.append({"mode": "causal model, full context (offline)", "chunk_size": None, **res})
    for c in args.chunk_sizes:
        res = evaluate_streaming(model, args.recipe_data, args.exp_dir / f"streaming_chunk_{c}", lang_dir, c,
                                 args.left_context_frames, latency_utts=args.latency_utts)
        rows.append({"mode": "streaming", **res})
    (args.exp_dir / "streaming_results.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = table(rows)
    (args.exp_dir / "streaming_results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
