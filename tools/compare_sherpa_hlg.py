#!/usr/bin/env python3
"""Deployment parity of HLG decoding: the student's CTC branch exported to ONNX + the lang stage's HLG.fst decoded
by sherpa-onnx's offline CTC FST decoder, against k2's HLG 1-best, on the same audio. Prints a small table and the
differing utterances (with their cause); writes everything as JSON (see mt2kd_lib/decoding/hlg_parity.py).

  python tools/compare_sherpa_hlg.py --exp-dir exp/mini/mt2kd --lang-dir data/mini/lang_bpe_256 \
      --cuts data/mini/fbank/asr_cuts_test.jsonl.gz

ctc.onnx is taken from --onnx-dir (default <exp-dir>/onnx, run.sh stage 11) and exported there first when it is
missing or older than the checkpoint.
"""

import argparse
import json
import logging
from pathlib import Path

import torch
from lhotse import CutSet

from mt2kd_lib.decoding.hlg_parity import compare_sherpa_hlg
from mt2kd_lib.decoding.methods import DecodingOptions
from mt2kd_lib.evaluation.evaluate import load_averaged_model
from mt2kd_lib.export.onnx_ctc import export_ctc
from mt2kd_lib.report.decoding import parity_table
from mt2kd_lib.training.checkpoint import find_checkpoints
from mt2kd_lib.utils.logging import setup_logger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True, help="a system dir holding epoch-*.pt (with use_ctc)")
    p.add_argument("--epoch", type=int, default=None, help="default: the last epoch")
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--lang-dir", type=Path, required=True, help="bpe.model, words.txt, HLG.pt, HLG.fst")
    p.add_argument("--cuts", type=Path, required=True, help="cuts with audio and transcripts (e.g. the ASR test set)")
    p.add_argument("--onnx-dir", type=Path, default=None, help="default: <exp-dir>/onnx")
    p.add_argument("--limit", type=int, default=None, help="only the first N cuts")
    p.add_argument("--search-beam", type=float, default=DecodingOptions.search_beam, help="k2")
    p.add_argument("--output-beam", type=float, default=DecodingOptions.output_beam, help="k2")
    p.add_argument("--max-active", type=int, default=3000, help="sherpa-onnx ctc_max_active")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default: <exp-dir>/hlg_parity.json")
    args = p.parse_args()
    setup_logger()
    torch.set_num_threads(args.num_threads)
    onnx_dir = args.onnx_dir or args.exp_dir / "onnx"
    model = load_averaged_model(args.exp_dir, args.epoch, args.avg)
    ctc = onnx_dir / "ctc.onnx"
    newest = max(c.stat().st_mtime for c in find_checkpoints(args.exp_dir, "epoch"))
    if not ctc.is_file() or ctc.stat().st_mtime < newest:
        logging.info(f"exporting the CTC branch to {ctc}")
        export_ctc(model, onnx_dir, args.lang_dir / "tokens.txt")
    cuts = CutSet.from_file(args.cuts)
    if args.limit:
        cuts = cuts.subset(first=args.limit)
    opts = DecodingOptions(search_beam=args.search_beam, output_beam=args.output_beam)
    res = compare_sherpa_hlg(model, args.lang_dir, cuts, onnx_dir, opts, args.max_active, args.num_threads)
    res.update(exp_dir=str(args.exp_dir), lang_dir=str(args.lang_dir), cuts=str(args.cuts))
    out = args.out or args.exp_dir / "hlg_parity.json"
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    print(parity_table(res))
    for d in res["differences"]:
        print(f"{d['cut_id']}: k2={d['k2']!r} sherpa-onnx={d['sherpa_onnx']!r} ({d['cause']})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
