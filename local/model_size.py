#!/usr/bin/env python3
"""Print the parameter count of a model config (encoder, each head, total) without any data.

  python local/model_size.py --model-config egs/librispeech_audioset_voxceleb/conf/student_m.yaml \
      --vocab-size 500 --num-classes 527 --num-speakers 5994
"""

import argparse
import copy
from pathlib import Path

from mt2kd_lib.models.factory import build_student, load_model_config


def sizes(cfg: dict, vocab_size: int, num_classes: int, num_speakers: int) -> dict:
    cfg = copy.deepcopy(cfg)
    heads = cfg.setdefault("heads", {})
    if "asr" in heads:
        heads["asr"]["vocab_size"] = vocab_size
    if "at" in heads:
        heads["at"]["num_classes"] = num_classes
    if "sv" in heads:
        heads["sv"]["num_speakers"] = num_speakers
    model = build_student(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    out = {"encoder": count(model.encoder), "asr_head": count(model.asr_head), "at_head": count(model.at_head),
           "sv_head": count(model.sv_head)}
    out["encoder+transducer"] = out["encoder"] + out["asr_head"]
    out["total"] = count(model)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-config", type=Path, required=True)
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--num-classes", type=int, default=527)
    p.add_argument("--num-speakers", type=int, default=5994)
    args = p.parse_args()
    res = sizes(load_model_config(args.model_config), args.vocab_size, args.num_classes, args.num_speakers)
    print(f"{args.model_config} (vocab {args.vocab_size}, {args.num_classes} classes, {args.num_speakers} speakers)")
    for k, v in res.items():
        print(f"  {k:20s} {v / 1e6:8.2f} M")


if __name__ == "__main__":
    main()
