"""Choose a student's weights on dev: the mean weights of its last epochs (model_avg) or its last weights.

The mean weights help a model that has converged (MT2KD: dev WER 20-30% -> 5%) and hurt one that is still breaking
through (single-task ASR: 50% -> 80%; RESULTS_NOTES.md). One fixed choice for every system therefore favours some
systems; choosing per system on dev, never on test, is fair to all. The choice is made on the system's first task
with a dev set (ASR dev WER, else SV dev EER; AT has no dev set) and recorded in its results.json, where
``--use-averaged-model dev`` (export, streaming evaluation) reads it back.
"""

import json
import logging
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from mt2kd_lib.training.checkpoint import find_checkpoints
from mt2kd_lib.training.model_avg import has_model_avg

WEIGHTS = {True: "mean", False: "last"}


def last_epoch_has_model_avg(exp_dir: Path) -> bool:
    """Whether the last epoch checkpoint of ``exp_dir`` carries model_avg (trained with --average-period > 0)."""
    found = find_checkpoints(exp_dir, "epoch")
    return bool(found) and has_model_avg(torch.load(found[0], map_location="cpu", weights_only=False))


def dev_error(results: dict) -> Optional[Tuple[str, float]]:
    """(what, value) the weights are chosen by, from a results.json fragment: the mean ASR dev WER if there is one,
    else the mean SV dev EER; None when the system has neither."""
    for task, key, what in (("asr", "wer_dev", "ASR dev WER"), ("sv", "eer_dev", "SV dev EER")):
        values = list(results.get(task, {}).get(key, {}).values())
        if values:
            return what, sum(values) / len(values)
    return None


def choose_on_dev(evaluate_dev: Callable[[bool], dict], default: bool) -> Tuple[bool, Dict]:
    """``evaluate_dev(use_averaged_model)`` -> results fragment of the dev sets. Returns the chosen
    ``use_averaged_model`` (the lower dev error; ``default`` on a tie or without dev sets) and the record of the
    choice for results.json."""
    errors = {default: dev_error(evaluate_dev(default))}
    if errors[default] is not None:  # a system without dev sets is not evaluated a second time
        errors[not default] = dev_error(evaluate_dev(not default))
    if errors[default] is None or errors[not default] is None:
        return default, {"chosen": WEIGHTS[default], "by": "no dev set: --use-averaged-model"}
    what = errors[default][0]
    chosen = (not default) if errors[not default][1] < errors[default][1] else default
    record = {"chosen": WEIGHTS[chosen], "by": what, **{WEIGHTS[f]: e[1] for f, e in errors.items()}}
    logging.info(f"weights chosen on dev: {record}")
    return chosen, record


def chosen_weights(exp_dir: Path) -> bool:
    """The ``use_averaged_model`` stage 9 chose on dev for the system in ``exp_dir`` (its results.json)."""
    path = Path(exp_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: --use-averaged-model dev needs the weights chosen on dev by "
                                "local/evaluate_all.py --choose-weights-on-dev true (run.sh stage 9); pass true or false")
    res = json.loads(path.read_text())
    if "weights" not in res:
        raise ValueError(f"{path}: evaluated without --choose-weights-on-dev, so no weights were chosen on dev; "
                         "pass --use-averaged-model true or false")
    return res["weights"]["chosen"] == WEIGHTS[True]


def resolve_use_averaged_model(exp_dir: Path, option: Union[bool, str]) -> bool:
    """A ``--use-averaged-model`` value (true, false or ``dev``) as the flag to load the model with."""
    return chosen_weights(exp_dir) if option == "dev" else bool(option)
