"""Names and shapes of icefall's Zipformer2 ``AsrModel`` (egs/librispeech/ASR/zipformer) next to ours.

icefall's state_dict (``checkpoint["model"]``) has top-level modules ``encoder_embed`` (Conv2dSubsampling),
``encoder`` (Zipformer2), ``decoder`` (stateless: ``embedding``, ``conv``), ``joiner`` (``encoder_proj``,
``decoder_proj``, ``output_linear``), ``simple_am_proj``, ``simple_lm_proj`` and, with ``--use-ctc``,
``ctc_output.1`` (Dropout, Linear, LogSoftmax). Ours (:class:`~mt2kd_lib.models.student.StudentModel`) holds the
same tensors under ``encoder.{encoder_embed,encoder}.*`` and ``asr_head.*``, with two differences inside the
encoder: icefall's layers carry an unused ``bypass_scale`` (we have none), and the feed-forward / convolution
``out_proj`` of icefall is one module whose weight and bias sit at ``out_proj.{weight,bias}``, ours at
``out_proj.linear.{weight,bias}``.

This module only renames keys and works out a :class:`ZipformerConfig` from a state_dict's shapes (or from the
training params icefall stores next to it); reading, checking and writing checkpoints is in
:mod:`mt2kd_lib.models.icefall_convert`.
"""

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from mt2kd_lib.models.encoder_presets import PRESETS, ZipformerConfig, build_encoder, get_config

# icefall AsrModel prefixes of the transducer / CTC head; ours has them under ``asr_head.``.
HEAD_PREFIXES = ("decoder.", "joiner.", "simple_am_proj.", "simple_lm_proj.", "ctc_output.")
# Parts of some icefall models we have no module for (attention-decoder rescoring).
UNSUPPORTED_PREFIXES = ("attention_decoder.",)

_OUT_PROJ_ICEFALL = re.compile(r"\.(feed_forward[123]|conv_module[12])\.out_proj\.(weight|bias)$")
_OUT_PROJ_OURS = re.compile(r"\.(feed_forward[123]|conv_module[12])\.out_proj\.linear\.(weight|bias)$")
# The unused per-layer parameter (BypassModule's ``bypass.bypass_scale`` is a different, used one).
_LAYER_BYPASS = re.compile(r"^encoder\.encoders\.\d+\.(encoder\.)?layers\.\d+\.bypass_scale$")
_LAYER_NORM = re.compile(r"^(encoder\.encoders\.\d+\.(?:encoder\.)?layers\.\d+\.)norm\.bias$")

# icefall's defaults for what a state_dict does not show (train.py --pos-head-dim / --encoder-unmasked-dim /
# --chunk-size / --left-context-frames); used only when neither a preset nor the checkpoint's params say.
ICEFALL_POS_HEAD_DIM = 4
ICEFALL_UNMASKED_DIM = (192, 192, 256, 256, 256, 192)
ICEFALL_CHUNK_SIZE = (16, 32, 64, -1)
ICEFALL_LEFT_CONTEXT = (64, 128, 256, -1)

Shapes = Dict[str, Tuple[int, ...]]


# ------------------------------------------------------------------------------------------- key renaming
def icefall_encoder_key_to_ours(key: str) -> Optional[str]:
    """``encoder_embed.*`` / ``encoder.*`` of icefall -> the same key in :class:`EncoderWithEmbed`;
    None for icefall's unused per-layer ``bypass_scale``."""
    if _LAYER_BYPASS.match(key):
        return None
    return _OUT_PROJ_ICEFALL.sub(r".\1.out_proj.linear.\2", key)


def our_encoder_key_to_icefall(key: str) -> str:
    """Inverse of :func:`icefall_encoder_key_to_ours` (the dropped ``bypass_scale`` is added separately)."""
    return _OUT_PROJ_OURS.sub(r".\1.out_proj.\2", key)


def is_encoder_key(key: str) -> bool:
    return key.startswith("encoder_embed.") or key.startswith("encoder.")


def is_head_key(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def is_unsupported_key(key: str) -> bool:
    return key.startswith(UNSUPPORTED_PREFIXES)


def unused_bypass_scales(encoder_state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """icefall's unused ``layers.N.bypass_scale`` for every layer of an icefall-named encoder state_dict
    (filled with 0.5, its value at construction), so icefall's non-strict loader finds every key it expects."""
    out = {}
    for key, value in encoder_state.items():
        m = _LAYER_NORM.match(key)
        if m:
            out[m.group(1) + "bypass_scale"] = torch.full(value.shape, 0.5, dtype=value.dtype)
    return out


# ------------------------------------------------------------------------------------------- shape tables
def encoder_shapes(cfg: ZipformerConfig) -> Shapes:
    """icefall-named key -> shape of the encoder a config describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        enc = build_encoder(cfg)
    state = {our_encoder_key_to_icefall(k): v for k, v in enc.state_dict().items()}
    state.update(unused_bypass_scales(state))
    return {k: tuple(v.shape) for k, v in state.items()}


def shapes_of(state: Mapping[str, torch.Tensor], keys: Optional[Iterable[str]] = None) -> Shapes:
    keys = state.keys() if keys is None else keys
    return {k: tuple(state[k].shape) for k in keys}


def first_difference(expected: Shapes, found: Shapes) -> Optional[str]:
    """A sentence naming the first key (in ``expected``'s order) that is missing or has another shape, then the
    first unexpected key; None when both tables agree."""
    for k, shape in expected.items():
        if k not in found:
            return f"key {k} (shape {list(shape)}) is missing from the checkpoint"
        if found[k] != shape:
            return f"key {k} has shape {list(found[k])} in the checkpoint but {list(shape)} in the model"
    extra = [k for k in found if k not in expected]
    if extra:
        return f"key {extra[0]} (shape {list(found[extra[0]])}) of the checkpoint has no place in the model" + (
            f" ({len(extra) - 1} more such keys)" if len(extra) > 1 else "")
    return None


# ------------------------------------------------------------------------------------------- config inference
def _ints(v: Any) -> Tuple[int, ...]:
    """icefall stores tuple options as strings ("2,2,3,4,3,2"); accept those, ints and sequences."""
    if isinstance(v, str):
        return tuple(int(x) for x in v.split(",") if x.strip())
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v),)


def _single(name: str, v: Any) -> int:
    vals = set(_ints(v))
    if len(vals) != 1:
        raise ValueError(f"icefall param {name}={v!r} differs between stacks; mt2kd's ZipformerConfig takes one "
                         f"value for every stack")
    return vals.pop()


_PARAM_TUPLES = ("num_encoder_layers", "downsampling_factor", "encoder_dim", "feedforward_dim", "num_heads",
                 "cnn_module_kernel", "encoder_unmasked_dim")


def config_from_params(params: Mapping[str, Any]) -> Optional[ZipformerConfig]:
    """The encoder config recorded in an icefall ``epoch-N.pt`` (train.py stores its params next to the model);
    None when the checkpoint carries no such params (``pretrained.pt``, averaged state_dicts)."""
    if not all(k in params for k in _PARAM_TUPLES):
        return None
    kw: Dict[str, Any] = {k: _ints(params[k]) for k in _PARAM_TUPLES}
    for k in ("query_head_dim", "value_head_dim", "pos_head_dim"):
        if k in params:
            kw[k] = _single(k, params[k])
    for k in ("pos_dim", "feature_dim"):
        if k in params:
            kw[k] = int(params[k])
    kw["causal"] = bool(params.get("causal", False))
    if kw["causal"]:
        kw["chunk_size"] = _ints(params.get("chunk_size", ICEFALL_CHUNK_SIZE))
        kw["left_context_frames"] = _ints(params.get("left_context_frames", ICEFALL_LEFT_CONTEXT))
    return ZipformerConfig(**kw)


def config_from_shapes(found: Shapes) -> ZipformerConfig:
    """Work out the encoder config from an icefall encoder's shapes.

    Shapes fix the layer counts, dims, heads x head dims and kernels; the split of ``in_proj`` between query and
    position heads assumes icefall's ``pos_head_dim`` = 4, and what shapes cannot show (``encoder_unmasked_dim``,
    used only by training-time feature masking; a causal model's chunk sizes) takes icefall's defaults.
    """
    stacks = sorted({int(m.group(1)) for k in found for m in [re.match(r"encoder\.encoders\.(\d+)\.", k)] if m})
    if not stacks or stacks != list(range(len(stacks))):
        raise ValueError(f"no encoder stacks encoder.encoders.<i>.* in the checkpoint (found indices {stacks})")
    kw: Dict[str, List[int]] = {k: [] for k in ("num_encoder_layers", "downsampling_factor", "encoder_dim",
                                                  "feedforward_dim", "num_heads", "cnn_module_kernel")}
    qhd, vhd, pos_dim, causal = set(), set(), set(), set()
    for i in stacks:
        ds = found.get(f"encoder.encoders.{i}.downsample.bias", (1,))[0]
        p = f"encoder.encoders.{i}." + ("encoder." if ds > 1 else "") + "layers."
        layers = {int(k[len(p):].split(".")[0]) for k in found if k.startswith(p)}
        l0 = p + "0."

        def need(k: str) -> Tuple[int, ...]:
            if l0 + k not in found:
                raise ValueError(f"key {l0 + k} is missing from the checkpoint")
            return found[l0 + k]

        heads = need("self_attn_weights.linear_pos.weight")[0] // ICEFALL_POS_HEAD_DIM
        kw["num_encoder_layers"].append(len(layers))
        kw["downsampling_factor"].append(ds)
        kw["encoder_dim"].append(need("norm.bias")[0])
        kw["feedforward_dim"].append(need("feed_forward2.in_proj.weight")[0])
        kw["num_heads"].append(heads)
        is_causal = l0 + "conv_module1.depthwise_conv.chunkwise_conv.weight" in found
        causal.add(is_causal)
        kw["cnn_module_kernel"].append(
            need("conv_module1.depthwise_conv." + ("chunkwise_conv.weight" if is_causal else "weight"))[-1])
        qhd.add((need("self_attn_weights.in_proj.weight")[0] // heads - ICEFALL_POS_HEAD_DIM) // 2)
        vhd.add(need("self_attn1.in_proj.weight")[0] // heads)
        pos_dim.add(need("self_attn_weights.linear_pos.weight")[1])
    for name, vals in (("query_head_dim", qhd), ("value_head_dim", vhd), ("pos_dim", pos_dim)):
        if len(vals) != 1:
            raise ValueError(f"the checkpoint's {name} differs between stacks ({sorted(vals)}); mt2kd's "
                             f"ZipformerConfig takes one value for every stack")
    dims = kw["encoder_dim"]
    unmasked = [min(d, u) for d, u in zip(dims, ICEFALL_UNMASKED_DIM)] if len(dims) == 6 else list(dims)
    is_causal = causal.pop() if len(causal) == 1 else False
    extra: Dict[str, Any] = {}
    if is_causal:
        extra = dict(chunk_size=ICEFALL_CHUNK_SIZE, left_context_frames=ICEFALL_LEFT_CONTEXT)
    return ZipformerConfig(**kw, encoder_unmasked_dim=unmasked, query_head_dim=qhd.pop(), value_head_dim=vhd.pop(),
                           pos_head_dim=ICEFALL_POS_HEAD_DIM, pos_dim=pos_dim.pop(), causal=is_causal, **extra)


def matching_presets(found: Shapes) -> List[str]:
    """Names of the presets whose encoder has exactly these icefall-named keys and shapes."""
    return [name for name in PRESETS if _preset_shapes(name) == found]


_PRESET_SHAPES: Dict[str, Shapes] = {}


def _preset_shapes(name: str) -> Shapes:
    if name not in _PRESET_SHAPES:  # about 0.5 s per preset: built once per process
        _PRESET_SHAPES[name] = encoder_shapes(PRESETS[name])
    return _PRESET_SHAPES[name]


def infer_encoder_config(found: Shapes, params: Optional[Mapping[str, Any]] = None,
                         preset: Any = None) -> Tuple[ZipformerConfig, str]:
    """(config, where it came from): the preset/config given > the checkpoint's params > the one preset with
    these shapes > the shapes themselves. The result is not yet checked against ``found`` (the caller does)."""
    if preset is not None:
        return get_config(preset), f"given ({preset if isinstance(preset, str) else 'config'})"
    cfg = config_from_params(params or {})
    if cfg is not None:
        return cfg, "the checkpoint's icefall params"
    names = matching_presets(found)
    if len(names) == 1:
        return get_config(names[0]), f"preset {names[0]} (same shapes)"
    return config_from_shapes(found), "the checkpoint's shapes"


def head_config_from_shapes(found: Shapes) -> Optional[Dict[str, Any]]:
    """``heads.asr`` settings of the transducer head in an icefall state_dict; None when it has none."""
    if "joiner.output_linear.weight" not in found:
        return None
    for k in ("decoder.embedding.weight", "joiner.encoder_proj.weight", "simple_am_proj.weight"):
        if k not in found:
            raise ValueError(f"the checkpoint has a joiner but no {k}")
    vocab, joiner_dim = found["joiner.output_linear.weight"]
    return dict(
        vocab_size=vocab,
        decoder_dim=found["decoder.embedding.weight"][1],
        joiner_dim=joiner_dim,
        context_size=found["decoder.conv.weight"][-1] if "decoder.conv.weight" in found else 1,
        blank_id=0,  # icefall's <blk>
        use_ctc="ctc_output.1.weight" in found,
    )
