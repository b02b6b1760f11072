"""Choosing a student's weights (mean or last) on dev: the rule, its record, and reading it back."""

import argparse
import json

import pytest

from mt2kd_lib.evaluation.weights_choice import (choose_on_dev, chosen_weights, dev_error,
                                                 resolve_use_averaged_model)
from mt2kd_lib.training.launch import add_averaged_model_arg


def _asr_sv(wer_dev, eer_dev):
    return {"asr": {"wer": {}, "wer_dev": {"dev": wer_dev}}, "sv": {"eer_dev": {"dev": eer_dev}}}


def test_dev_error_is_asr_wer_first_then_sv_eer():
    assert dev_error(_asr_sv(30.0, 9.0)) == ("ASR dev WER", 30.0)
    assert dev_error({"asr": {"wer_dev": {"a": 10.0, "b": 20.0}}}) == ("ASR dev WER", 15.0)
    assert dev_error({"sv": {"eer": {"O": 5.0}, "eer_dev": {"dev": 12.0}}}) == ("SV dev EER", 12.0)
    assert dev_error({"at": {"mAP": 0.9}}) is None  # AT has no dev set
    assert dev_error({"asr": {"wer": {"test": 5.0}}}) is None  # test numbers are never used


def test_the_lower_dev_error_wins_and_ties_keep_the_default():
    calls = []

    def evaluate_dev(flag):
        calls.append(flag)
        return _asr_sv(5.0 if flag else 20.0, 30.0 if flag else 1.0)  # mean better on WER, worse on EER

    flag, record = choose_on_dev(evaluate_dev, default=False)
    assert flag is True and sorted(calls) == [False, True]
    assert record == {"chosen": "mean", "by": "ASR dev WER", "mean": 5.0, "last": 20.0}
    flag, record = choose_on_dev(lambda f: _asr_sv(7.0, 1.0), default=False)
    assert flag is False and record["chosen"] == "last"
    flag, _ = choose_on_dev(lambda f: _asr_sv(7.0, 1.0), default=True)
    assert flag is True
    flag, record = choose_on_dev(lambda f: {"at": {"mAP": 0.5}}, default=True)
    assert flag is True and record["by"].startswith("no dev set")


def test_dev_option_reads_the_recorded_choice(tmp_path):
    p = argparse.ArgumentParser()
    add_averaged_model_arg(p, allow_dev=True)
    assert p.parse_args(["--use-averaged-model", "dev"]).use_averaged_model == "dev"
    assert p.parse_args(["--use-averaged-model", "false"]).use_averaged_model is False
    strict = argparse.ArgumentParser()
    add_averaged_model_arg(strict)
    with pytest.raises(SystemExit):
        strict.parse_args(["--use-averaged-model", "dev"])

    with pytest.raises(FileNotFoundError, match="results.json"):
        resolve_use_averaged_model(tmp_path, "dev")
    (tmp_path / "results.json").write_text(json.dumps({"system": "x"}))
    with pytest.raises(ValueError, match="without --choose-weights-on-dev"):
        chosen_weights(tmp_path)
    for chosen, want in (("last", False), ("mean", True)):
        (tmp_path / "results.json").write_text(json.dumps({"weights": {"chosen": chosen}}))
        assert resolve_use_averaged_model(tmp_path, "dev") is want
    assert resolve_use_averaged_model(tmp_path, False) is False
