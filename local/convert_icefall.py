#!/usr/bin/env python3
"""Convert Zipformer2 checkpoints between icefall's layout and mt2kd's (see mt2kd_lib/models/icefall_convert.py).

icefall -> mt2kd (an ``epoch-N.pt``, ``pretrained.pt`` or averaged icefall checkpoint with a transducer head):

  python local/convert_icefall.py to-mt2kd --icefall-checkpoint icefall-zipformer/exp/pretrained.pt \
      --out exp/icefall_M/epoch-1.pt [--preset M] [--use-model-avg true]

  The output is read by local/evaluate.py / local/export.py (``--exp-dir exp/icefall_M --epoch 1``) and by the
  ``checkpoint`` teacher kind; decode it with the icefall model's own lang_bpe_N (bpe.model + tokens.txt).
  The encoder preset is inferred (checkpoint params, else a preset with the same shapes, else the shapes) unless
  --preset is given; any difference is an error naming the first key and both shapes.

mt2kd -> icefall (a student trained here, its ASR head and encoder; AT/SV heads are left out):

  python local/convert_icefall.py to-icefall --exp-dir exp/mini/asr_tiny --epoch 10 --avg 3 \
      --out exp/mini/asr_tiny/icefall/epoch-10.pt

  Writes ``{"model": <icefall names>, <icefall params>}`` and prints the options icefall's zipformer decode.py /
  export.py need to build the same model (use them with ``--epoch 10 --avg 1 --use-averaged-model false``).
  The file is read back through the converter before the command finishes.
"""

import argparse
import logging
from pathlib import Path

import torch

from mt2kd_lib.models.icefall_convert import (
    icefall_model_args,
    icefall_to_mt2kd,
    mt2kd_to_icefall,
    read_icefall_checkpoint,
)
from mt2kd_lib.training.launch import str2bool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="direction", required=True)
    a = sub.add_parser("to-mt2kd", help="icefall checkpoint -> mt2kd checkpoint")
    a.add_argument("--icefall-checkpoint", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--preset", default=None, help="expected encoder preset (default: inferred)")
    a.add_argument("--use-model-avg", type=str2bool, default=False, help="epoch-N.pt: take model_avg")
    b = sub.add_parser("to-icefall", help="mt2kd checkpoint(s) -> icefall layout")
    b.add_argument("--exp-dir", type=Path, required=True)
    b.add_argument("--epoch", type=int, default=None, help="default: the last epoch")
    b.add_argument("--avg", type=int, default=1)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--encoder-only", type=str2bool, default=False, help="write the encoder only (no ASR head)")
    return p


def to_mt2kd(args: argparse.Namespace) -> None:
    ckpt = read_icefall_checkpoint(args.icefall_checkpoint, args.use_model_avg)
    imp = icefall_to_mt2kd(ckpt, preset=args.preset)
    if "asr" not in imp.model_config["heads"]:
        raise ValueError(f"{args.icefall_checkpoint} has no transducer head, so it is no complete mt2kd model; "
                         f"use its encoder through --init-from-icefall or the icefall_zipformer teacher instead")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": imp.state, "model_config": imp.model_config, "icefall_source": str(args.icefall_checkpoint)},
               args.out)
    print(f"{args.out}: encoder from {imp.encoder_source}, ASR head {imp.model_config['heads']['asr']}; "
          f"{len(imp.skipped)} tensors not imported {imp.skipped[:3]}")


def to_icefall(args: argparse.Namespace) -> None:
    from mt2kd_lib.evaluation.evaluate import load_averaged_model

    model = load_averaged_model(args.exp_dir, args.epoch, args.avg)
    ckpt = mt2kd_to_icefall(model, encoder_only=args.encoder_only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    # Read back: the written file must convert to the same config with every tensor in place.
    back = icefall_to_mt2kd(args.out, with_asr_head=not args.encoder_only)
    wrote, read = model.encoder.config.to_dict(), back.model_config["encoder"]
    for k in ("dropout", "warmup_batches"):  # training schedules: not part of icefall's model options
        wrote.pop(k), read.pop(k)
    if read != wrote:
        raise RuntimeError(f"{args.out}: read back as {read}, wrote {wrote}")
    print(f"{args.out}: {len(ckpt['model'])} tensors in icefall's layout")
    print(f"icefall zipformer decode.py/export.py options: {icefall_model_args(ckpt)}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args()
    to_mt2kd(args) if args.direction == "to-mt2kd" else to_icefall(args)


if __name__ == "__main__":
    main()
