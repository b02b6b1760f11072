"""Run the exported heads with sherpa-onnx's own Python API (what a user of the ONNX files does).

``onnx_dir`` is what :func:`mt2kd_lib.export.onnx_export.export_model` writes (run.sh stage 11:
``exp/<corpus>/mt2kd/onnx``). sherpa-onnx computes the fbank itself from 16 kHz samples in [-1, 1].

sherpa-onnx ends the whole process (not an exception) when it refuses a file, so a caller that must survive a bad
file runs these in a subprocess (``tools/sherpa_onnx_run.py``).
"""

from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

PathLike = Union[str, Path]
TRANSDUCER_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")
TAGGER_FILES = ("tagger.onnx", "class_labels_indices.csv")
SPEAKER_FILES = ("speaker.onnx",)


def _need(onnx_dir: Path, names: Tuple[str, ...]) -> None:
    missing = [n for n in names if not (onnx_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{onnx_dir}: missing {', '.join(missing)}")


def _num_label_rows(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip())


def _transducer_args(onnx_dir: PathLike, num_threads: int) -> Dict[str, object]:
    """The from_transducer arguments both sherpa-onnx recognizers take: our files, greedy search, 16 kHz 80-dim fbank."""
    d = Path(onnx_dir)
    _need(d, TRANSDUCER_FILES)
    return dict(encoder=str(d / "encoder.onnx"), decoder=str(d / "decoder.onnx"), joiner=str(d / "joiner.onnx"),
                tokens=str(d / "tokens.txt"), num_threads=num_threads, sample_rate=16000, feature_dim=80,
                decoding_method="greedy_search")


def make_recognizer(onnx_dir: PathLike, num_threads: int = 1):
    """sherpa-onnx offline transducer, greedy search, 16 kHz 80-dim fbank."""
    import sherpa_onnx

    return sherpa_onnx.OfflineRecognizer.from_transducer(**_transducer_args(onnx_dir, num_threads))


def make_tagger(onnx_dir: PathLike, num_threads: int = 1):
    """sherpa-onnx zipformer audio tagging returning every class (top_k = number of classes)."""
    import sherpa_onnx

    d = Path(onnx_dir)
    _need(d, TAGGER_FILES)
    config = sherpa_onnx.AudioTaggingConfig(
        model=sherpa_onnx.AudioTaggingModelConfig(
            zipformer=sherpa_onnx.OfflineZipformerAudioTaggingModelConfig(model=str(d / "tagger.onnx")),
            num_threads=num_threads),
        labels=str(d / "class_labels_indices.csv"), top_k=_num_label_rows(d / "class_labels_indices.csv"))
    return sherpa_onnx.AudioTagging(config)


def make_speaker_extractor(onnx_dir: PathLike, num_threads: int = 1):
    import sherpa_onnx

    d = Path(onnx_dir)
    _need(d, SPEAKER_FILES)
    config = sherpa_onnx.SpeakerEmbeddingExtractorConfig(model=str(d / "speaker.onnx"), num_threads=num_threads)
    if not config.validate():
        raise ValueError(f"{d / 'speaker.onnx'}: sherpa-onnx refuses the speaker extractor config")
    return sherpa_onnx.SpeakerEmbeddingExtractor(config)


def transcribe(recognizer, samples: np.ndarray, sample_rate: int) -> Tuple[str, List[str]]:
    """(text, tokens) of one utterance."""
    stream = recognizer.create_stream()
    stream.accept_waveform(sample_rate, samples)
    recognizer.decode_stream(stream)
    return stream.result.text, list(stream.result.tokens)


def tag(tagger, samples: np.ndarray, sample_rate: int) -> Tuple[np.ndarray, List[str]]:
    """(probabilities in class-index order, class names in that order) of one clip."""
    stream = tagger.create_stream()
    stream.accept_waveform(sample_rate, samples)
    events = sorted(tagger.compute(stream), key=lambda e: e.index)
    return np.array([e.prob for e in events], dtype=np.float32), [e.name for e in events]


def embed(extractor, samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Speaker embedding (not normalised) of one utterance."""
    stream = extractor.create_stream()
    stream.accept_waveform(sample_rate, samples)
    stream.input_finished()
    if not extractor.is_ready(stream):
        raise ValueError("sherpa-onnx speaker extractor: no feature frames (audio too short?)")
    return np.array(extractor.compute(stream), dtype=np.float32)


def run_heads(onnx_dir: PathLike, waves: Dict[str, Tuple[np.ndarray, int]], num_threads: int = 1) -> Dict:
    """Every head whose files are in ``onnx_dir`` on every ``name -> (samples, sample_rate)``.

    Returns ``{name: {"text", "tokens", "probs", "labels", "embedding"}}`` (keys of the heads present).
    """
    d = Path(onnx_dir)
    heads = {}
    if all((d / n).is_file() for n in TRANSDUCER_FILES):
        heads["asr"] = make_recognizer(d, num_threads)
    if all((d / n).is_file() for n in TAGGER_FILES):
        heads["at"] = make_tagger(d, num_threads)
    if all((d / n).is_file() for n in SPEAKER_FILES):
        heads["sv"] = make_speaker_extractor(d, num_threads)
    if not heads:
        raise FileNotFoundError(f"{d}: no exported head found (run local/export.py)")
    out: Dict[str, Dict] = {}
    for name, (samples, sr) in waves.items():
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        res: Dict = {}
        if "asr" in heads:
            res["text"], res["tokens"] = transcribe(heads["asr"], samples, sr)
        if "at" in heads:
            probs, res["labels"] = tag(heads["at"], samples, sr)
            res["probs"] = probs.tolist()
        if "sv" in heads:
            res["embedding"] = embed(heads["sv"], samples, sr).tolist()
        out[name] = res
    return out


# ----------------------------------------------------------------------------------------------- streaming
TAIL_PADDING_S = 0.66  # silence appended before ending a stream: sherpa-onnx decodes only whole chunks


def make_online_recognizer(onnx_dir: PathLike, num_threads: int = 1):
    """sherpa-onnx OnlineRecognizer (streaming zipformer2 transducer, greedy search, no endpointing)."""
    import sherpa_onnx

    return sherpa_onnx.OnlineRecognizer.from_transducer(**_transducer_args(onnx_dir, num_threads),
                                                        enable_endpoint_detection=False)


def transcribe_online(recognizer, samples: np.ndarray, sample_rate: int, chunk_seconds: float = 0.1,
                      tail_padding_s: float = TAIL_PADDING_S) -> Tuple[str, List[str]]:
    """(text, tokens) of one utterance fed to an online stream ``chunk_seconds`` of audio at a time, decoding as
    soon as a chunk is ready (what a live application does), then ``tail_padding_s`` of silence."""
    stream = recognizer.create_stream()
    step = max(1, int(chunk_seconds * sample_rate))
    samples = np.concatenate([samples, np.zeros(int(tail_padding_s * sample_rate), dtype=np.float32)])
    for start in range(0, len(samples), step):
        stream.accept_waveform(sample_rate, samples[start: start + step])
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    result = recognizer.get_result_all(stream)
    return result.text, list(result.tokens)


def run_online(onnx_dir: PathLike, waves: Dict[str, Tuple[np.ndarray, int]], num_threads: int = 1) -> Dict:
    """The streaming transducer in ``onnx_dir`` (:mod:`mt2kd_lib.export.onnx_streaming`) on every
    ``name -> (samples, sample_rate)``: ``{name: {"text", "tokens"}}``."""
    recognizer = make_online_recognizer(onnx_dir, num_threads)
    out: Dict[str, Dict] = {}
    for name, (samples, sr) in waves.items():
        text, tokens = transcribe_online(recognizer, np.ascontiguousarray(samples, dtype=np.float32), sr)
        out[name] = {"text": text, "tokens": tokens}
    return out
