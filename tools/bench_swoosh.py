#!/usr/bin/env python3
"""k2's fused SwooshL/SwooshR kernels against ours (mt2kd_lib/models/zipformer/scaling.py), forward + backward.

Both run on the same tensor, interleaved, in one process; the median time ratio is printed (> 1: k2 is faster).
icefall uses k2's kernels when k2 imports; mt2kd would only switch to them if they are faster here.

  python tools/bench_swoosh.py --shape 8 500 384 --reps 20 --threads 2
"""

import argparse
import statistics
import time

import torch

from mt2kd_lib.models.zipformer.scaling import swoosh_l, swoosh_r


def time_fn(fn, x: torch.Tensor, grad: torch.Tensor) -> float:
    x = x.detach().requires_grad_()
    t0 = time.perf_counter()
    fn(x).backward(grad)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs="+", default=[8, 500, 384])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    import k2

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = 3 * torch.randn(*args.shape, device=args.device)
    grad = torch.randn_like(x)
    for name, ours, theirs in (("SwooshL", swoosh_l, k2.swoosh_l), ("SwooshR", swoosh_r, k2.swoosh_r)):
        xs = x.detach().requires_grad_()
        ys = x.detach().requires_grad_()
        a, b = ours(xs), theirs(ys)
        a.backward(grad)
        b.backward(grad)
        # k2's kernels compute in lower precision (the derivative is quantised to 8 bits for the backward).
        err_y = float((a - b).abs().max())
        err_g = float((xs.grad - ys.grad).abs().max())
        t_ours, t_k2 = [], []
        for _ in range(args.reps):
            t_ours.append(time_fn(ours, x, grad))
            t_k2.append(time_fn(theirs, x, grad))
        mo, mk = statistics.median(t_ours), statistics.median(t_k2)
        print(f"{name} {tuple(args.shape)} {args.device}: ours {1e3 * mo:.2f} ms, k2 {1e3 * mk:.2f} ms, "
              f"ours/k2 = {mo / mk:.2f}  (max |dy| {err_y:.2e}, max |dgrad| {err_g:.2e})")


if __name__ == "__main__":
    main()
