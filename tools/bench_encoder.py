#!/usr/bin/env python3
"""Benchmark Conv2dSubsampling + Zipformer2 forward+backward on CPU.

Random batch N x T fbank frames (default 8 x 1000 = 8 utterances of 10 s, 80 dims), a warm-up
iteration, then K timed forward+backward iterations in training mode.  Prints, per preset:
params (M), seconds per batch and x-realtime (audio seconds / wall seconds).

  python tools/bench_encoder.py --presets S xs --iters 3 --threads 2

glibc malloc is tuned for reuse of large blocks first (see mt2kd_lib/models/zipformer/cpu_alloc.py),
as a training process should do; ``--no-malloc-tune`` measures without it.
"""

import argparse
import logging
import time
from typing import List

import torch

from mt2kd_lib.models.encoder_presets import build_encoder
from mt2kd_lib.models.zipformer.cpu_alloc import tune_cpu_malloc
from mt2kd_lib.models.zipformer.scaling import set_batch_count
from mt2kd_lib.utils.logging import setup_logger


def bench_one(preset: str, batch: int, frames: int, iters: int, train: bool, seed: int) -> dict:
    """Time ``iters`` forward+backward passes of ``preset``; returns a dict of measurements."""
    torch.manual_seed(seed)
    model = build_encoder(preset)
    model.train(train)
    set_batch_count(model, 10000.0)  # a mid-training state of the schedules
    params = sum(p.numel() for p in model.parameters())
    feats = torch.randn(batch, frames, model.feature_dim)
    lens = torch.full((batch,), frames, dtype=torch.int64)

    def step() -> None:
        out, _ = model(feats, lens)
        (out ** 2).mean().backward()  # any scalar touching every output
        model.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, positional-encoding tables
    times: List[float] = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    return {"preset": preset, "params_m": params / 1e6, "sec": sec, "min_sec": min(times),
            "rt": batch * frames / 100.0 / sec, "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["S", "xs"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=1000, help="fbank frames per utterance (100 Hz)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-mode", action="store_true",
                        help="time in eval mode (no Balancer/Whiten/dropout work)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-malloc-tune", action="store_true",
                        help="leave glibc malloc at its defaults (large blocks mmapped per use)")
    args = parser.parse_args()
    setup_logger()
    malloc_tuned = False if args.no_malloc_tune else tune_cpu_malloc()
    torch.set_num_threads(args.threads)
    rows = []
    for preset in args.presets:
        r = bench_one(preset, args.batch, args.frames, args.iters, not args.eval_mode, args.seed)
        logging.info(f"{preset}: {r['sec']:.3f} s/batch (min {r['min_sec']:.3f}); all: "
                     f"{' '.join('%.2f' % t for t in r['times'])}")
        rows.append(r)
    audio_s = args.batch * args.frames / 100.0
    print(f"batch {args.batch} x {args.frames} frames ({audio_s:.0f} s audio), threads={args.threads}, "
          f"mode={'eval' if args.eval_mode else 'train'}, forward+backward, malloc_tuned={malloc_tuned}")
    print(f"{'preset':<12}{'params (M)':>12}{'s/batch':>10}{'x realtime':>12}")
    for r in rows:
        print(f"{r['preset']:<12}{r['params_m']:>12.2f}{r['sec']:>10.3f}{r['rt']:>12.1f}")


if __name__ == "__main__":
    main()
