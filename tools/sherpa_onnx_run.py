#!/usr/bin/env python3
"""Run the exported heads in an ONNX dir with sherpa-onnx's Python API on wav files; print one JSON object.

  python tools/sherpa_onnx_run.py exp/mini/mt2kd/onnx a.wav b.wav [--out result.json]
  python tools/sherpa_onnx_run.py exp/mini/mt2kd/onnx_streaming a.wav --online   # streaming transducer

Output: ``{"<wav>": {"text", "tokens", "probs", "labels", "embedding"}}`` for the heads whose files exist
(see mt2kd_lib/export/sherpa_run.py); with ``--online``, ``{"<wav>": {"text", "tokens"}}`` of sherpa-onnx's
OnlineRecognizer fed 100 ms of audio at a time. A file sherpa-onnx refuses ends this process with its message.
"""

import argparse
import json
from pathlib import Path

import soundfile as sf

from mt2kd_lib.export.sherpa_run import run_heads, run_online


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx_dir", type=Path)
    p.add_argument("wavs", type=Path, nargs="+")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    p.add_argument("--online", action="store_true", help="the dir holds a streaming transducer (OnlineRecognizer)")
    args = p.parse_args()
    waves = {}
    for wav in args.wavs:
        samples, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        waves[str(wav)] = (samples[:, 0], sr)
    run = run_online if args.online else run_heads
    text = json.dumps(run(args.onnx_dir, waves, args.num_threads), ensure_ascii=False)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
