"""ONNX export of a causal :class:`StudentModel`'s transducer for sherpa-onnx's ``OnlineRecognizer`` (the layout of
icefall's zipformer/export-onnx-streaming.py).

``encoder.onnx`` runs one chunk: ``x`` (N, T, 80) with T = 2 * chunk_size + 13 fbank frames, then the states of
:meth:`EncoderWithEmbed.get_init_states` as inputs (6 per layer: ``cached_key_i``, ``cached_nonlin_attn_i``,
``cached_val1_i``, ``cached_val2_i``, ``cached_conv1_i``, ``cached_conv2_i``; then ``embed_states`` and
``processed_lens``), and outputs ``encoder_out`` (N, chunk_size / 2, joiner_dim) (``encoder_proj`` folded in) and
the new states in the same order. Only the batch axis is dynamic: chunk size and left context are fixed at export.

sherpa-onnx reads from the encoder's metadata: ``model_type=zipformer2``, ``T`` (frames fed per call),
``decode_chunk_len`` (= 2 * chunk_size, the frames it advances per call), and per stack (comma-separated)
``encoder_dims``, ``query_head_dims``, ``value_head_dims``, ``num_heads``, ``num_encoder_layers``,
``cnn_module_kernels``, ``left_context_len`` (= left_context_frames / downsampling factor) -- from which it builds the
zero initial states itself, so their shapes must be exactly those of ``get_init_states`` -- except ``embed_states``,
which sherpa-onnx always makes 128 channels wide (icefall's front end): a narrower front end (egs/mini's 64) reads
the first channels of that input and writes its new cache zero-padded to 128 (:func:`sherpa_state_shapes`). It
feeds a chunk only when more than T frames are ready, so a caller appends ~0.3-0.7 s of silence before ending a stream (as its examples do).
decoder.onnx and joiner.onnx are the offline ones (:func:`mt2kd_lib.export.onnx_export.export_transducer`).
"""

from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch
from torch import Tensor, nn

from mt2kd_lib.export.onnx_export import (
    DEFAULT_OPSET,
    _copy_file,
    _eval_copy,
    _export,
    export_decoder_joiner,
)
from mt2kd_lib.models.student import StudentModel
from mt2kd_lib.models.zipformer.model import EncoderWithEmbed

PathLike = Union[str, Path]
LAYER_STATES = ("cached_key", "cached_nonlin_attn", "cached_val1", "cached_val2", "cached_conv1", "cached_conv2")
# batch axis of each layer state (sherpa-onnx stacks streams along it)
LAYER_STATE_BATCH_AXIS = (1, 1, 1, 1, 0, 0)
# sherpa-onnx's OnlineZipformer2TransducerModel builds the front end's cache as (N, 128, 3, F') whatever the model
SHERPA_EMBED_CHANNELS = 128


def state_names(encoder: EncoderWithEmbed) -> List[str]:
    n_layers = sum(encoder.config.num_encoder_layers)
    return [f"{s}_{i}" for i in range(n_layers) for s in LAYER_STATES] + ["embed_states", "processed_lens"]


def _state_axes(encoder: EncoderWithEmbed) -> List[int]:
    n_layers = sum(encoder.config.num_encoder_layers)
    return list(LAYER_STATE_BATCH_AXIS) * n_layers + [0, 0]


def _embed_channels(encoder: EncoderWithEmbed) -> int:
    c = encoder.encoder_embed.layer3_channels
    if c > SHERPA_EMBED_CHANNELS:
        raise ValueError(f"export_streaming_transducer: the front end has {c} channels; sherpa-onnx's streaming "
                         f"Zipformer2 keeps a cache of {SHERPA_EMBED_CHANNELS} (subsampling_channels[2] <= 128)")
    return c


def sherpa_state_shapes(encoder: EncoderWithEmbed, left_context_frames: int, batch_size: int = 1
                        ) -> List[Tuple[int, ...]]:
    """The state shapes of the exported encoder (those sherpa-onnx builds): ``get_init_states``'s, with the
    front end's cache widened to sherpa-onnx's 128 channels."""
    shapes = [tuple(s.shape) for s in encoder.get_init_states(left_context_frames, batch_size)]
    n, _, r, f = shapes[-2]
    shapes[-2] = (n, SHERPA_EMBED_CHANNELS, r, f)
    return shapes


class OnnxStreamingEncoder(nn.Module):
    """(fbank chunk, *states) -> (projected encoder output, *new states); every fbank frame of the chunk is valid."""

    def __init__(self, encoder: EncoderWithEmbed, encoder_proj: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder_proj = encoder_proj
        self.embed_channels = _embed_channels(encoder)

    def forward(self, x: Tensor, *states: Tensor) -> Tuple[Tensor, ...]:
        x_lens = torch.ones_like(x[:, :, 0], dtype=torch.int64).sum(dim=1)  # (N,) = T, batch-size dynamic
        states = list(states)
        c = self.embed_channels
        states[-2] = states[-2][:, :c]  # the channels this front end uses (sherpa-onnx's cache is 128 wide)
        out, _, new_states, _ = self.encoder.streaming_forward(x, x_lens, states)
        pad = SHERPA_EMBED_CHANNELS - c
        if pad > 0:  # zeros in the channels sherpa-onnx keeps but this model does not read
            new_states[-2] = nn.functional.pad(new_states[-2], (0, 0, 0, 0, 0, pad))
        return (self.encoder_proj(out), *new_states)


def streaming_metadata(encoder: EncoderWithEmbed, chunk_size: int, left_context_frames: int) -> Dict[str, str]:
    """The encoder metadata sherpa-onnx's OnlineZipformer2TransducerModel reads (see the module docstring)."""
    cfg = encoder.config
    join = lambda xs: ",".join(str(int(v)) for v in xs)  # noqa: E731
    return {
        "model_type": "zipformer2", "version": "1", "model_author": "mt2kd",
        "comment": f"streaming zipformer2 (mt2kd student), chunk {chunk_size} x 20 ms, "
                   f"left context {left_context_frames} x 20 ms",
        "decode_chunk_len": str(2 * chunk_size), "T": str(encoder.chunk_input_frames(chunk_size)),
        "chunk_size": str(chunk_size), "left_context_frames": str(left_context_frames),
        "num_encoder_layers": join(cfg.num_encoder_layers), "encoder_dims": join(cfg.encoder_dim),
        "cnn_module_kernels": join(cfg.cnn_module_kernel),
        "left_context_len": join(left_context_frames // d for d in cfg.downsampling_factor),
        "query_head_dims": join([cfg.query_head_dim] * len(cfg.encoder_dim)),
        "value_head_dims": join([cfg.value_head_dim] * len(cfg.encoder_dim)),
        "num_heads": join(cfg.num_heads),
    }


def export_streaming_transducer(model: StudentModel, out_dir: PathLike, tokens: PathLike, chunk_size: int,
                                left_context_frames: int, opset: int = DEFAULT_OPSET) -> Dict[str, Path]:
    """Write encoder.onnx (streaming), decoder.onnx, joiner.onnx and tokens.txt for sherpa-onnx's OnlineRecognizer."""
    from mt2kd_lib.models.factory import read_vocab_size

    if model.asr_head is None:
        raise RuntimeError("export_streaming_transducer: the model has no ASR (transducer) head")
    if not model.encoder.config.causal:
        raise ValueError("export_streaming_transducer: the encoder is not causal (train with --causal true)")
    model = _eval_copy(model)
    encoder, head = model.encoder, model.asr_head
    meta = streaming_metadata(encoder, chunk_size, left_context_frames)  # validates the chunk settings
    if read_vocab_size(Path(tokens)) != head.vocab_size:
        raise ValueError(f"export_streaming_transducer: {tokens} does not have the model's {head.vocab_size} tokens")
    out_dir = Path(out_dir)
    files: Dict[str, Path] = {}
    t_in = encoder.chunk_input_frames(chunk_size)
    # batch of 2 and random states: no shape specialised to 1, no branch taken on zeros
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, t_in, encoder.feature_dim, generator=g)
    states = encoder.get_init_states(left_context_frames, 2)
    states = [torch.randn(shape, generator=g) if s.is_floating_point() else s + left_context_frames
              for s, shape in zip(states, sherpa_state_shapes(encoder, left_context_frames, 2))]
    names = state_names(encoder)
    axes = {"x": {0: "N"}, "encoder_out": {0: "N"}}
    for name, ax in zip(names, _state_axes(encoder)):
        axes[name] = {ax: "N"}
        axes[f"new_{name}"] = {ax: "N"}
    files["encoder"] = _export(OnnxStreamingEncoder(encoder, head.joiner.encoder_proj).eval(), (x, *states),
                               out_dir / "encoder.onnx", ["x", *names], ["encoder_out", *[f"new_{n}" for n in names]],
                               axes, opset, meta)
    files.update(export_decoder_joiner(head, out_dir, opset))
    files["tokens"] = _copy_file(Path(tokens), out_dir / "tokens.txt")
    return files
