"""LibriSpeech (openslr 12) -> ASR CutSets, one per part, transcripts kept upper case.

Official layout::

    <root>/LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <root>/LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   ("<utt-id> WORDS ...")

``<root>`` may also be the ``LibriSpeech`` folder itself. Cut ids are the utterance ids (``103-1240-0000``).
Lines are parsed with lhotse's own ``lhotse.recipes.librispeech.parse_utterance``; we drive the loop ourselves
because lhotse's ``prepare_librispeech`` aborts the whole part on a transcript line without words — here such
lines, and lines whose flac is missing, are skipped with a logged count.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH, parse_utterance
from tqdm.auto import tqdm

from mt2kd_lib.data.corpora.scan import whole_cut

TRAIN_960 = ("train-clean-100", "train-clean-360", "train-other-500")
DEV_PARTS = ("dev-clean", "dev-other")
TEST_PARTS = ("test-clean", "test-other")


def find_librispeech_dir(root: Union[str, Path]) -> Path:
    """Accept ``<root>`` or ``<root>/LibriSpeech``; return the folder that holds the parts."""
    root = Path(root)
    if (root / "LibriSpeech").is_dir():
        return root / "LibriSpeech"
    if root.is_dir():
        return root
    raise FileNotFoundError(f"LibriSpeech directory not found: {root}")


def _read_transcripts(part_dir: Path) -> Tuple[List[str], List[str]]:
    """All ``trans.txt`` lines of a part (sorted for determinism) and the ids of lines without words."""
    lines, empty = [], []
    for trans in sorted(part_dir.rglob("*.trans.txt")):
        for raw in trans.read_text().splitlines():
            parts = raw.split(maxsplit=1)
            if not parts:
                continue
            if len(parts) < 2 or not parts[1].strip():
                empty.append(f"{parts[0]} ({trans.name})")
                continue
            # Collapse runs of spaces: the contract wants words separated by single spaces.
            lines.append(f"{parts[0]} {' '.join(parts[1].split())}")
    return lines, empty


def _parse(part_dir: Path, line: str) -> Union[Tuple[Recording, SupervisionSegment], str]:
    """lhotse's parser on one line; a reason string instead of an exception for missing/corrupt audio."""
    utt = line.split()[0]
    try:
        result = parse_utterance(part_dir, line, {})
    except Exception as e:  # corrupt flac: the backend's error type varies
        return f"{utt} (unreadable: {type(e).__name__})"
    return f"{utt} (missing flac)" if result is None else result


def prepare_librispeech_part(corpus_dir: Union[str, Path], part: str, num_jobs: int = 1) -> CutSet:
    """One LibriSpeech (or mini_librispeech) part (e.g. ``dev-clean``) as a CutSet of whole-utterance cuts with text and speaker."""
    if part not in LIBRISPEECH + MINI_LIBRISPEECH:
        raise ValueError(f"unknown LibriSpeech part {part!r}; expected one of {LIBRISPEECH + MINI_LIBRISPEECH}")
    part_dir = find_librispeech_dir(corpus_dir) / part
    if not part_dir.is_dir():
        raise FileNotFoundError(f"LibriSpeech part {part!r} not found: {part_dir}")
    lines, empty = _read_transcripts(part_dir)
    if empty:
        logging.warning(f"librispeech/{part}: skipped {len(empty)} transcript lines without words; e.g. {empty[:3]}")
    with ThreadPoolExecutor(max(1, num_jobs)) as ex:
        results = list(tqdm(ex.map(lambda line: _parse(part_dir, line), lines), total=len(lines),
                            desc=f"librispeech/{part}", leave=False))
    found = [r for r in results if not isinstance(r, str)]
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        logging.warning(f"librispeech/{part}: skipped {len(failed)} utterances without usable audio; e.g. {failed[:3]}")
    if not found:
        raise RuntimeError(f"librispeech/{part}: no usable utterances in {part_dir}")
    # parse_utterance makes one supervision spanning each recording, so cuts can be built pairwise.
    return CutSet.from_cuts(whole_cut(rec, sup) for rec, sup in found)


def prepare_librispeech_cuts(
    corpus_dir: Union[str, Path], parts: Optional[Sequence[str]] = None, num_jobs: int = 1
) -> Dict[str, CutSet]:
    """``{part: CutSet}`` for ``parts`` (default: every official part present under ``corpus_dir``)."""
    base = find_librispeech_dir(corpus_dir)
    if parts is None:
        parts = [p for p in LIBRISPEECH if (base / p).is_dir()]
        if not parts:
            raise FileNotFoundError(f"no LibriSpeech parts ({', '.join(LIBRISPEECH)}) under {base}")
    return {p: prepare_librispeech_part(base, p, num_jobs) for p in parts}
