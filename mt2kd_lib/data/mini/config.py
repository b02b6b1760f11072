"""Sizes and seed of the synthetic corpus, read from a yaml file (egs/mini/conf/*.yaml)."""

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Union

import yaml


@dataclass
class MiniConfig:
    seed: int = 1234
    # Speakers (synthetic voice configurations); the four groups are disjoint. SV dev speakers are drawn after
    # the others, so adding them (0: no SV dev split) leaves every other split as it was.
    num_train_speakers: int = 120
    num_dev_speakers: int = 10
    num_test_speakers: int = 24
    num_sv_dev_speakers: int = 24
    # ASR utterances per split; teacher_extra is labelled data only the teachers see.
    asr_train: int = 1500
    asr_teacher_extra: int = 1500
    asr_dev: int = 150
    asr_test: int = 300
    min_words: int = 4
    max_words: int = 11
    # SV: utterances per training speaker / per test (and SV dev) speaker, and the number of trials (half
    # target) of the test list and of the dev list.
    sv_utts_per_train_speaker: int = 10
    # More utterances of the same training speakers that only the SV teacher sees (as the ASR/AT teacher_extra
    # splits): a recipe-trained SV teacher then knows more than the single-task SV student.
    sv_teacher_extra_utts_per_train_speaker: int = 10
    sv_utts_per_test_speaker: int = 8
    sv_trials: int = 2000
    sv_dev_trials: int = 2000
    # AT: clips per split, clip length and events per clip.
    at_train: int = 1000
    at_teacher_extra: int = 1000
    at_eval: int = 300
    at_clip_seconds: float = 4.0
    at_max_events: int = 3

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "MiniConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)
