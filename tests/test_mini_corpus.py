"""The embedded corpus: the contract holds, speakers/sentences are held out, trials are balanced, determinism."""

import filecmp
from collections import Counter

import numpy as np
import pytest
from lhotse import CutSet

from mt2kd_lib.data import contract
from mt2kd_lib.data.mini.config import MiniConfig
from mt2kd_lib.data.mini.events import CLASS_NAMES
from mt2kd_lib.data.mini.prepare import make_trials, plan_corpus, prepare_mini
from mt2kd_lib.data.mini.speakers import draw_speakers

from conftest import TINY_CORPUS


def _cuts(data, task, split):
    return CutSet.from_file(contract.cuts_path(data / "manifests", task, split))


def test_contract_holds_with_expected_counts(tiny_recipe):
    cfg = MiniConfig.from_yaml(TINY_CORPUS)
    report = contract.check_contract(tiny_recipe["data"] / "manifests")
    assert report.ok, report.problems
    c = report.counts
    assert c["asr_cuts_train.jsonl.gz"] == cfg.asr_train
    assert c["asr_cuts_test.jsonl.gz"] == cfg.asr_test
    assert c["sv_cuts_train.jsonl.gz"] == cfg.sv_utts_per_train_speaker * cfg.num_train_speakers
    assert c["sv_cuts_teacher_extra.jsonl.gz"] == cfg.sv_teacher_extra_utts_per_train_speaker * cfg.num_train_speakers
    assert c["at_cuts_eval.jsonl.gz"] == cfg.at_eval
    assert c["sv_trials_O.txt"] == cfg.sv_trials
    assert c["sv_cuts_dev.jsonl.gz"] == cfg.sv_utts_per_test_speaker * cfg.num_sv_dev_speakers
    assert c["sv_trials_dev.txt"] == cfg.sv_dev_trials
    n_train = cfg.asr_train + cfg.at_train + cfg.sv_utts_per_train_speaker * cfg.num_train_speakers
    assert c["kd_cuts_pool.jsonl.gz"] == n_train


def test_held_out_speakers_and_sentences(tiny_recipe):
    data = tiny_recipe["data"]
    spk = lambda cs: {c.supervisions[0].speaker for c in cs}  # noqa: E731
    text = lambda cs: {c.supervisions[0].text for c in cs}  # noqa: E731
    train = _cuts(data, "asr", "train")
    for split in ("dev", "test"):
        held = _cuts(data, "asr", split)
        assert not spk(train) & spk(held)
        assert not text(train) & text(held)
    assert not spk(_cuts(data, "sv", "train")) & spk(_cuts(data, "sv", "test"))
    sv_dev = spk(_cuts(data, "sv", "dev"))
    for task, split in (("sv", "train"), ("sv", "test"), ("asr", "train"), ("asr", "dev"), ("asr", "test")):
        assert not sv_dev & spk(_cuts(data, task, split)), (task, split)
    for c in train:
        t = c.supervisions[0].text
        assert t == t.upper() and "  " not in t and t.strip() == t


@pytest.mark.parametrize("trials_name, split", [("O", "test"), ("dev", "dev")])
def test_trials_balanced_and_correct(tiny_recipe, trials_name, split):
    data = tiny_recipe["data"]
    test = {c.id: c.supervisions[0].speaker for c in _cuts(data, "sv", split)}
    trials = contract.read_trials(contract.trials_path(data / "manifests", trials_name))
    labels = Counter(t[0] for t in trials)
    assert labels[1] == labels[0] == len(trials) // 2
    for label, a, b in trials:
        assert a != b
        assert label == int(test[a] == test[b])
    assert len({tuple(sorted((a, b))) for _, a, b in trials}) == len(trials)


def test_at_labels_multi_hot(tiny_recipe):
    data = tiny_recipe["data"]
    rows = contract.read_class_labels(data / "manifests")
    assert [r[2] for r in rows] == CLASS_NAMES and len(rows) >= 10
    cfg = MiniConfig.from_yaml(TINY_CORPUS)
    for c in _cuts(data, "at", "train"):
        labels = contract.parse_audio_event(c.supervisions[0].custom["audio_event"], len(rows), c.id)
        assert 1 <= len(labels) <= cfg.at_max_events and len(set(labels)) == len(labels)
        assert abs(c.duration - cfg.at_clip_seconds) < 1e-6


def test_kd_pool_is_unlabelled_union(tiny_recipe):
    pool = _cuts(tiny_recipe["data"], "kd", "pool")
    origins = Counter(c.custom["origin"] for c in pool)
    assert set(origins) == {"asr", "at", "sv"}
    assert all(not c.supervisions for c in pool)


def test_generation_is_deterministic(tmp_path):
    cfg = MiniConfig(num_train_speakers=3, num_dev_speakers=1, num_test_speakers=2, asr_train=4,
                     asr_teacher_extra=0, asr_dev=1, asr_test=2, sv_utts_per_train_speaker=1,
                     sv_teacher_extra_utts_per_train_speaker=0, sv_utts_per_test_speaker=2, sv_trials=4,
                     at_train=3, at_teacher_extra=0, at_eval=2,
                     at_clip_seconds=1.0, num_sv_dev_speakers=0)
    a = prepare_mini(cfg, tmp_path / "a", num_jobs=1)
    b = prepare_mini(cfg, tmp_path / "b", num_jobs=2)
    for key in ("asr_train", "at_eval", "sv_test"):
        assert [c.id for c in a[key]] == [c.id for c in b[key]]
        for ca, cb in zip(a[key], b[key]):
            assert ca.supervisions[0].text == cb.supervisions[0].text
            assert ca.supervisions[0].custom == cb.supervisions[0].custom
            assert filecmp.cmp(ca.recording.sources[0].source, cb.recording.sources[0].source, shallow=False)


def test_sv_dev_split_leaves_the_other_splits_as_they_were(tmp_path):
    """SV dev speakers and sentences are drawn after all others: with or without them, every other item (id,
    speaker, text, seed) is the same, and their sentences are none of the training or test ones."""
    with_dev, groups = plan_corpus(MiniConfig(), tmp_path)
    without, _ = plan_corpus(MiniConfig(num_sv_dev_speakers=0), tmp_path)
    key = lambda it: (it.id, it.speaker, it.text, it.seed, it.clip_seconds)  # noqa: E731
    same = lambda items: [key(it) for it in items  # noqa: E731
                          if it.task != "sv" or it.split not in ("dev", "teacher_extra")]
    assert same(with_dev) == same(without)
    dev = [it for it in with_dev if (it.task, it.split) == ("sv", "dev")]
    assert len(dev) == MiniConfig().sv_utts_per_test_speaker * MiniConfig().num_sv_dev_speakers
    assert {it.speaker for it in dev} == set(groups["sv_dev"])
    others = {it.text for it in without if it.text}
    assert not {it.text for it in dev} & others


def test_sv_teacher_extra_split_leaves_the_other_splits_as_they_were(tmp_path):
    """The SV teacher's extra utterances come from their own random stream: every other item is the same with or
    without them; they are of the training speakers, in sentences that are in no dev or test split."""
    with_extra, groups = plan_corpus(MiniConfig(), tmp_path)
    without, _ = plan_corpus(MiniConfig(sv_teacher_extra_utts_per_train_speaker=0), tmp_path)
    key = lambda it: (it.id, it.speaker, it.text, it.seed, it.clip_seconds)  # noqa: E731
    extra = [it for it in with_extra if (it.task, it.split) == ("sv", "teacher_extra")]
    assert [key(it) for it in with_extra if it not in extra] == [key(it) for it in without]
    assert len(extra) == MiniConfig().sv_teacher_extra_utts_per_train_speaker * MiniConfig().num_train_speakers
    assert {it.speaker for it in extra} == set(groups["train"])
    held_out = {it.text for it in without if it.split in ("dev", "test")}
    assert not {it.text for it in extra} & held_out


def test_speakers_distinct_and_trials_need_two_speakers():
    spk = draw_speakers(1, 150)
    assert len({(s.engine, s.voice, s.variant, s.rate_factor) for s in spk}) == 150
    assert sum(s.engine == "flite" for s in spk) >= 10
    one = CutSet.from_cuts([])
    with pytest.raises(ValueError):
        make_trials(one, 4, 0)


def test_config_rejects_unknown_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("asr_trian: 3\n")
    with pytest.raises(ValueError, match="asr_trian"):
        MiniConfig.from_yaml(p)
