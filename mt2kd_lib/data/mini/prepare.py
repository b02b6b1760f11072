"""Generate egs/mini (audio + manifests following mt2kd_lib.data.contract) from a MiniConfig.

Audio files are written to a temporary name and renamed, so an interrupted run leaves only complete files and
a re-run renders only what is missing.
"""

import copy
import csv
import logging
import os
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from tqdm import tqdm

from mt2kd_lib.data import contract
from mt2kd_lib.data.mini import events, text
from mt2kd_lib.data.mini.config import MiniConfig
from mt2kd_lib.data.mini.speakers import Speaker, draw_speakers
from mt2kd_lib.data.mini.tts import synthesize
from mt2kd_lib.data.sanitize import sanitize_cuts

INDEX = {
    "asr": {"train": "train", "dev": ["dev"], "test": ["test"]},
    "at": {"train": "train", "eval": ["eval"]},
    "sv": {"train": "train", "test": "test", "trials": ["O"]},
    "kd": {"pool": "pool"},
    "teacher_extra": {"asr": ["teacher_extra"], "at": ["teacher_extra"], "sv": ["teacher_extra"]},
}


@dataclass
class Item:
    """One audio file to render: a spoken sentence, or an AT clip (speaker pool used for its speech events)."""

    id: str
    task: str
    split: str
    path: str
    seed: Tuple[int, ...]
    text: str = ""
    speaker: Optional[Speaker] = None
    speech_speakers: List[Speaker] = field(default_factory=list)
    clip_seconds: float = 4.0
    max_events: int = 3


def _speech_event(item: Item, cfg_words=(3, 6)):
    def speak(rng: np.random.Generator) -> np.ndarray:
        spk = item.speech_speakers[int(rng.integers(len(item.speech_speakers)))]
        return synthesize(text.sentence(rng, *cfg_words), spk)

    return speak


def render(item: Item) -> Tuple[str, int, List[int]]:
    """Write the item's audio if missing; return (id, num_samples, labels)."""
    path = Path(item.path)
    rng = np.random.default_rng(list(item.seed))
    # AT labels are a function of the seed alone, so they are known without re-rendering an existing file.
    labels = events.draw_labels(rng, item.max_events) if item.task == "at" else []
    if path.is_file():
        return item.id, sf.info(str(path)).frames, labels
    if item.task == "at":
        audio = events.render_clip(rng, labels, item.clip_seconds, _speech_event(item))
    else:
        audio = synthesize(item.text, item.speaker)
        audio = audio * float(10 ** (rng.uniform(-6, 0) / 20))  # level varies per utterance
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.wav")
    sf.write(str(tmp), audio, events.SR, subtype="PCM_16")
    tmp.replace(path)
    return item.id, audio.shape[0], labels


def plan_corpus(cfg: MiniConfig, audio_dir: Path) -> Tuple[List[Item], Dict[str, List[Speaker]]]:
    n_tr, n_dev, n_te = cfg.num_train_speakers, cfg.num_dev_speakers, cfg.num_test_speakers
    n_svd = cfg.num_sv_dev_speakers
    spk = draw_speakers(cfg.seed, n_tr + n_dev + n_te + n_svd)
    groups = {"train": spk[:n_tr], "dev": spk[n_tr : n_tr + n_dev], "test": spk[n_tr + n_dev : n_tr + n_dev + n_te],
              "sv_dev": spk[n_tr + n_dev + n_te :]}
    rng = np.random.default_rng([cfg.seed, 1])
    held_out = text.sentences(rng, cfg.asr_dev + cfg.asr_test, cfg.min_words, cfg.max_words, exclude=set())
    n_train_sents = cfg.asr_train + cfg.asr_teacher_extra + cfg.sv_utts_per_train_speaker * n_tr
    train_sents = text.sentences(rng, n_train_sents, cfg.min_words, cfg.max_words, exclude=set(held_out))
    test_sents = held_out[cfg.asr_dev :] + text.sentences(
        rng, cfg.sv_utts_per_test_speaker * n_te, cfg.min_words, cfg.max_words, exclude=set(train_sents)
    )
    # Drawn last, so that the sentences above do not depend on the SV dev split's size.
    sv_dev_sents = text.sentences(rng, cfg.sv_utts_per_test_speaker * n_svd, cfg.min_words, cfg.max_words,
                                  exclude=set(train_sents) | set(held_out) | set(test_sents))
    # Their own random stream, drawn after the others: the SV teacher's extra data changes no other split.
    n_sv_extra = cfg.sv_teacher_extra_utts_per_train_speaker * n_tr
    sv_extra_sents = text.sentences(np.random.default_rng([cfg.seed, 2]), n_sv_extra, cfg.min_words, cfg.max_words,
                                    exclude=set(held_out) | set(test_sents) | set(sv_dev_sents))
    items: List[Item] = []

    def speech(task: str, split: str, n: int, speakers: List[Speaker], sents: List[str], code: int) -> None:
        for i in range(n):
            s = speakers[i % len(speakers)]
            uid = f"{task}-{split}-{s.id}-{i:05d}"
            items.append(Item(uid, task, split, str(audio_dir / task / split / f"{uid}.wav"), (cfg.seed, code, i),
                              text=sents[i], speaker=s))

    speech("asr", "train", cfg.asr_train, groups["train"], train_sents, 10)
    speech("asr", "teacher_extra", cfg.asr_teacher_extra, groups["train"], train_sents[cfg.asr_train :], 11)
    speech("asr", "dev", cfg.asr_dev, groups["dev"], held_out[: cfg.asr_dev], 12)
    speech("asr", "test", cfg.asr_test, groups["test"], held_out[cfg.asr_dev :], 13)
    off = cfg.asr_train + cfg.asr_teacher_extra
    speech("sv", "train", cfg.sv_utts_per_train_speaker * n_tr, groups["train"], train_sents[off:], 20)
    speech("sv", "test", cfg.sv_utts_per_test_speaker * n_te, groups["test"], test_sents[cfg.asr_test :], 21)
    speech("sv", "dev", cfg.sv_utts_per_test_speaker * n_svd, groups["sv_dev"], sv_dev_sents, 22)
    speech("sv", "teacher_extra", n_sv_extra, groups["train"], sv_extra_sents, 23)
    for split, n, code, pool in (
        ("train", cfg.at_train, 30, groups["train"]),
        ("teacher_extra", cfg.at_teacher_extra, 31, groups["train"]),
        ("eval", cfg.at_eval, 32, groups["test"]),
    ):
        for i in range(n):
            uid = f"at-{split}-{i:05d}"
            items.append(Item(uid, "at", split, str(audio_dir / "at" / split / f"{uid}.wav"), (cfg.seed, code, i),
                              speech_speakers=pool, clip_seconds=cfg.at_clip_seconds, max_events=cfg.at_max_events))
    return items, groups


def _cuts(items: List[Item], rendered: Dict[str, Tuple[int, List[int]]]) -> CutSet:
    cuts = []
    for it in items:
        n, labels = rendered[it.id]
        dur = n / events.SR
        rec = (Recording(id=it.id, sources=[AudioSource(type="file", channels=[0], source=it.path)],
                              sampling_rate=events.SR, num_samples=n, duration=dur))
        custom = {"audio_event": ";".join(map(str, labels))} if it.task == "at" else None
        sup = SupervisionSegment(
            id=it.id, recording_id=it.id, start=0.0, duration=dur, channel=0, language="English",
            text=it.text.upper() if it.text and it.task == "asr" else None,
            speaker=it.speaker.id if it.speaker else None, custom=custom)
        cuts.append(MonoCut(id=it.id, start=0.0, duration=dur, channel=0, recording=rec, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


def make_trials(cuts: CutSet, n: int, seed: int, stream: int = 40) -> List[Tuple[int, str, str]]:
    """``n`` distinct trials, half target (same speaker) and half non-target, over the cuts' speakers
    (``stream``: the random stream, one per trial list)."""
    by_spk: Dict[str, List[str]] = {}
    for c in cuts:
        by_spk.setdefault(c.supervisions[0].speaker, []).append(c.id)
    speakers = sorted(by_spk)
    if len(speakers) < 2 or max(len(v) for v in by_spk.values()) < 2:
        raise ValueError("trials need at least 2 speakers and a speaker with 2 utterances")
    rng = np.random.default_rng([seed, stream])
    seen, trials = set(), []
    for want_target in [1] * (n // 2) + [0] * (n - n // 2):
        for _ in range(1000):
            a = speakers[int(rng.integers(len(speakers)))]
            b = a if want_target else speakers[int(rng.integers(len(speakers)))]
            if (want_target and len(by_spk[a]) < 2) or (not want_target and a == b):
                continue
            u1, u2 = rng.choice(by_spk[a]), rng.choice(by_spk[b])
            key = tuple(sorted((str(u1), str(u2))))
            if u1 != u2 and key not in seen:
                seen.add(key)
                trials.append((want_target, str(u1), str(u2)))
                break
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def prepare_mini(cfg: MiniConfig, out_dir: Path, num_jobs: int = 1) -> Dict[str, CutSet]:
    """Render the corpus under ``out_dir/audio`` and write the contract manifests to ``out_dir/manifests``."""
    out_dir = Path(out_dir).resolve()
    manifest_dir = out_dir / "manifests"
    manifest_dir.mkdir(parents=True, exist_ok=True)
    items, groups = plan_corpus(cfg, out_dir / "audio")
    todo = sum(not Path(it.path).is_file() for it in items)
    logging.info(f"egs/mini: {len(items)} audio files planned, {todo} to render with {num_jobs} jobs")
    rendered: Dict[str, Tuple[int, List[int]]] = {}
    with get_context("fork").Pool(num_jobs) if num_jobs > 1 else _Serial() as pool:
        for uid, n, labels in tqdm(pool.imap_unordered(render, items, chunksize=8), total=len(items),
                                   desc="synthesising egs/mini", mininterval=2):
            rendered[uid] = (n, labels)

    by_split: Dict[Tuple[str, str], List[Item]] = {}
    for it in items:
        by_split.setdefault((it.task, it.split), []).append(it)
    out: Dict[str, CutSet] = {}
    for (task, split), its in by_split.items():
        cuts = sanitize_cuts(_cuts(its, rendered), task, f"mini {task}/{split}")
        cuts.to_file(contract.cuts_path(manifest_dir, task, split))
        out[f"{task}_{split}"] = cuts

    pool_cuts = [c.drop_supervisions().with_custom("origin", t)
                 for t in ("asr", "at", "sv") for c in out[f"{t}_train"]]
    out["kd_pool"] = CutSet.from_cuts(pool_cuts)
    out["kd_pool"].to_file(contract.cuts_path(manifest_dir, "kd", "pool"))

    index = copy.deepcopy(INDEX)
    # A teacher_extra split sized 0 has no manifest, so the index does not name it.
    index["teacher_extra"] = {t: s for t, s in index["teacher_extra"].items() if f"{t}_teacher_extra" in out}
    lists = [("O", out["sv_test"], cfg.sv_trials, 40)]
    if "sv_dev" in out:
        index["sv"].update(dev="dev", dev_trials=["dev"])
        lists.append(("dev", out["sv_dev"], cfg.sv_dev_trials, 41))
    for name, cuts, n, stream in lists:
        trials = make_trials(cuts, n, cfg.seed, stream)
        with open(contract.trials_path(manifest_dir, name), "w") as f:
            f.writelines(f"{lab} {a} {b}\n" for lab, a, b in trials)
    with open(contract.class_labels_path(manifest_dir), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        for i, name in enumerate(events.CLASS_NAMES):
            w.writerow([i, events.EVENT_CLASSES[name][0], name])
    with open(manifest_dir / "speakers.tsv", "w") as f:
        for group, spks in groups.items():
            f.writelines(f"{s.id}\t{group}\t{s.description}\n" for s in spks)
    contract.write_index(manifest_dir, index)
    hours = {k: sum(c.duration for c in v) / 3600 for k, v in out.items()}
    for k, h in hours.items():
        logging.info(f"egs/mini {k}: {len(out[k])} cuts, {h:.2f} h")
    return out


class _Serial:
    """A stand-in for multiprocessing.Pool when num_jobs == 1 (same imap_unordered interface, no processes)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, fn, items, chunksize=1):
        return map(fn, items)
