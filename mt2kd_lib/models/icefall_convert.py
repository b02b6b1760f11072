"""icefall Zipformer2 checkpoints <-> mt2kd models.

Reading: :func:`read_icefall_checkpoint` takes what icefall writes -- ``epoch-N.pt`` / ``checkpoint-B.pt``
(``{"model": ..., "model_avg": ..., <train params>}``), ``pretrained.pt`` (``{"model": ...}``) or an averaged
state_dict saved bare -- and :func:`icefall_to_mt2kd` turns it into an mt2kd model config plus a
:class:`StudentModel` state_dict (encoder, and the transducer head when it has one), :func:`load_icefall_weights`
loads it into an existing model. Every tensor is checked against the target's shape first; the first key that is
missing, differs or is left over is named with both shapes, and nothing is loaded then. Parts that are not
imported on purpose (a head when only the encoder is wanted, icefall's attention decoder) are logged and returned.

Writing: :func:`mt2kd_to_icefall` gives ``{"model": <icefall-named state_dict>, <icefall train params>}``, which
icefall's ``load_checkpoint`` (decode.py ``--use-averaged-model false``, export.py) reads; the model must then be
built with the options :func:`icefall_model_args` lists.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from mt2kd_lib.models.encoder_presets import ZipformerConfig, get_config
from mt2kd_lib.models.icefall_keys import (
    encoder_shapes,
    first_difference,
    head_config_from_shapes,
    icefall_encoder_key_to_ours,
    infer_encoder_config,
    is_encoder_key,
    is_head_key,
    is_unsupported_key,
    our_encoder_key_to_icefall,
    shapes_of,
    unused_bypass_scales,
)
from mt2kd_lib.models.transducer.transducer import TransducerHead

logger = logging.getLogger(__name__)

# Entries of icefall's checkpoint dict that are neither the model nor training params.
_NOT_PARAMS = {"model", "model_avg", "optimizer", "scheduler", "grad_scaler", "sampler"}


@dataclass
class IcefallCheckpoint:
    """An icefall model's state_dict (icefall key names) and the train params stored next to it (may be empty)."""

    path: str
    state: Dict[str, Tensor]
    params: Dict[str, Any] = field(default_factory=dict)

    def part(self, pred) -> Dict[str, Tensor]:
        return {k: v for k, v in self.state.items() if pred(k)}


@dataclass
class IcefallImport:
    """What :func:`icefall_to_mt2kd` made: a config ``build_student`` takes, its state_dict, and notes."""

    model_config: Dict[str, Any]
    state: Dict[str, Tensor]
    encoder_source: str  # where the encoder config came from
    skipped: List[str]  # icefall keys deliberately not imported


def read_icefall_checkpoint(path: Union[str, Path], use_model_avg: bool = False) -> IcefallCheckpoint:
    """Load an icefall checkpoint file; ``use_model_avg`` takes ``model_avg`` (epoch files) instead of ``model``."""
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: not an icefall checkpoint (a dict with 'model', or a state_dict)")
    if "model_config" in obj:
        raise ValueError(f"{path}: this is an mt2kd checkpoint (it has model_config), not an icefall one")
    key = "model_avg" if use_model_avg else "model"
    if isinstance(obj.get(key), dict):
        state, params = obj[key], {k: v for k, v in obj.items() if k not in _NOT_PARAMS}
    elif use_model_avg:
        raise ValueError(f"{path}: no 'model_avg' in this checkpoint (only epoch-N.pt files have one)")
    elif all(isinstance(v, Tensor) for v in obj.values()):
        state, params = obj, {}  # a bare (e.g. averaged) state_dict
    else:
        raise ValueError(f"{path}: no 'model' state_dict and not a bare state_dict (keys {sorted(obj)[:5]})")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    unknown = [k for k in state if not (is_encoder_key(k) or is_head_key(k) or is_unsupported_key(k))]
    if unknown:
        raise ValueError(f"{path}: key {unknown[0]} is not part of icefall's Zipformer2 AsrModel "
                         f"({len(unknown)} such keys)")
    if not any(k.startswith("encoder.encoders.") for k in state):
        raise ValueError(f"{path}: no Zipformer2 encoder (encoder.encoders.*) in this checkpoint")
    return IcefallCheckpoint(str(path), dict(state), params)


def _as_checkpoint(src: Union[str, Path, IcefallCheckpoint]) -> IcefallCheckpoint:
    return src if isinstance(src, IcefallCheckpoint) else read_icefall_checkpoint(src)


def _check(expected: Dict[str, tuple], found: Dict[str, tuple], what: str) -> None:
    diff = first_difference(expected, found)
    if diff is not None:
        raise ValueError(f"{what}: {diff}")


def _head_shapes(head_cfg: Mapping[str, Any], encoder_dim: int) -> Dict[str, tuple]:
    """Shapes of our TransducerHead (whose key names are icefall's) for ``heads.asr`` settings."""
    with torch.device("meta"):
        head = TransducerHead(encoder_dim=encoder_dim, **head_cfg)
    return shapes_of(head.state_dict())


def icefall_to_mt2kd(src: Union[str, Path, IcefallCheckpoint], preset: Any = None,
                     with_asr_head: bool = True) -> IcefallImport:
    """Convert an icefall checkpoint into an mt2kd config + StudentModel state_dict.

    Args:
      src: a checkpoint path or a :class:`IcefallCheckpoint`.
      preset: the encoder preset name / config to expect; by default it is inferred (the checkpoint's params, else
        the preset with the same shapes, else the shapes themselves). Any mismatch raises, naming the first key.
      with_asr_head: also import the transducer head (decoder, joiner, simple projections, CTC output).
    """
    ckpt = _as_checkpoint(src)
    enc = ckpt.part(is_encoder_key)
    found = shapes_of(enc)
    cfg, source = infer_encoder_config(found, ckpt.params, preset)
    _check(encoder_shapes(cfg), found, f"{ckpt.path}: the encoder does not match the one from {source}")
    state = {f"encoder.{icefall_encoder_key_to_ours(k)}": v for k, v in enc.items()
             if icefall_encoder_key_to_ours(k) is not None}
    model_config: Dict[str, Any] = {"encoder": cfg.to_dict(), "heads": {}}
    skipped = sorted(ckpt.part(is_unsupported_key))
    head_state = ckpt.part(is_head_key)
    head_cfg = head_config_from_shapes(shapes_of(head_state))
    if with_asr_head and head_cfg is not None:
        _check(_head_shapes(head_cfg, max(cfg.encoder_dim)), shapes_of(head_state),
               f"{ckpt.path}: the transducer head does not match its own decoder/joiner sizes {head_cfg}")
        state.update({f"asr_head.{k}": v for k, v in head_state.items()})
        model_config["heads"]["asr"] = head_cfg
    else:
        skipped += sorted(head_state)
    if skipped:
        logger.info(f"{ckpt.path}: {len(skipped)} tensors not imported, e.g. {skipped[:3]}")
    return IcefallImport(model_config, state, source, skipped)


def _encoder_of(model: nn.Module) -> nn.Module:
    """The :class:`EncoderWithEmbed` of a StudentModel / KDModel, or the model itself."""
    enc = getattr(model, "encoder", None)
    return enc if enc is not None and hasattr(enc, "encoder_embed") else model


def load_icefall_weights(model: nn.Module, src: Union[str, Path, IcefallCheckpoint],
                         parts: str = "encoder") -> Dict[str, int]:
    """Copy an icefall checkpoint into ``model`` (StudentModel, KDModel or EncoderWithEmbed).

    ``parts``: "encoder" (encoder_embed + encoder), or "all" (also the transducer head: ``model.asr_head`` must
    exist and have the checkpoint's vocabulary and sizes; a CTC branch only one side has is left out and logged).
    All shapes are checked before anything is copied. Returns the number of tensors loaded per part.
    """
    if parts not in ("encoder", "all"):
        raise ValueError(f"parts must be 'encoder' or 'all', got {parts!r}")
    ckpt = _as_checkpoint(src)
    encoder = _encoder_of(model)
    enc_src = ckpt.part(is_encoder_key)
    own = {our_encoder_key_to_icefall(k): v for k, v in encoder.state_dict().items()}
    own.update(unused_bypass_scales(own))
    _check(shapes_of(own), shapes_of(enc_src),
           f"{ckpt.path}: the icefall encoder does not fit this model's encoder (another preset?)")
    head_src = ckpt.part(is_head_key)
    head_load: Dict[str, Tensor] = {}
    left_out = sorted(ckpt.part(is_unsupported_key))
    if parts == "all":
        head = getattr(model, "asr_head", None)
        if head is None:
            raise ValueError(f"{ckpt.path}: parts='all' needs a model with an ASR (transducer) head")
        if "joiner.output_linear.weight" not in head_src:
            raise ValueError(f"{ckpt.path}: the checkpoint has no transducer head (joiner.*); load parts='encoder'")
        head_own = head.state_dict()
        ctc_only_here = [k for k in head_src if k.startswith("ctc_output.") and k not in head_own]
        head_load = {k: v for k, v in head_src.items() if k not in ctc_only_here}
        left_out += ctc_only_here
        has_ctc = [any(k.startswith("ctc_output.") for k in d) for d in (head_own, head_src)]
        if has_ctc[0] and not has_ctc[1]:
            logger.warning(f"{ckpt.path}: the checkpoint has no CTC output; the model's CTC branch stays as it is")
            head_own = {k: v for k, v in head_own.items() if not k.startswith("ctc_output.")}
        _check(shapes_of(head_own), shapes_of(head_load),
               f"{ckpt.path}: the icefall transducer head does not fit this model's (another vocabulary or size?)")
    else:
        left_out += sorted(head_src)
    # Every shape is known to fit: now copy.
    enc_load = {icefall_encoder_key_to_ours(k): v for k, v in enc_src.items() if icefall_encoder_key_to_ours(k)}
    encoder.load_state_dict(enc_load, strict=True)  # icefall's unused per-layer bypass_scale are not in it
    if head_load:
        # The shapes were checked; only a model-side CTC branch the checkpoint lacks may stay unloaded.
        missing, unexpected = getattr(model, "asr_head").load_state_dict(head_load, strict=False)
        assert not unexpected and all(k.startswith("ctc_output.") for k in missing), (missing, unexpected)
    counts = {"encoder": len(enc_load), "asr_head": len(head_load)}
    if left_out:
        logger.info(f"{ckpt.path}: {len(left_out)} tensors not loaded (parts={parts}), e.g. {left_out[:3]}")
    logger.info(f"loaded icefall weights from {ckpt.path}: {counts}")
    return counts


# ----------------------------------------------------------------------------------------------- the reverse
def icefall_params(cfg: ZipformerConfig, head_cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The train.py options icefall records in a checkpoint and needs to rebuild this model (its string form)."""
    def s(t) -> str:
        return ",".join(str(v) for v in t)

    p: Dict[str, Any] = {
        "num_encoder_layers": s(cfg.num_encoder_layers), "downsampling_factor": s(cfg.downsampling_factor),
        "encoder_dim": s(cfg.encoder_dim), "feedforward_dim": s(cfg.feedforward_dim), "num_heads": s(cfg.num_heads),
        "cnn_module_kernel": s(cfg.cnn_module_kernel), "encoder_unmasked_dim": s(cfg.encoder_unmasked_dim),
        "query_head_dim": str(cfg.query_head_dim), "pos_head_dim": str(cfg.pos_head_dim),
        "value_head_dim": str(cfg.value_head_dim), "pos_dim": cfg.pos_dim, "feature_dim": cfg.feature_dim,
        "subsampling_factor": 4, "causal": cfg.causal, "chunk_size": s(cfg.chunk_size),
        "left_context_frames": s(cfg.left_context_frames), "use_attention_decoder": False,
        "use_transducer": head_cfg is not None, "use_ctc": bool(head_cfg and head_cfg.get("use_ctc")),
    }
    if head_cfg is not None:
        p.update({k: int(head_cfg[k]) for k in ("vocab_size", "decoder_dim", "joiner_dim", "context_size",
                                                "blank_id")})
    return p


def icefall_model_args(params: Mapping[str, Any]) -> str:
    """The command-line options of icefall's zipformer decode.py / export.py that build this model."""
    def flag(v: Any) -> str:
        return str(int(v)) if isinstance(v, bool) else str(v)

    keys = ["num_encoder_layers", "downsampling_factor", "feedforward_dim", "num_heads", "encoder_dim",
            "encoder_unmasked_dim", "cnn_module_kernel", "query_head_dim", "value_head_dim", "pos_head_dim",
            "pos_dim", "causal", "chunk_size", "left_context_frames", "use_transducer", "use_ctc"]
    keys += [k for k in ("decoder_dim", "joiner_dim", "context_size") if k in params]
    return " ".join(f"--{k.replace('_', '-')} {flag(params[k])}" for k in keys)


def mt2kd_to_icefall(model: nn.Module, encoder_only: bool = False) -> Dict[str, Any]:
    """``{"model": state_dict with icefall's names, <icefall params>}`` for a StudentModel (or KDModel /
    EncoderWithEmbed with ``encoder_only``). icefall's AsrModel has no AT / SV heads: they are left out (logged).
    """
    encoder = _encoder_of(model)
    cfg: ZipformerConfig = get_config(encoder.config)
    enc = {our_encoder_key_to_icefall(k): v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    state: Dict[str, Tensor] = dict(enc)
    state.update(unused_bypass_scales(enc))
    head = getattr(model, "asr_head", None)
    head_cfg = None
    if not encoder_only:
        if head is None:
            raise ValueError("the model has no ASR head; icefall's AsrModel needs one (or pass encoder_only=True)")
        head_cfg = dict(vocab_size=head.vocab_size, decoder_dim=head.decoder.decoder_dim,
                        joiner_dim=head.joiner.output_linear.in_features, context_size=head.context_size,
                        blank_id=head.blank_id, use_ctc=head.ctc_output is not None)
        state.update({k: v.detach().cpu().clone() for k, v in head.state_dict().items()})
    dropped = [name for name in ("at_head", "sv_head", "kd_heads") if getattr(model, name, None) is not None]
    if encoder_only and head is not None:
        dropped.append("asr_head")
    if dropped:
        logger.info(f"icefall layout: {dropped} not written (icefall's AsrModel has no such modules)")
    return {"model": state, **icefall_params(cfg, head_cfg)}


def icefall_config_of(ckpt: Union[str, Path, IcefallCheckpoint]) -> ZipformerConfig:
    """The encoder config an icefall checkpoint holds (inferred as :func:`icefall_to_mt2kd` does)."""
    return get_config(icefall_to_mt2kd(ckpt, with_asr_head=False).model_config["encoder"])
