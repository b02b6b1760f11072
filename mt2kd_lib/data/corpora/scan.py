"""Shared helper: read audio headers of many files in parallel, skipping (and reporting) unreadable ones."""

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from lhotse import MonoCut, Recording, SupervisionSegment
from tqdm.auto import tqdm


def _recording_or_error(item: Tuple[str, Path]) -> Tuple[str, object]:
    rec_id, path = item
    try:
        return rec_id, Recording.from_file(path, recording_id=rec_id)
    except Exception as e:  # lhotse raises many types depending on the audio backend
        return rec_id, f"{path}: {type(e).__name__}: {e}"


def recordings_from_files(
    items: Sequence[Tuple[str, Path]], num_jobs: int, what: str, max_examples: int = 3
) -> List[Recording]:
    """``[(recording_id, path)]`` -> Recordings (input order), logging unreadable files with a count.

    Header reads are I/O bound, so threads (``num_jobs``) are enough. Raises RuntimeError when files were given but
    none could be read (usually a missing audio backend, e.g. ffmpeg for VoxCeleb2's m4a).
    """
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    with ThreadPoolExecutor(num_jobs) as ex:
        results = list(tqdm(ex.map(_recording_or_error, items), total=len(items), desc=what, leave=False))
    recordings = [r for _, r in results if isinstance(r, Recording)]
    failed = [r for _, r in results if not isinstance(r, Recording)]
    if failed:
        logging.warning(f"{what}: skipped {len(failed)} unreadable audio files; e.g. {' | '.join(failed[:max_examples])}")
    if items and not recordings:
        raise RuntimeError(
            f"{what}: none of {len(items)} audio files could be read (e.g. {failed[0]}); "
            "m4a needs an ffmpeg-enabled audio backend — or convert to wav"
        )
    return recordings


def whole_cut(recording: Recording, supervision: Optional[SupervisionSegment] = None) -> MonoCut:
    """A cut spanning the whole recording, with the recording's id as cut id (lhotse's ``from_manifests`` would
    append a position index, which makes ids depend on file order). Multi-channel files use channel 0."""
    return MonoCut(
        id=recording.id,
        start=0.0,
        duration=recording.duration,
        channel=recording.channel_ids[0],
        recording=recording,
        supervisions=[supervision] if supervision is not None else [],
    )
