"""Checks every cut a prepare step is about to write, so bad input never turns into a silently wrong manifest.

Problems are either repaired (a wrong sampling rate is resampled to 16 kHz, with a logged count) or the cut is
dropped with a logged count that names examples. Nothing raises a bare traceback for one bad file.
"""

import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import soundfile as sf
from lhotse import CutSet
from lhotse.cut import Cut

from mt2kd_lib.data.contract import SAMPLING_RATE


def _last_sample_readable(path: Path, num_samples: int) -> bool:
    """Seek to the last sample the manifest promises and read it: a file cut short (an interrupted copy or
    download) fails here, while its header still claims the full length. A seek, not a decode: cheap for flac too."""
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(max(num_samples - 1, 0))
            return len(f.read(1)) == 1
    except Exception:  # soundfile raises LibsndfileError / RuntimeError / ValueError depending on the format
        return False


def _audio_problem(cut: Cut) -> Optional[Tuple[str, str]]:
    """(reason, detail) when the cut's audio cannot be used, else None. Reads file headers only (cheap on big corpora)."""
    rec = cut.recording
    if rec is None:
        return "no recording", cut.id
    for src in rec.sources:
        if src.type != "file":
            continue
        path = Path(src.source)
        if not path.is_file():
            return "missing audio file", str(path)
        try:
            info = sf.info(str(path))
        except Exception as e:  # soundfile raises several types for corrupt files
            # Formats soundfile cannot parse (e.g. m4a) are left to lhotse's own backends.
            if path.suffix.lower() in (".wav", ".flac", ".ogg"):
                return "unreadable audio file", f"{path}: {type(e).__name__}"
            continue
        if info.frames == 0:
            return "zero-length audio", str(path)
        if not _last_sample_readable(path, rec.num_samples if rec.sampling_rate == info.samplerate else info.frames):
            return "truncated audio file", str(path)
    if rec.num_samples == 0 or cut.duration <= 0:
        return "zero-length audio", cut.id
    return None


def _label_problem(cut: Cut, task: str) -> Optional[Tuple[str, str]]:
    if task not in ("asr", "at", "sv"):
        return None
    if len(cut.supervisions) != 1:
        return "not exactly one supervision", f"{len(cut.supervisions)} supervisions"
    sup = cut.supervisions[0]
    if task == "asr":
        text = (sup.text or "").strip()
        if not text:
            return "empty transcript", repr(sup.text)
        if not any(c.isalpha() for c in text):
            return "non-text transcript", repr(text)
    if task == "sv" and not sup.speaker:
        return "no speaker label", sup.id
    if task == "at" and not (sup.custom or {}).get("audio_event"):
        return "no audio_event labels", sup.id
    return None


def sanitize_cuts(cuts: CutSet, task: str, source: str, max_examples: int = 3) -> CutSet:
    """Return the usable cuts of ``cuts`` (eager), resampled to 16 kHz where needed.

    ``task`` is ``asr``/``at``/``sv``/``kd`` (label checks follow the manifest contract); ``source`` names the
    corpus split in log lines. Dropped cuts are logged by reason with a few example ids.
    """
    kept: List[Cut] = []
    dropped: Dict[str, List[str]] = defaultdict(list)  # reason kind -> "cut_id (detail)"
    resampled: Dict[int, int] = defaultdict(int)
    for cut in cuts:
        why = _audio_problem(cut) or _label_problem(cut, task)
        if why is not None:
            kind, detail = why
            dropped[kind].append(f"{cut.id} ({detail})")
            continue
        if cut.sampling_rate != SAMPLING_RATE:
            resampled[cut.sampling_rate] += 1
            cut = cut.resample(SAMPLING_RATE)
        kept.append(cut)
    for sr, n in sorted(resampled.items()):
        logging.warning(f"{source}: resampled {n} cuts from {sr} Hz to {SAMPLING_RATE} Hz")
    n_dropped = sum(len(v) for v in dropped.values())
    for kind, items in dropped.items():
        logging.warning(f"{source}: dropped {len(items)} cuts: {kind}; e.g. {'; '.join(items[:max_examples])}")
    logging.info(f"{source}: kept {len(kept)} of {len(kept) + n_dropped} cuts")
    if not kept:
        raise ValueError(f"{source}: no usable cuts left after checks ({n_dropped} dropped); see the log above")
    return CutSet.from_cuts(kept)
