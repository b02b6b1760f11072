#!/usr/bin/env python3
"""run.sh stage 4 (after training): write <exp>/teachers.yaml, the teachers stage 5 dumps.

--mode train       the recipe-trained teachers <teachers-exp>/{asr,at,sv}/epoch-N.pt (with --use-averaged-model, the
                   mean weights of their last --avg epochs, written beside them); the SV teacher is the
                   recipe-trained one, resemblyzer's pretrained speaker encoder, or (auto) whichever has the lower
                   EER on the SV dev trials (test trials only when the corpus has no dev list; both candidates'
                   numbers are logged and kept in teachers_selection.json).
--mode pretrained  a given teachers yaml (Whisper / BEATs / ECAPA checkpoints): every teacher is loaded once and
                   its output dimension checked before the yaml is copied.
"""

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch
import yaml

from mt2kd_lib.evaluation.evaluate import averaged_state, evaluate_sv, teacher_sv_embeddings
from mt2kd_lib.teachers.registry import build_teacher, load_teachers_config
from mt2kd_lib.training.launch import add_averaged_model_arg
from mt2kd_lib.utils.logging import setup_logger


def teacher_checkpoint(run: Path, epoch: int, avg: int, use_averaged_model: bool) -> str:
    """The checkpoint a trained teacher is loaded from: epoch-N.pt, or a file of the weights stage 9 evaluates."""
    if not use_averaged_model and avg == 1:
        return str((run / f"epoch-{epoch}.pt").resolve())
    out = run / f"averaged-epoch-{epoch}-avg-{avg}{'-model-avg' if use_averaged_model else ''}.pt"
    if (run / f"epoch-{epoch}.pt").is_file():  # (no sv/ run when the SV teacher is pretrained)
        state, config = averaged_state(run, epoch, avg, use_averaged_model)
        torch.save({"model": state, "model_config": config}, out)
        logging.info(f"wrote {out}")
    return str(out.resolve())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["train", "pretrained"], required=True)
    p.add_argument("--teachers-exp", type=Path, help="train mode: folder with asr/ at/ sv/ teacher runs")
    p.add_argument("--epoch", type=int, help="train mode: the teachers' last epoch")
    p.add_argument("--avg", type=int, default=1, help="train mode: as local/evaluate.py")
    add_averaged_model_arg(p, help_prefix="train mode: ")
    p.add_argument("--sv-teacher", choices=["auto", "checkpoint", "resemblyzer"], default="auto")
    p.add_argument("--teachers-config", type=Path, help="pretrained mode: the teachers yaml")
    p.add_argument("--recipe-data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    setup_logger()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.mode == "pretrained":
        teachers = load_teachers_config(args.teachers_config)
        for name, t in teachers.items():
            logging.info(f"teacher {name}: {t.spec}")
        shutil.copyfile(args.teachers_config, args.out)
        return

    ckpt = {t: teacher_checkpoint(args.teachers_exp / t, args.epoch, args.avg, args.use_averaged_model)
            for t in ("asr", "at", "sv")}
    cfg = {
        "asr_teacher": {"kind": "checkpoint", "checkpoint": ckpt["asr"], "task": "asr"},
        "at_teacher": {"kind": "checkpoint", "checkpoint": ckpt["at"], "task": "at"},
    }
    candidates = {"checkpoint": {"kind": "checkpoint", "checkpoint": ckpt["sv"], "task": "sv"},
                  "resemblyzer": {"kind": "resemblyzer", "level": "utterance"}}
    wanted = ["checkpoint", "resemblyzer"] if args.sv_teacher == "auto" else [args.sv_teacher]
    selection = {}
    for name in wanted:
        teacher = build_teacher("sv_teacher", **candidates[name])
        res = evaluate_sv(teacher_sv_embeddings(teacher), args.recipe_data, args.teachers_exp / f"sv_{name}",
                          name=f"{name}-")
        res["params"] = teacher.num_params()
        selection[name] = res
        logging.info(f"SV teacher candidate {name}: EER {res['eer']}, minDCF {res['min_dcf']}")
    # Chosen on the dev trial lists when the corpus has them: a choice made on test would flatter the table.
    on = "eer_dev" if all(selection[n].get("eer_dev") for n in selection) else "eer"
    if on == "eer" and len(selection) > 1:
        logging.warning("no SV dev trial list (index.json sv.dev_trials): the SV teacher is chosen on test trials")
    best = min(selection, key=lambda n: sum(selection[n][on].values()))
    logging.info(f"SV teacher: {best} (by {on})")
    cfg["sv_teacher"] = candidates[best]
    (args.teachers_exp / "teachers_selection.json").write_text(json.dumps(
        {"sv_candidates": selection, "sv_teacher": best}, indent=2) + "\n")
    args.out.write_text(yaml.safe_dump({"teachers": cfg}, sort_keys=False))
    logging.info(f"wrote {args.out}")


if __name__ == "__main__":
    main()
