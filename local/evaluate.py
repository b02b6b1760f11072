#!/usr/bin/env python3
"""Evaluate a trained student: ASR WER, AT mAP, SV EER/minDCF (icefall ``decode.py`` conventions).

  python local/evaluate.py --exp-dir exp/mini/asr_tiny --recipe-data data/mini --epoch 10 --avg 3 \
      --task all --decoding-method greedy_search

The model is rebuilt from the checkpoint's ``model_config`` and its weights are the plain average of
``epoch-(epoch-avg+1).pt .. epoch-<epoch>.pt``. Tasks the model has no head for are skipped with ``--task all``.
Outputs under ``<exp-dir>/<decoding-method>/`` (ASR: recogs/errs/wer-summary files) and ``<exp-dir>/eval/``
(AT: at-<split>.txt/json; SV: sv-<trials>.txt/json + det-<trials>.png), and ``<exp-dir>/results.json`` merging
every metric (existing entries of other settings are kept).
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from lhotse import CutSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mt2kd_lib.data import contract  # noqa: E402
from mt2kd_lib.data.bpe import load_bpe  # noqa: E402
from mt2kd_lib.data.datamodule import make_eval_dl  # noqa: E402
from mt2kd_lib.data.dataset import MultiTaskDataset  # noqa: E402
from mt2kd_lib.data.features import fbank_cuts_path  # noqa: E402
from mt2kd_lib.decoding.asr_results import write_asr_results  # noqa: E402
from mt2kd_lib.decoding.beam_search import modified_beam_search  # noqa: E402
from mt2kd_lib.decoding.greedy_search import greedy_search_batch  # noqa: E402
from mt2kd_lib.metrics.tagging import mean_average_precision, write_at_results  # noqa: E402
from mt2kd_lib.metrics.verification import (  # noqa: E402
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    plot_det,
    read_trials,
    write_sv_results,
)
from mt2kd_lib.models.factory import build_student  # noqa: E402
from mt2kd_lib.models.student import StudentModel  # noqa: E402
from mt2kd_lib.training.checkpoint import average_checkpoints, epoch_checkpoints_for_avg  # noqa: E402
from mt2kd_lib.utils.logging import setup_logger  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--recipe-data", type=Path, required=True, help="data/<recipe>: manifests/, fbank/, lang_bpe_*/")
    p.add_argument("--lang-dir", type=Path, default=None, help="default: the one <recipe-data>/lang_bpe_* folder")
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--task", choices=["asr", "at", "sv", "all"], default="all")
    p.add_argument("--decoding-method", choices=["greedy_search", "modified_beam_search"], default="greedy_search")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--max-duration", type=float, default=300.0)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--device", type=str, default=None)
    return p


def load_averaged_model(exp_dir: Path, epoch: int, avg: int, device: torch.device) -> StudentModel:
    paths = epoch_checkpoints_for_avg(exp_dir, epoch, avg)
    ckpt = torch.load(paths[-1], map_location="cpu", weights_only=False)
    if not ckpt.get("model_config"):
        raise ValueError(f"{paths[-1]}: no model_config in the checkpoint (not written by local/train.py?)")
    model = build_student(ckpt["model_config"])
    model.load_state_dict(average_checkpoints(paths) if avg > 1 else ckpt["model"])
    logging.info(f"loaded {'the average of ' if avg > 1 else ''}{[p.name for p in paths]}")
    return model.to(device).eval()


def _splits(value: Any) -> List[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _load_split(fbank_dir: Path, task: str, split: str) -> CutSet:
    path = fbank_cuts_path(fbank_dir, task, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the features stage (run.sh stage 2)")
    return CutSet.from_file(path)


@torch.no_grad()
def decode_asr(model: StudentModel, cuts: CutSet, sp, args, device: torch.device) -> List[tuple]:
    """(cut_id, ref_words, hyp_words) for every cut."""
    results = []
    for batch in make_eval_dl(cuts, args.max_duration, task="asr"):
        enc, enc_lens = model.asr_encoder_out(batch["features"].to(device), batch["feature_lens"].to(device))
        if args.decoding_method == "greedy_search":
            hyps = greedy_search_batch(model.asr_head, enc, enc_lens)
        else:
            hyps = modified_beam_search(model.asr_head, enc, enc_lens, beam=args.beam_size)
        for cid, text, hyp in zip(batch["cut_ids"], batch["texts"], hyps):
            results.append((cid, text.split(), sp.decode(hyp).split()))
    return results


@torch.no_grad()
def eval_at(model: StudentModel, cuts: CutSet, num_classes: int, args, device: torch.device):
    scores, targets = [], []
    ds = MultiTaskDataset(num_classes=num_classes)
    for batch in make_eval_dl(cuts, args.max_duration, task="at", dataset=ds):
        logits = model.at_logits(batch["features"].to(device), batch["feature_lens"].to(device))
        scores.append(torch.sigmoid(logits).cpu())
        targets.append(batch["at_targets"])
    return mean_average_precision(torch.cat(scores).numpy(), torch.cat(targets).numpy())


@torch.no_grad()
def sv_embeddings(model: StudentModel, cuts: CutSet, args, device: torch.device) -> Dict[str, torch.Tensor]:
    emb: Dict[str, torch.Tensor] = {}
    for batch in make_eval_dl(cuts, args.max_duration, task="sv"):
        e = model.sv_embeddings(batch["features"].to(device), batch["feature_lens"].to(device)).cpu()
        emb.update(zip(batch["cut_ids"], e))
    return emb


def merge_results(path: Path, new: Dict[str, Any]) -> None:
    """Deep-merge ``new`` into the JSON file at ``path`` (written atomically)."""
    old = json.loads(path.read_text()) if path.is_file() else {}

    def merge(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merge(old, new), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def main() -> None:
    args = get_parser().parse_args()
    setup_logger(args.exp_dir / "log" / f"log-evaluate-epoch-{args.epoch}-avg-{args.avg}.txt")
    torch.set_num_threads(args.num_threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_averaged_model(args.exp_dir, args.epoch, args.avg, device)
    manifest_dir, fbank_dir = args.recipe_data / "manifests", args.recipe_data / "fbank"
    index = contract.read_index(manifest_dir)
    tasks = model.tasks if args.task == "all" else [args.task]
    missing = [t for t in tasks if t not in model.tasks]
    if missing:
        raise ValueError(f"the model in {args.exp_dir} has no {missing} head (it has {model.tasks})")
    setting = f"epoch-{args.epoch}-avg-{args.avg}"
    results: Dict[str, Any] = {}
    eval_dir = args.exp_dir / "eval"

    if "asr" in tasks:
        lang_dir = args.lang_dir or next(iter(sorted(args.recipe_data.glob("lang_bpe_*"))), None)
        if lang_dir is None:
            raise FileNotFoundError(f"{args.recipe_data}: no lang_bpe_* folder; pass --lang-dir")
        sp = load_bpe(lang_dir)
        key = args.decoding_method + (f"-beam-{args.beam_size}" if args.decoding_method != "greedy_search" else "")
        key = f"{key}-{setting}"
        for split in _splits(index["asr"].get("test")):
            t0 = time.time()
            res = decode_asr(model, _load_split(fbank_dir, "asr", split), sp, args, device)
            wer = write_asr_results(args.exp_dir / args.decoding_method, split, key, res)
            logging.info(f"ASR {split}: WER {wer:.2f}% ({len(res)} cuts, {time.time() - t0:.1f} s)")
            results.setdefault("asr", {}).setdefault(split, {})[key] = round(wer, 2)
    if "at" in tasks:
        names = [r[2] for r in contract.read_class_labels(manifest_dir)]
        for split in _splits(index["at"].get("eval")):
            mAP, per_class = eval_at(model, _load_split(fbank_dir, "at", split), len(names), args, device)
            write_at_results(eval_dir, f"{split}-{setting}", mAP, per_class, names)
            results.setdefault("at", {}).setdefault(split, {})[setting] = {"mAP": float(mAP)}
    if "sv" in tasks:
        emb = sv_embeddings(model, _load_split(fbank_dir, "sv", index["sv"]["test"]), args, device)
        for name in _splits(index["sv"].get("trials")):
            trials = read_trials(contract.trials_path(manifest_dir, name))
            scores = cosine_scores(emb, trials)
            labels = np.array([t[0] for t in trials])
            eer, _ = compute_eer(scores, labels)
            min_dcf, _ = compute_min_dcf(scores, labels, p_target=0.01)
            write_sv_results(eval_dir, f"{name}-{setting}", eer, min_dcf, len(trials))
            plot_det({f"{args.exp_dir.name} {setting}": (scores, labels)}, eval_dir / f"det-{name}-{setting}.png")
            results.setdefault("sv", {}).setdefault(name, {})[setting] = {
                "eer_percent": 100.0 * float(eer), "min_dcf": float(min_dcf), "n_trials": len(trials)}
    merge_results(args.exp_dir / "results.json", results)
    logging.info(f"results: {json.dumps(results)}")


if __name__ == "__main__":
    main()
