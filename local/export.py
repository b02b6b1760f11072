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
  --streaming-chunk-size C (causal models): streaming/{encoder,decoder,joiner}.onnx + tokens.txt for sherpa-onnx's
            OnlineRecognizer with chunks of C 50 Hz frames (mt2kd_lib/export/onnx_streaming.py)
README.md ("Deploying with sherpa-onnx") shows the sherpa-onnx Python calls for each.
The weights are the average of epoch-(epoch-avg+1).pt .. epoch-<epoch>.pt (the last epoch when --epoch is omitted).
"""

import argparse
import logging
from pathlib import Path

import torch

from mt2kd_lib.data.contract import class_labels_path
from mt2kd_lib.evaluation.evaluate import load_averaged_model
from mt2kd_lib.evaluation.weights_choice import resolve_use_averaged_model
from mt2kd_lib.export.onnx_export import (
    DEFAULT_LANGUAGE,
    DEFAULT_MAX_SECONDS,
    DEFAULT_OPSET,
    SUPPORTED_OPSETS,
    export_model,
    file_sizes,
)
from mt2kd_lib.training.launch import add_averaged_model_arg
from mt2kd_lib.utils.logging import setup_logger


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True, help="a system dir holding epoch-*.pt")
    p.add_argument("--epoch", type=int, default=None, help="default: the last epoch")
    p.add_argument("--avg", type=int, default=1)
    add_averaged_model_arg(p, allow_dev=True)
    p.add_argument("--lang-dir", type=Path, default=None, help="lang_bpe_N with tokens.txt (needed for the ASR head)")
    p.add_argument("--manifest-dir", type=Path, default=None,
                   help="manifests dir; its class_labels_indices.csv is copied next to tagger.onnx")
    p.add_argument("--out-dir", type=Path, default=None, help="default: <exp-dir>/onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, choices=list(SUPPORTED_OPSETS))
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help="longest input the exported encoder accepts (its position table is sized for it)")
    p.add_argument("--language", default=DEFAULT_LANGUAGE, help="speaker.onnx metadata (sherpa-onnx requires one)")
    p.add_argument("--streaming-chunk-size", type=int, default=0,
                   help="> 0 (causal models): also the streaming transducer, chunks of this many 50 Hz frames, "
                        "into <out-dir>/streaming")
    p.add_argument("--streaming-left-context-frames", type=int, default=64, help="its left context (50 Hz frames)")
    return p


def main() -> None:
    args = get_parser().parse_args()
    out_dir = args.out_dir or args.exp_dir / "onnx"
    setup_logger(out_dir / "log-export")
    if args.avg < 1:
        raise ValueError(f"--avg must be >= 1, got {args.avg}")
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    model = load_averaged_model(args.exp_dir, args.epoch, args.avg,
                                resolve_use_averaged_model(args.exp_dir, args.use_averaged_model))
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
    if args.streaming_chunk_size > 0:
        from mt2kd_lib.export.onnx_streaming import export_streaming_transducer

        streaming = export_streaming_transducer(model, out_dir / "streaming", tokens, args.streaming_chunk_size,
                                                args.streaming_left_context_frames, opset=args.opset)
        files.update({f"streaming_{k}": v for k, v in streaming.items()})
    sizes = file_sizes(files)
    print(f"exported {len(files)} file(s) to {out_dir}:")
    for name, path in files.items():
        print(f"  {str(Path(path).relative_to(out_dir)):<28} {sizes[name] / 1e6:9.3f} MB")
    print(f"  {'total':<28} {sum(sizes.values()) / 1e6:9.3f} MB")


if __name__ == "__main__":
    main()
