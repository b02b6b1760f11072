"""ONNX export of a :class:`StudentModel`: the transducer in sherpa-onnx's offline layout, plus the AT and SV heads.

Files written (each with dynamic batch ``N`` and time ``T`` axes, TorchScript-based exporter, opset 13-17):

* ``encoder.onnx``: ``x`` (N, T, 80) float32, ``x_lens`` (N,) int64 -> ``encoder_out`` (N, T', joiner_dim),
  ``encoder_out_lens`` (N,) int64. As in icefall's ``export-onnx.py`` the joiner's ``encoder_proj`` is folded in,
  so ``encoder_out`` is already in the joint space.
* ``decoder.onnx``: ``y`` (N, context_size) int64 -> ``decoder_out`` (N, joiner_dim) (``decoder_proj`` folded in).
* ``joiner.onnx``: ``encoder_out`` (N, joiner_dim), ``decoder_out`` (N, joiner_dim) -> ``logit`` (N, vocab_size).
* ``tokens.txt``: copied from the lang dir (``<symbol> <id>`` per line).
* ``tagger.onnx``: ``x``, ``x_lens`` -> ``probs`` (N, num_classes) = sigmoid of the AT clip logits (the layout of
  sherpa-onnx's zipformer audio tagging; ``class_labels_indices.csv`` is written beside it, when given, in the
  quoting sherpa-onnx parses).
* ``speaker.onnx``: ``x`` (N, T, 80) -> ``embedding`` (N, emb_dim), the SV head's (un-normalised) embedding of the
  whole input (no length input: sherpa-onnx's speaker extractor feeds one unpadded utterance); metadata of
  sherpa-onnx's generic (wespeaker) speaker extractor.

What sherpa-onnx requires of each file, and why our fbank needs no scaling or normalisation metadata, is in
:mod:`mt2kd_lib.export.sherpa_layout`.

sherpa-onnx reads ``vocab_size`` and ``context_size`` from the decoder's metadata and assumes blank id 0; the encoder
carries ``model_type=zipformer2`` etc. and the joiner ``joiner_dim`` (icefall's metadata set).

Two properties of the traced encoder are handled here rather than in the model code:

* Very short inputs: the eager encoder special-cases stacks that see a single frame, a branch the trace cannot
  keep. The exported graphs therefore append ``min_input_frames`` zero frames to every input (``x_lens`` is
  unchanged); the encoder is padding-invariant, so valid outputs are unchanged and any input of >= 9 frames works.
* Long inputs: the relative positional encodings are a table baked into the graph. It is extended before tracing
  to cover ``max_seconds`` of audio (default 120 s); longer inputs fail in onnxruntime with a reshape error.

Balancer / Whiten / ScaleGrad and the other gradient-only modules are identities in eval mode and under
``torch.no_grad()`` (they return their input before touching their autograd functions), so nothing of them is
traced; export always runs on an eval-mode copy of the model under ``torch.no_grad()``.
"""

import copy
import logging
import math
import shutil
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from mt2kd_lib.data.frames import FBANK_FRAME_SHIFT, encoder_output_frames
from mt2kd_lib.export.sherpa_layout import speaker_metadata, write_sherpa_class_labels
from mt2kd_lib.models.student import StudentModel
from mt2kd_lib.models.transducer.decoder import Decoder
from mt2kd_lib.models.transducer.joiner import Joiner
from mt2kd_lib.models.zipformer.model import MIN_INPUT_FRAMES, EncoderWithEmbed

DEFAULT_OPSET = 13
SUPPORTED_OPSETS = range(13, 18)
FRAME_SHIFT_S = FBANK_FRAME_SHIFT  # fbank frames are 10 ms apart
DEFAULT_MAX_SECONDS = 120.0
SAMPLE_RATE = 16000
DEFAULT_LANGUAGE = "unknown"  # sherpa-onnx's speaker metadata needs a non-empty language

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------------------------
# encoder helpers
# ----------------------------------------------------------------------------------------------


def _downsampling_factors(encoder: EncoderWithEmbed) -> List[int]:
    return [int(d) for d in encoder.config.downsampling_factor]


def min_input_frames(encoder: EncoderWithEmbed) -> int:
    """Frames appended to every exported input so each stack sees >= 2 frames (see module docstring)."""
    t50 = max(_downsampling_factors(encoder)) + 1  # 50 Hz frames after Conv2dSubsampling
    return 2 * t50 + 7


def extend_positional_encodings(encoder: EncoderWithEmbed, max_seconds: float) -> int:
    """Grow every stack's relative-position table to cover ``max_seconds`` of input; returns the 50 Hz frames.

    Tracing bakes the table in as a constant, so its length bounds the input length of the exported graph.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    t50 = int(math.ceil(max_seconds / FRAME_SHIFT_S)) // 2 + min_input_frames(encoder)
    stacks = getattr(getattr(encoder, "encoder", None), "encoders", None)
    if stacks is None:
        raise RuntimeError("extend_positional_encodings: encoder has no .encoder.encoders (not a Zipformer2?)")
    for i, stack in enumerate(stacks):
        ds = int(getattr(stack, "downsample_factor", 1))
        inner = stack.encoder if hasattr(stack, "downsample_factor") else stack
        pos = getattr(inner, "encoder_pos", None)
        if pos is None or not hasattr(pos, "_extend"):
            raise RuntimeError(f"extend_positional_encodings: stack {i} has no CompactRelPositionalEncoding")
        # uses the module's own table builder; rows for small offsets are unchanged by growing the table
        pos._extend(t50 // ds + 2, torch.device("cpu"), torch.float32)
    return t50


def example_features(encoder: EncoderWithEmbed, batch_size: int = 2) -> Tuple[Tensor, Tensor]:
    """Tracing input whose shapes take the general branches of the encoder.

    The 50 Hz length is 1 modulo every downsampling factor (so every SimpleDownsample pads), and the
    utterances have different lengths (so the padding masks are built); both branches are exact no-ops
    for inputs that do not need them.
    """
    lcm = 2
    for d in _downsampling_factors(encoder):
        lcm = lcm * d // math.gcd(lcm, d)
    chunk = max([int(c) for c in encoder.config.chunk_size] + [1])
    t50 = lcm * max(2, chunk // lcm + 1) + 1
    t = 2 * t50 + 7
    lens = torch.tensor([t - 4 * i for i in range(batch_size)], dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, t, encoder.feature_dim, generator=g), lens


def _pad_time(x: Tensor, frames: int) -> Tensor:
    """Append ``frames`` zero frames (N, T, F) -> (N, T + frames, F)."""
    return torch.cat([x, torch.zeros_like(x[:, :1]).expand(-1, frames, -1)], dim=1)


def _num_out_frames(t: Union[int, Tensor]) -> Union[int, Tensor]:
    """Encoder output frames for ``t`` input frames (traced as shape arithmetic when t comes from a size)."""
    return encoder_output_frames(t)


# ----------------------------------------------------------------------------------------------
# export wrappers
# ----------------------------------------------------------------------------------------------


class OnnxEncoder(nn.Module):
    """fbank -> projected encoder output (encoder + joiner.encoder_proj)."""

    def __init__(self, encoder: EncoderWithEmbed, encoder_proj: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder_proj = encoder_proj
        self.pad_frames = min_input_frames(encoder)

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        t_out = _num_out_frames(x.shape[1])
        out, out_lens = self.encoder(_pad_time(x, self.pad_frames), x_lens)
        return self.encoder_proj(out[:, :t_out]), out_lens


class OnnxDecoder(nn.Module):
    """Last ``context_size`` tokens -> projected decoder output (decoder + joiner.decoder_proj)."""

    def __init__(self, decoder: Decoder, decoder_proj: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.decoder_proj = decoder_proj

    def forward(self, y: Tensor) -> Tensor:
        return self.decoder_proj(self.decoder(y, need_pad=False).squeeze(1))


class OnnxJoiner(nn.Module):
    """Projected encoder + decoder frames -> logits (the joiner without its input projections)."""

    def __init__(self, joiner: Joiner) -> None:
        super().__init__()
        self.joiner = joiner

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joiner(encoder_out, decoder_out, project_input=False)


class OnnxTagger(nn.Module):
    """fbank -> AT class probabilities (sigmoid of the clip logits)."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__()
        self.model = model
        self.pad_frames = min_input_frames(model.encoder)

    def forward(self, x: Tensor, x_lens: Tensor) -> Tensor:
        return torch.sigmoid(self.model.at_logits(_pad_time(x, self.pad_frames), x_lens))


class OnnxSpeaker(nn.Module):
    """fbank of whole utterances -> SV speaker embedding (sherpa-onnx passes no lengths)."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__()
        self.model = model
        self.pad_frames = min_input_frames(model.encoder)

    def forward(self, x: Tensor) -> Tensor:
        # every frame is valid; computed from x's data so the length stays dynamic in the trace
        x_lens = torch.ones_like(x[:, :, 0], dtype=torch.int64).sum(dim=1)
        return self.model.sv_embeddings(_pad_time(x, self.pad_frames), x_lens)


# ----------------------------------------------------------------------------------------------
# low-level export
# ----------------------------------------------------------------------------------------------


def add_meta_data(path: PathLike, meta: Dict[str, str]) -> None:
    """Store string key/value pairs in an ONNX file's ``metadata_props`` (what onnxruntime's modelmeta shows)."""
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for k, v in meta.items():
        if k in existing:
            existing[k].value = str(v)
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = str(k), str(v)
    onnx.save(model, str(path))


def _check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} not supported; use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")


def _export(module: nn.Module, args: Tuple[Tensor, ...], path: Path, input_names: Sequence[str],
            output_names: Sequence[str], dynamic_axes: Dict[str, Dict[int, str]], opset: int,
            meta: Dict[str, str]) -> Path:
    """torch.onnx.export (TorchScript exporter) + metadata + onnx.checker."""
    import onnx

    _check_opset(opset)
    if module.training:
        raise RuntimeError(f"{path.name}: export needs an eval-mode module (dropout/batch-norm differ in training)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings flag the input checks, which run once at trace time by design
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    add_meta_data(path, meta)
    onnx.checker.check_model(str(path))
    logging.info(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return path


_FBANK_AXES = {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}}


def _copy_file(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` unless they are already the same file (exporting into the lang dir)."""
    if not (dst.exists() and src.resolve() == dst.resolve()):
        shutil.copyfile(src, dst)
    return dst


def _eval_copy(model: StudentModel) -> StudentModel:
    """An eval-mode CPU copy, so export never changes the caller's model (its position tables grow)."""
    return copy.deepcopy(model).cpu().eval()


# ----------------------------------------------------------------------------------------------
# public exports
# ----------------------------------------------------------------------------------------------


def export_transducer(model: StudentModel, out_dir: PathLike, tokens: PathLike, opset: int = DEFAULT_OPSET,
                      max_seconds: float = DEFAULT_MAX_SECONDS, _copied: bool = False) -> Dict[str, Path]:
    """Write encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt (sherpa-onnx offline transducer layout)."""
    from mt2kd_lib.models.factory import read_vocab_size

    head = model.asr_head
    if head is None:
        raise RuntimeError("export_transducer: the model has no ASR (transducer) head")
    if head.blank_id != 0:
        raise ValueError(f"export_transducer: blank_id={head.blank_id}, but sherpa-onnx assumes blank id 0")
    tokens = Path(tokens)
    if not tokens.is_file():
        raise FileNotFoundError(f"export_transducer: no tokens file {tokens}")
    vocab = read_vocab_size(tokens)
    if vocab != head.vocab_size:
        raise ValueError(f"export_transducer: {tokens} has {vocab} tokens but the model's vocab_size is "
                         f"{head.vocab_size}; wrong --lang-dir?")
    if not _copied:
        model = _eval_copy(model)
        head = model.asr_head
    out_dir = Path(out_dir)
    max_t50 = extend_positional_encodings(model.encoder, max_seconds)
    files: Dict[str, Path] = {}

    x, x_lens = example_features(model.encoder)
    files["encoder"] = _export(
        OnnxEncoder(model.encoder, head.joiner.encoder_proj).eval(), (x, x_lens), out_dir / "encoder.onnx",
        ["x", "x_lens"], ["encoder_out", "encoder_out_lens"],
        {**_FBANK_AXES, "encoder_out": {0: "N", 1: "T"}, "encoder_out_lens": {0: "N"}}, opset,
        {"model_type": "zipformer2", "version": "1", "model_author": "mt2kd",
         "comment": "non-streaming zipformer2 (mt2kd student)", "feature_dim": str(model.encoder.feature_dim),
         "min_input_frames": str(MIN_INPUT_FRAMES), "max_input_frames": str(2 * max_t50 + 7)})

    files.update(export_decoder_joiner(head, out_dir, opset))
    files["tokens"] = _copy_file(tokens, out_dir / "tokens.txt")
    return files


def export_decoder_joiner(head, out_dir: Path, opset: int) -> Dict[str, Path]:
    """decoder.onnx and joiner.onnx of a transducer head (the same for offline and streaming encoders)."""
    joiner_dim = head.joiner.output_linear.in_features
    files: Dict[str, Path] = {}
    y = torch.zeros(3, head.context_size, dtype=torch.int64)
    y[1, -1] = 1 % head.vocab_size
    files["decoder"] = _export(
        OnnxDecoder(head.decoder, head.joiner.decoder_proj).eval(), (y,), out_dir / "decoder.onnx",
        ["y"], ["decoder_out"], {"y": {0: "N"}, "decoder_out": {0: "N"}}, opset,
        {"context_size": str(head.context_size), "vocab_size": str(head.vocab_size)})

    enc = torch.rand(3, joiner_dim)
    dec = torch.rand(3, joiner_dim)
    files["joiner"] = _export(
        OnnxJoiner(head.joiner).eval(), (enc, dec), out_dir / "joiner.onnx",
        ["encoder_out", "decoder_out"], ["logit"],
        {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}}, opset,
        {"joiner_dim": str(joiner_dim)})
    return files


def export_tagger(model: StudentModel, path: PathLike, opset: int = DEFAULT_OPSET,
                  max_seconds: float = DEFAULT_MAX_SECONDS, class_labels: Optional[PathLike] = None,
                  _copied: bool = False) -> Dict[str, Path]:
    """Write tagger.onnx (fbank -> class probabilities) and, when given, class_labels_indices.csv beside it.

    ``class_labels`` is our manifest's csv; it is rewritten in the quoting sherpa-onnx's label parser needs.
    """
    if model.at_head is None:
        raise RuntimeError("export_tagger: the model has no AT head")
    if not _copied:
        model = _eval_copy(model)
    path = Path(path)
    labels_file = None
    if class_labels is not None:  # first: a wrong label file fails before the slow export
        class_labels = Path(class_labels)
        if not class_labels.is_file():
            raise FileNotFoundError(f"export_tagger: no class labels file {class_labels}")
        labels_file = write_sherpa_class_labels(class_labels, path.parent / "class_labels_indices.csv",
                                                model.at_head.num_classes)
    max_t50 = extend_positional_encodings(model.encoder, max_seconds)
    x, x_lens = example_features(model.encoder)
    files = {"tagger": _export(
        OnnxTagger(model).eval(), (x, x_lens), path, ["x", "x_lens"], ["probs"],
        {**_FBANK_AXES, "probs": {0: "N"}}, opset,
        {"model_type": "zipformer2-audio-tagging", "version": "1", "model_author": "mt2kd",
         "num_event_classes": str(model.at_head.num_classes), "feature_dim": str(model.encoder.feature_dim),
         "max_input_frames": str(2 * max_t50 + 7),
         "comment": "mt2kd student AT head: sigmoid of clip logits (multi-label)"})}
    if labels_file is not None:
        files["class_labels"] = labels_file
    return files


def export_speaker(model: StudentModel, path: PathLike, opset: int = DEFAULT_OPSET,
                   max_seconds: float = DEFAULT_MAX_SECONDS, language: str = DEFAULT_LANGUAGE,
                   _copied: bool = False) -> Dict[str, Path]:
    """Write speaker.onnx (fbank of one utterance -> speaker embedding; score pairs by cosine similarity).

    ``language`` only fills the metadata field sherpa-onnx insists on.
    """
    if model.sv_head is None:
        raise RuntimeError("export_speaker: the model has no SV head")
    if not _copied:
        model = _eval_copy(model)
    path = Path(path)
    max_t50 = extend_positional_encodings(model.encoder, max_seconds)
    x, _ = example_features(model.encoder)  # batch of 2: no shape specialised to 1
    return {"speaker": _export(
        OnnxSpeaker(model).eval(), (x,), path, ["x"], ["embedding"],
        {"x": {0: "N", 1: "T"}, "embedding": {0: "N"}}, opset,
        {**speaker_metadata(model.sv_head.emb_dim, SAMPLE_RATE, language),
         "model_type": "zipformer2-speaker", "version": "1", "model_author": "mt2kd",
         "feature_dim": str(model.encoder.feature_dim), "max_input_frames": str(2 * max_t50 + 7),
         "comment": "mt2kd student SV head embedding (not L2-normalised; score by cosine)"})}


def export_model(model: StudentModel, out_dir: PathLike, tokens: Optional[PathLike] = None,
                 class_labels: Optional[PathLike] = None, opset: int = DEFAULT_OPSET,
                 max_seconds: float = DEFAULT_MAX_SECONDS, language: str = DEFAULT_LANGUAGE) -> Dict[str, Path]:
    """Export every head the model has into ``out_dir``; returns ``name -> path`` of the files written
    (the ASR head's CTC branch, when it has one, as ctc.onnx).

    ``tokens`` (tokens.txt) is required when the model has an ASR head; ``class_labels``
    (class_labels_indices.csv) is optional and only written for the AT head; ``language`` goes into the speaker
    model's metadata.
    """
    _check_opset(opset)
    if model.asr_head is not None and tokens is None:
        raise ValueError("export_model: the model has an ASR head; pass tokens (the lang dir's tokens.txt)")
    model = _eval_copy(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: Dict[str, Path] = {}
    if model.asr_head is not None:
        files.update(export_transducer(model, out_dir, tokens, opset, max_seconds, _copied=True))
        if model.asr_head.ctc_output is not None:  # the CTC branch, for sherpa-onnx's CTC + HLG.fst decoding
            from mt2kd_lib.export.onnx_ctc import export_ctc  # onnx_ctc imports this module

            files["ctc"] = export_ctc(model, out_dir, tokens, opset, max_seconds)["ctc"]
    if model.at_head is not None:
        files.update(export_tagger(model, out_dir / "tagger.onnx", opset, max_seconds, class_labels, _copied=True))
    if model.sv_head is not None:
        files.update(export_speaker(model, out_dir / "speaker.onnx", opset, max_seconds, language, _copied=True))
    return files


def file_sizes(files: Dict[str, Path]) -> Dict[str, int]:
    """``name -> size in bytes`` of exported files."""
    return {k: Path(p).stat().st_size for k, p in files.items()}
