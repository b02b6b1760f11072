"""What sherpa-onnx's loaders require of exported files (read from its C++ sources, v2.0.x), and the writers for it.

Offline transducer (``OfflineRecognizer.from_transducer``)
    encoder ``x`` (1, T, 80), ``x_lens`` -> ``encoder_out``, ``encoder_out_lens``; decoder metadata
    ``vocab_size``, ``context_size``; blank id 0 (see :mod:`mt2kd_lib.export.onnx_export`).
Zipformer audio tagging (``AudioTagging`` with ``OfflineZipformerAudioTaggingModelConfig``)
    input 0 = fbank (1, T, 80) float32, input 1 = its length (1,) int64; output 0 = probabilities (N, K) whose
    K is read from the *static* output shape (no metadata is read). The label file must have K rows:
    a header line (skipped unread), then ``<index>,<mid>,"<display name>"`` with indices 0..K-1 in order and
    the display name (everything after the second comma) in double quotes, as in AudioSet's own
    class_labels_indices.csv. A bad line ends the process (``Invalid line: ...``).
Speaker embedding (``SpeakerEmbeddingExtractor``)
    metadata ``framework`` in {wespeaker, 3d-speaker} (both select the same generic extractor; ``nemo`` is
    another one), ``output_dim``, ``sample_rate``, ``normalize_samples``, a non-empty ``language``, optional
    ``feature_normalize_type`` (only ``global-mean``: subtract the utterance's mean frame). One input, fbank
    (1, T, 80), no length; output 0 = the embedding (1, D), returned as is (not normalised).
Features (all three)
    kaldi-native-fbank: 80 bins, 25 ms povey window, 10 ms shift, dither 0, snip_edges false, preemphasis 0.97,
    DC removal, mel range 20 Hz .. Nyquist - 400 Hz, log energies, samples in [-1, 1] (``normalize_samples=1``;
    0 would scale them by 32768), no normalisation. That is lhotse's ``Fbank``/kaldifeat fbank as
    :mod:`mt2kd_lib.data.features` computes it, so our models are exported for raw fbank and no metadata asks
    for scaling or mean subtraction.
"""

from pathlib import Path
from typing import Dict, List, Tuple, Union

from mt2kd_lib.data.contract import read_class_labels_file

PathLike = Union[str, Path]

# Which of sherpa-onnx's speaker frameworks our speaker.onnx claims to be: only the metadata below is read, and
# "wespeaker" and "3d-speaker" take the same code path.
SPEAKER_FRAMEWORK = "wespeaker"


def speaker_metadata(output_dim: int, sample_rate: int, language: str) -> Dict[str, str]:
    """The metadata sherpa-onnx's ``SpeakerEmbeddingExtractor`` reads, set for raw fbank of [-1, 1] samples."""
    if not language.strip():
        raise ValueError("speaker_metadata: language must be non-empty (sherpa-onnx refuses an empty one)")
    return {"framework": SPEAKER_FRAMEWORK, "output_dim": str(int(output_dim)), "sample_rate": str(int(sample_rate)),
            "normalize_samples": "1", "language": language}


def sherpa_label_lines(rows: List[Tuple[int, str, str]]) -> List[str]:
    """``(index, mid, display_name)`` rows -> lines of a label file sherpa-onnx parses (header first).

    sherpa-onnx splits at the first two commas and strips one pair of quotes, so a mid may not hold a comma
    and a display name may not hold a double quote (it would be kept, doubled, in the names sherpa shows).
    """
    lines = ["index,mid,display_name"]
    for i, mid, name in rows:
        if "," in mid or '"' in mid or "\n" in mid:
            raise ValueError(f"class {i}: mid {mid!r} has a comma, quote or newline (sherpa-onnx cannot read it)")
        if '"' in name or "\n" in name or not name:
            raise ValueError(f"class {i} ({mid}): display name {name!r} is empty or has a double quote or newline")
        lines.append(f'{i},{mid},"{name}"')
    return lines


def write_sherpa_class_labels(src: PathLike, dst: PathLike, num_classes: int) -> Path:
    """Rewrite our class_labels_indices.csv ``src`` (any valid csv quoting) as ``dst`` in AudioSet's quoting.

    The result is still valid csv for :func:`mt2kd_lib.data.contract.read_class_labels_file`.
    """
    src, dst = Path(src), Path(dst)
    rows = read_class_labels_file(src)
    if len(rows) != num_classes:
        raise ValueError(f"{src}: {len(rows)} classes, but the model's AT head has {num_classes}")
    text = "\n".join(sherpa_label_lines(rows)) + "\n"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text, encoding="utf-8")
    return dst
