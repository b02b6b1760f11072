"""MUSAN (openslr 17) -> one CutSet of noise/music/babble recordings for on-the-fly noise mixing.

Official layout: ``<root>/musan/{music,noise,speech}/<source>/<file>.wav`` (+ ``ANNOTATIONS`` files); ``<root>`` may
also be the ``musan`` folder itself. Only the audio is read: the recordings are found by globbing each part for
audio files, and the ``ANNOTATIONS``/``LICENSE`` files are never opened (lhotse's ``prepare_musan`` parses them and
stops on a malformed line with a bare ``not enough values to unpack``, naming no file, although mixing needs none
of it). Cuts carry no supervision (like icefall's ``musan_cuts.jsonl.gz``) and the custom field ``musan_part``
(music/noise/speech) so that a mixer can pick a part. Cut ids are the file stems (``noise-free-sound-0000``),
unique in the official release; a repeated stem is an error naming both files.
"""

from pathlib import Path
from typing import Dict, Sequence, Union

from lhotse import CutSet

from mt2kd_lib.data.corpora.scan import AUDIO_EXTENSIONS, recordings_from_files, whole_cut

MUSAN_PARTS = ("music", "noise", "speech")


def find_musan_dir(root: Union[str, Path]) -> Path:
    """Accept ``<root>`` or ``<root>/musan``."""
    root = Path(root)
    if (root / "musan").is_dir():
        return root / "musan"
    if root.is_dir():
        return root
    raise FileNotFoundError(f"MUSAN directory not found: {root}")


def prepare_musan_cuts(root: Union[str, Path], parts: Sequence[str] = MUSAN_PARTS, num_jobs: int = 1) -> CutSet:
    """All recordings of ``parts`` as whole-file cuts (no supervisions), with custom ``musan_part``."""
    bad = [p for p in parts if p not in MUSAN_PARTS]
    if bad or not parts:
        raise ValueError(f"MUSAN parts must be a non-empty subset of {MUSAN_PARTS}, got {list(parts)}")
    corpus = find_musan_dir(root)
    for part in parts:
        if not (corpus / part).is_dir():
            raise FileNotFoundError(f"MUSAN part {part!r} not found: {corpus / part}")
    items, part_of, seen = [], {}, {}  # type: list, Dict[str, str], Dict[str, Path]
    for part in parts:
        for path in sorted((corpus / part).rglob("*")):
            if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
                continue
            if path.stem in seen:
                raise ValueError(f"MUSAN: recording id {path.stem} appears twice: {seen[path.stem]} and {path}")
            seen[path.stem] = path
            part_of[path.stem] = part
            items.append((path.stem, path))
    if not items:
        raise RuntimeError(f"MUSAN: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {corpus} for parts {list(parts)}")
    cuts = []
    for rec in recordings_from_files(items, num_jobs, "musan"):
        cut = whole_cut(rec)
        cut.custom = {"musan_part": part_of[rec.id]}
        cuts.append(cut)
    return CutSet.from_cuts(cuts)
