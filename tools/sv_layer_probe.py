#!/usr/bin/env python3
"""How much speaker information each encoder stack of a trained model holds, without training anything:
the mean and standard deviation over time of each stack's output (and of the encoder output) as an utterance
vector, cosine-scored on the SV trial lists (test, and dev when the corpus has one). Lower EER = more speaker
information there; it tells which stack an SV head could read (``heads.sv.input_stack``).

  python tools/sv_layer_probe.py --recipe-data data/mini --exp-dir exp/mini/mt2kd exp/mini/single_sv
"""

import argparse
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet

from mt2kd_lib.data import contract
from mt2kd_lib.data.datamodule import make_eval_dl
from mt2kd_lib.data.features import fbank_cuts_path
from mt2kd_lib.evaluation.evaluate import load_averaged_model
from mt2kd_lib.metrics.verification import compute_eer, cosine_scores, read_trials
from mt2kd_lib.models.student import StudentModel


@torch.no_grad()
def pooled_layer_vectors(model: StudentModel, cuts: CutSet, max_duration: float = 300.0
                         ) -> Dict[str, List[np.ndarray]]:
    """cut id -> [mean+std of stack 0, ..., of the last stack, of the encoder output]."""
    model.eval()
    out: Dict[str, List[np.ndarray]] = {}
    for batch in make_eval_dl(cuts, max_duration, task="sv"):
        enc, enc_lens, stacks = model.encode(batch["features"], batch["feature_lens"], need_stacks=True)
        for i, cid in enumerate(batch["cut_ids"]):
            vecs = []
            for x, lens in list(stacks) + [(enc, enc_lens)]:
                v = x[i, : int(lens[i])]
                vecs.append(torch.cat([v.mean(0), v.std(0)]).numpy())
            out[cid] = vecs
    return out


def layer_eers(vectors: Dict[str, List[np.ndarray]], trials: Sequence[Tuple[int, str, str]]) -> List[float]:
    """EER (%) of each layer's vectors on ``trials``."""
    labels = np.array([t[0] for t in trials])
    num_layers = len(next(iter(vectors.values())))
    return [100 * compute_eer(cosine_scores({c: v[k] for c, v in vectors.items()}, trials), labels)[0]
            for k in range(num_layers)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-data", type=Path, required=True)
    p.add_argument("--exp-dir", type=Path, nargs="+", required=True, help="trained systems (last epoch each)")
    p.add_argument("--num-threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.num_threads)
    manifest_dir = args.recipe_data / "manifests"
    sv = contract.read_index(manifest_dir)["sv"]
    lists = [(sv["test"], t) for t in sv.get("trials", [])] + [(sv["dev"], t) for t in sv.get("dev_trials", [])]
    rows = []
    for exp in args.exp_dir:
        model = load_averaged_model(exp)
        cells = {}
        for split in dict.fromkeys(s for s, _ in lists):
            vectors = pooled_layer_vectors(model, CutSet.from_file(fbank_cuts_path(args.recipe_data / "fbank", "sv",
                                                                                   split)))
            for s, name in lists:
                if s == split:
                    cells[name] = layer_eers(vectors, read_trials(contract.trials_path(manifest_dir, name)))
        rows.append((str(exp), cells))
    n = len(next(iter(rows[0][1].values())))
    names = [f"stack {k}" for k in range(n - 1)] + ["output"]
    print(f"EER (%) of mean+std pooled layer outputs, cosine scoring; per cell: {' / '.join(n for _, n in lists)}\n")
    print("| model | " + " | ".join(names) + " |")
    print("|---|" + "---|" * n)
    for exp, cells in rows:
        print(f"| {exp} | " + " | ".join(" / ".join(f"{cells[t][k]:.1f}" for _, t in lists) for k in range(n)) + " |")


if __name__ == "__main__":
    main()
