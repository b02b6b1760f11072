"""Shared helper: read audio headers of many files in parallel, skipping (and reporting) unreadable ones.

AAC (VoxCeleb2's ``.m4a``, ``.aac``) is read through ffmpeg: lhotse 1.33 decodes it only with torchaudio or
torchcodec, which we do not install, and libsndfile cannot. Such a file becomes a Recording whose source is an
ffmpeg command (lhotse's ``command`` AudioSource) that writes 16-bit wav to stdout; the file is decoded once at
preparation time for its exact sample count, which also catches corrupt files early. ffmpeg comes from
``tools/install.sh`` (apt) or the system.
"""

import io
import logging
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import soundfile as sf
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from tqdm.auto import tqdm

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac")
FFMPEG_EXTENSIONS = (".m4a", ".aac")  # always through ffmpeg; others through lhotse first, ffmpeg when that fails


def ffmpeg_command(path: Path) -> str:
    """The shell command that decodes ``path`` (first audio stream, downmixed to mono) to wav on stdout."""
    return f"ffmpeg -nostdin -v error -threads 1 -i {shlex.quote(str(path))} -map 0:a:0 -ac 1 -f wav -acodec pcm_s16le -"


def ffmpeg_recording(path: Path, rec_id: str) -> Recording:
    """A Recording read through ffmpeg (see the module docs); raises RuntimeError naming the file on failure."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError(f"{path}: reading {path.suffix} needs ffmpeg, which is not installed "
                           "(apt-get install ffmpeg, or bash tools/install.sh)")
    cmd = ffmpeg_command(path)
    proc = subprocess.run(shlex.split(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"{path}: ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="int16")
    if len(audio) == 0:
        raise RuntimeError(f"{path}: ffmpeg decoded no samples")
    return Recording(id=rec_id, sources=[AudioSource(type="command", channels=[0], source=cmd)],
                     sampling_rate=sr, num_samples=len(audio), duration=len(audio) / sr)


def read_recording(path: Path, rec_id: str) -> Recording:
    """``path`` as a Recording: lhotse's backends, or ffmpeg for AAC and for compressed files lhotse cannot read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in FFMPEG_EXTENSIONS:
        return ffmpeg_recording(path, rec_id)
    try:
        return Recording.from_file(path, recording_id=rec_id)
    except Exception:
        if suffix in (".wav", ".flac") or shutil.which("ffmpeg") is None:
            raise
        return ffmpeg_recording(path, rec_id)


def _recording_or_error(item: Tuple[str, Path]) -> Tuple[str, object]:
    rec_id, path = item
    try:
        return rec_id, read_recording(path, rec_id)
    except Exception as e:  # lhotse raises many types depending on the audio backend
        return rec_id, f"{path}: {type(e).__name__}: {e}"


def recordings_from_files(
    items: Sequence[Tuple[str, Path]], num_jobs: int, what: str, max_examples: int = 3
) -> List[Recording]:
    """``[(recording_id, path)]`` -> Recordings (input order), logging unreadable files with a count.

    Header reads are I/O bound (and ffmpeg runs in its own process), so threads (``num_jobs``) are enough. Raises
    RuntimeError when files were given but none could be read (usually ffmpeg missing for VoxCeleb2's m4a).
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
            "m4a/aac need ffmpeg (apt-get install ffmpeg, or bash tools/install.sh) — or convert to wav"
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
