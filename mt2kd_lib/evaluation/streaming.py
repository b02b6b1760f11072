"""Streaming evaluation of a causal student: every test utterance is fed chunk by chunk (:class:`StreamingStudent`)
and scored like the offline evaluation -- WER from streaming greedy search, mAP from the running tag probabilities
after the last chunk, EER / minDCF from the SV embedding of all chunks -- plus the cost of chunked decoding:

* ``rtf``: compute seconds of all chunk steps (encoder + search + heads, batched streams) / audio seconds;
* ``compute_ms`` (mean, p95): compute time of one chunk step of a single stream (batch 1, one thread), measured on the
  first ``latency_utts`` ASR test utterances (wall clock), and ``cpu_ms`` its CPU time (on a shared machine the
  wall clock also counts the waits for a core);
* ``latency_ms``: ``algorithmic_ms`` + mean ``compute_ms``, where ``algorithmic_ms`` is the audio a chunk's first frame
  waits for before the chunk can run: the chunk itself (2 * chunk_size x 10 ms) plus the front-end's look-ahead
  (13 fbank frames = 130 ms, see :meth:`EncoderWithEmbed.chunk_input_frames`) plus the 15 ms of the last fbank
  frame's window beyond its shift.
"""

import logging
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from lhotse import CutSet

from mt2kd_lib.data import contract
from mt2kd_lib.data.bpe import load_bpe
from mt2kd_lib.data.datamodule import make_eval_dl
from mt2kd_lib.decoding.asr_results import write_asr_results
from mt2kd_lib.decoding.streaming import StreamingStudent
from mt2kd_lib.evaluation.evaluate import FRAMES_PER_SECOND, _as_list, _load, evaluate_at, evaluate_sv
from mt2kd_lib.models.student import StudentModel
from mt2kd_lib.models.zipformer.streaming import iter_chunks

WINDOW_EXTRA_MS = 15.0  # a 25 ms fbank window reaches 15 ms past its 10 ms shift


class _Clock:
    """Sums the wall time of chunk steps."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.audio_seconds = 0.0


def _stream_batch(streamer: StreamingStudent, batch: Dict, clock: _Clock):
    feats, lens = batch["features"], batch["feature_lens"]
    state = streamer.start(feats.shape[0])
    for chunk in iter_chunks(streamer.model.encoder, feats, lens, streamer.chunk_size):
        t0 = time.perf_counter()
        state = streamer.step(state, chunk.features, chunk.feature_lens)
        clock.seconds += time.perf_counter() - t0
    clock.audio_seconds += float(lens.sum()) / FRAMES_PER_SECOND
    return state


@torch.no_grad()
def chunk_latency(streamer: StreamingStudent, cuts: CutSet, num_utts: int) -> Dict[str, float]:
    """Compute time of one chunk step of a single stream (ms): mean and 95th percentile, over every chunk of the
    first ``num_utts`` utterances (the first chunk of each is left out: it warms caches and allocators)."""
    times: List[float] = []
    cpu: List[float] = []
    for batch in make_eval_dl(cuts.subset(first=num_utts), max_duration=1e-3):
        state = streamer.start(1)
        for chunk in iter_chunks(streamer.model.encoder, batch["features"], batch["feature_lens"],
                                 streamer.chunk_size):
            t0, c0 = time.perf_counter(), time.process_time()
            state = streamer.step(state, chunk.features, chunk.feature_lens)
            if chunk.index > 0:
                times.append(1000 * (time.perf_counter() - t0))
                cpu.append(1000 * (time.process_time() - c0))
    if not times:
        raise ValueError("chunk_latency: no utterance has more than one chunk")
    return {"compute_ms": round(float(np.mean(times)), 2), "compute_ms_p95": round(float(np.percentile(times, 95)), 2),
            "cpu_ms": round(float(np.mean(cpu)), 2)}


@torch.no_grad()
def evaluate_streaming(model: StudentModel, recipe_data: Path, res_dir: Path, lang_dir: Path, chunk_size: int,
                       left_context_frames: int, max_duration: float = 300.0, latency_utts: int = 20) -> Dict:
    """results.json-like dict of one chunk setting (see the module docstring)."""
    streamer = StreamingStudent(model, chunk_size, left_context_frames)
    res_dir = Path(res_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    index = contract.read_index(Path(recipe_data) / "manifests")
    clock = _Clock()
    out: Dict = {"chunk_size": chunk_size, "chunk_ms": 20 * chunk_size, "left_context_frames": left_context_frames}
    if model.asr_head is not None and "asr" in index:
        sp = load_bpe(lang_dir)
        out["asr"] = {"wer": {}}
        for test in _as_list(index["asr"].get("test")):
            results = []
            for batch in make_eval_dl(_load(recipe_data, "asr", test), max_duration):
                state = _stream_batch(streamer, batch, clock)
                for cid, ref, hyp in zip(batch["cut_ids"], batch["texts"], streamer.tokens(state)):
                    results.append((cid, ref.split(), sp.decode(hyp).split()))
            out["asr"]["wer"][test] = write_asr_results(res_dir, test, f"streaming_greedy_chunk_{chunk_size}",
                                                        results)
            logging.info(f"chunk {chunk_size}: WER {test} {out['asr']['wer'][test]:.2f}%")
        test0 = _as_list(index["asr"].get("test"))[0]
        lat = chunk_latency(streamer, _load(recipe_data, "asr", test0), latency_utts)
        algorithmic = 20.0 * chunk_size + 10.0 * (model.encoder.chunk_input_frames(chunk_size) - 2 * chunk_size) \
            + WINDOW_EXTRA_MS
        out.update(lat, algorithmic_ms=algorithmic, latency_ms=round(algorithmic + lat["compute_ms"], 1))
    def per_cut(task: str, head_output) -> Callable[[CutSet], Dict[str, np.ndarray]]:
        """cut id -> ``head_output(state)`` after streaming each cut of ``task`` chunk by chunk."""
        def collect(cuts: CutSet) -> Dict[str, np.ndarray]:
            values = {}
            for batch in make_eval_dl(cuts, max_duration, task=task):
                state = _stream_batch(streamer, batch, clock)
                values.update(zip(batch["cut_ids"], head_output(state).numpy()))
            return values
        return collect

    if model.at_head is not None and "at" in index:
        maps = evaluate_at(per_cut("at", streamer.at_probs), recipe_data, res_dir, name=f"chunk_{chunk_size}-")
        out["at"] = {"mAP": float(np.mean(list(maps.values()))), "mAP_per_split": maps}
    if model.sv_head is not None and "sv" in index:
        out["sv"] = evaluate_sv(per_cut("sv", streamer.sv_embedding), recipe_data, res_dir,
                                name=f"chunk_{chunk_size}-")
    out["rtf"] = round(clock.seconds / max(clock.audio_seconds, 1e-9), 4)
    return out
