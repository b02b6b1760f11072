"""MUSAN (openslr 17) -> one CutSet of noise/music/babble recordings for on-the-fly noise mixing.

Official layout: ``<root>/musan/{music,noise,speech}/<source>/<file>.wav`` (+ ``ANNOTATIONS`` files); ``<root>`` may
also be the ``musan`` folder itself. Recordings come from lhotse's ``prepare_musan``; cuts carry no supervision
(like icefall's ``musan_cuts.jsonl.gz``) and the custom field ``musan_part`` (music/noise/speech) so that a
mixer can pick a part. Cut ids are the file stems (``noise-free-sound-0000``), unique in the official release.
"""

from pathlib import Path
from typing import Sequence, Union

from lhotse import CutSet
from lhotse.recipes.musan import prepare_musan

from mt2kd_lib.data.corpora.scan import whole_cut

MUSAN_PARTS = ("music", "noise", "speech")


def find_musan_dir(root: Union[str, Path]) -> Path:
    """Accept ``<root>`` or ``<root>/musan``."""
    root = Path(root)
    if (root / "musan").is_dir():
        return root / "musan"
    if root.is_dir():
        return root
    raise FileNotFoundError(f"MUSAN directory not found: {root}")


def prepare_musan_cuts(root: Union[str, Path], parts: Sequence[str] = MUSAN_PARTS) -> CutSet:
    """All recordings of ``parts`` as whole-file cuts (no supervisions), with custom ``musan_part``."""
    bad = [p for p in parts if p not in MUSAN_PARTS]
    if bad or not parts:
        raise ValueError(f"MUSAN parts must be a non-empty subset of {MUSAN_PARTS}, got {list(parts)}")
    corpus = find_musan_dir(root)
    for part in parts:
        if not (corpus / part).is_dir():
            raise FileNotFoundError(f"MUSAN part {part!r} not found: {corpus / part}")
    manifests = prepare_musan(corpus, parts=list(parts))
    cuts, seen = [], set()
    for part in parts:
        for rec in manifests[part]["recordings"]:
            if rec.id in seen:
                raise ValueError(f"MUSAN: recording id {rec.id} appears twice")
            seen.add(rec.id)
            cut = whole_cut(rec)
            cut.custom = {"musan_part": part}
            cuts.append(cut)
    if not cuts:
        raise RuntimeError(f"MUSAN: no wav files under {corpus} for parts {list(parts)}")
    return CutSet.from_cuts(cuts)
