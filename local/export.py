#!/usr/bin/env python3
"""Export a trained student to ONNX (run.sh stage 11): every head the model has.

  python local/export.py --exp-dir exp/mini/mt2kd --epoch 10 --avg 3 --lang-dir data/mini/lang_bpe_500 \
      --manifest-dir data/mini/manifests --out-dir exp/mini/mt2kd/onnx

Writes into ``--out-dir`` (see mt2kd_lib/export/onnx_export.py for the exact inputs/outputs):
  ASR head: encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt  (sherpa-onnx offline transducer layout:
            ``sherpa-onnx-offline --encoder=encoder.onnx --decoder=decoder.onnx --joiner=joiner.onnx
            --tokens=tokens.txt a.wav``); with a CTC branch (use_ctc) also ctc.onnx, decoded by sherpa-onnx with
            the lang dir's HLG.fst (``from_zipformer_ctc(model=ctc.onnx, ..., ctc_graph=HLG.fst)``;
            tools/compare_sherpa_hlg.py checks it against k2)
  AT head:  tagger.onnx (+ class_labels_indices.csv with --manifest-dir; sherpa-onnx zipformer audio tagging layout)
  SV head:  speaker.onnx (fbank -> embedding; sherpa-onnx speaker embedding extractor layout)
README.md ("Deploying with sherpa-onnx") shows the sherpa-onnx Python calls for each.
The weights are the average of epoch-(epoch-avg+1).pt .. epoch-<epoch>.pt (the last epoch when --epoch is omitted).
"""

import argparse
import logging
from pathlib import Path

import torch

from mt2kd_lib.data.contract import class_labels_path
from mt2kd_lib.evaluation.evaluate import load_averaged_model
from mt2kd_lib.export.onnx_export import (
    DEFAULT_LANGUAGE,
    DEFAULT_MAX_SECONDS,
    DEFAULT_OPSET,
    SUPPORTED_OPSETS,
    export_model,
    file_sizes,
)
from mt2kd_lib.utils.logging import setup_logger


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True, help="a system dir holding epoch-*.pt")
    p.add_argument("--epoch", type=int, default=None, help="default: the last epoch")
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--lang-dir", type=Path, default=None, help="lang_bpe_N with tokens.txt (needed for the ASR head)")
    p.add_argument("--manifest-dir", type=Path, default=None,
                   help="manifests dir; its class_labels_indices.csv is copied next to tagger.onnx")
    p.add_argument("--out-dir", type=Path, default=None, help="default: <exp-dir>/onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, choices=list(SUPPORTED_OPSETS))
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help="longest input the exported encoder accepts (its position table is sized for it)")
    p.add_argument("--language", default=DEFAULT_LANGUAGE, help="speaker.onnx metadata (sherpa-onnx requires one)")
    return p


def main() -> None:
    args = get_parser().parse_args()
    out_dir = args.out_dir or args.exp_dir / "onnx"
    setup_logger(out_dir / "log-export")
    if args.avg < 1:
        raise ValueError(f"--avg must be >= 1, got {args.avg}")
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    model = load_averaged_model(args.exp_dir, args.epoch, args.avg)
    logging.info(f"model heads: {model.tasks}; parameters: {sum(p.numel() for p in model.parameters()):,}")

    tokens = None
    if model.asr_head is not None:
        if args.lang_dir is None:
            raise ValueError("the model has an ASR head: pass --lang-dir (the lang_bpe_N dir it was trained with)")
        tokens = args.lang_dir / "tokens.txt"
    labels = None
    if model.at_head is not None and args.manifest_dir is not None:
        labels = class_labels_path(args.manifest_dir)
        if not labels.is_file():
            logging.warning(f"{labels} not found; tagger.onnx is exported without a label file")
            labels = None

    files = export_model(model, out_dir, tokens=tokens, class_labels=labels, opset=args.opset,
                         max_seconds=args.max_seconds, language=args.language)
    sizes = file_sizes(files)
    print(f"exported {len(files)} file(s) to {out_dir}:")
    for name, path in files.items():
        print(f"  {path.name:<28} {sizes[name] / 1e6:9.3f} MB")
    print(f"  {'total':<28} {sum(sizes.values()) / 1e6:9.3f} MB")


if __name__ == "__main__":
    main()
