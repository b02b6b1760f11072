"""Lhotse Shar export/import: stream corpora that do not fit in memory (AudioSet full, VoxCeleb2) from shards.

A Shar directory holds ``cuts.NNNNNN.jsonl.gz`` plus one tar per field and shard (``recording.NNNNNN.tar`` with
flac/wav audio, ``features.NNNNNN.tar`` with lilcom/numpy arrays). Reading is sequential per shard, which is what
network or spinning-disk storage wants; shards can be shuffled and split across dataloader workers.
"""

import logging
import random
from pathlib import Path
from typing import Dict, List, Optional, Union

from lhotse import CutSet

AUDIO_FORMATS = ("flac", "wav", "mp3", "opus")
ARRAY_FORMATS = ("lilcom", "numpy")
DURATION_SAMPLE = 10000  # durations kept in pool.json (lhotse estimates its duration bins from 10,000 cuts too)


def default_fields(cuts: CutSet) -> Dict[str, str]:
    """``{"features": "lilcom"}`` when the first cut has features, else ``{"recording": "flac"}``."""
    first = next(iter(cuts), None)
    if first is None:
        raise ValueError("cannot export an empty CutSet to Shar")
    return {"features": "lilcom"} if first.has_features else {"recording": "flac"}


def export_shar(
    cuts: CutSet,
    output_dir: Union[str, Path],
    fields: Optional[Dict[str, str]] = None,
    shard_size: int = 1000,
    num_jobs: int = 1,
) -> Dict[str, List[str]]:
    """Write ``cuts`` as Shar shards under ``output_dir``; returns ``{field: [shard paths]}`` (incl. ``"cuts"``).

    ``fields`` maps ``recording``/``features`` (or custom array/audio fields) to a format: audio in
    ``flac``/``wav``/``mp3``/``opus``, arrays in ``lilcom``/``numpy``; default from :func:`default_fields`.
    Cuts whose data cannot be loaded raise (fail early rather than write incomplete shards).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    fields = dict(fields) if fields else default_fields(cuts)
    for name, fmt in fields.items():
        allowed = ARRAY_FORMATS if name == "features" else AUDIO_FORMATS if name == "recording" else AUDIO_FORMATS + ARRAY_FORMATS
        if fmt not in allowed:
            raise ValueError(f"Shar field {name!r}: format {fmt!r} not in {allowed}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = cuts.to_shar(output_dir, fields=fields, shard_size=shard_size, num_jobs=num_jobs)
    logging.info(f"wrote {len(paths.get('cuts', []))} Shar shards to {output_dir} with fields {fields}")
    return paths


def read_shar(
    in_dir: Union[str, Path],
    shuffle_shards: bool = False,
    seed: int = 42,
    split_for_dataloading: bool = False,
) -> CutSet:
    """A lazy CutSet over the shards in ``in_dir``; data (audio/features) is attached in memory as cuts stream.

    ``split_for_dataloading`` gives each dataloader worker/rank its own shards (use with ``IterableDatasetWrapper``).
    """
    in_dir = Path(in_dir)
    if not any(in_dir.glob("cuts.*.jsonl*")):
        raise FileNotFoundError(f"{in_dir}: no Shar shards (cuts.NNNNNN.jsonl.gz)")
    return CutSet.from_shar(in_dir=in_dir, shuffle_shards=shuffle_shards, seed=seed,
                            split_for_dataloading=split_for_dataloading)


def export_pool_shar(cuts: CutSet, output_dir: Union[str, Path], shard_size: int = 1000,
                     source: Optional[str] = None) -> Dict:
    """Write the KD pool once as Shar cut shards ``cuts.NNNNNN.jsonl.gz`` plus ``pool.json``; returns that info.

    Only the ``cuts`` field is written: each cut keeps its own features and recording references (lhotse's
    ``to_shar`` would reset ``start`` to 0, which breaks the audio of cuts inside longer recordings that the
    teachers read). The teachers' outputs are added next to these shards as Shar fields (data/teacher_shar.py).
    Streams ``cuts`` (lazy is fine); ``pool.json`` is written last, so an interrupted export has none and is redone.
    Cut ids must be unique within a shard (lhotse's Shar reader matches entries by position and checks ids).
    """
    from lhotse.shar.writers.cut import JsonlShardWriter

    from mt2kd_lib.data.teacher_shar import POOL_INFO, ShardedIdsFingerprint, pool_shard_path, write_json

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / POOL_INFO).unlink(missing_ok=True)
    for old in output_dir.glob("cuts.*.jsonl.gz"):
        old.unlink()
    fingerprint = ShardedIdsFingerprint(shard_size)
    num_cuts = 0
    # a uniform sample of the durations (reservoir, seeded): training's bucket boundaries without a pass over the pool
    rng = random.Random(0)
    durations: List[float] = []
    writer = JsonlShardWriter(str(output_dir / "cuts.%06d.jsonl.gz"), shard_size=shard_size)
    with writer:
        for cut in cuts:
            writer.write(cut)
            fingerprint.add(cut.id)
            num_cuts += 1
            if len(durations) < DURATION_SAMPLE:
                durations.append(round(float(cut.duration), 3))
            else:
                j = rng.randrange(num_cuts)
                if j < DURATION_SAMPLE:
                    durations[j] = round(float(cut.duration), 3)
    ids_sha1 = fingerprint.finish()
    shard_sha = fingerprint.shard_sha
    if num_cuts == 0:
        raise ValueError("cannot export an empty KD pool to Shar")
    assert all(pool_shard_path(output_dir, i).is_file() for i in range(len(shard_sha)))
    info = dict(num_shards=len(shard_sha), shard_size=shard_size, num_cuts=num_cuts, shard_ids_sha1=shard_sha,
                ids_sha1=ids_sha1, source=source, duration_sample=durations)
    write_json(output_dir / POOL_INFO, info)
    logging.info(f"KD pool: {num_cuts} cuts in {len(shard_sha)} Shar shards under {output_dir}")
    return info
