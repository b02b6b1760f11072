"""``--causal``, ``--chunk-size``, ``--left-context-frames``: the streaming options both training CLIs share
(icefall's zipformer/train.py names). With ``--causal true`` the model config's encoder becomes causal and each
training batch draws one chunk size and one left context from the lists (-1 = full context), so one model serves
every chunk size at decoding time and still runs non-streaming."""

import argparse
from typing import Any, Dict, Tuple

from mt2kd_lib.models.encoder_presets import (
    DEFAULT_CHUNK_SIZES,
    DEFAULT_LEFT_CONTEXT_FRAMES,
    causal_encoder_config,
)
from mt2kd_lib.training.launch import str2bool


def int_list(text: str) -> Tuple[int, ...]:
    """argparse type: ``"16,32,64,-1"`` -> (16, 32, 64, -1)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def add_streaming_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--causal", type=str2bool, default=False,
                   help="true: a causal (streaming) encoder trained with random chunk sizes and left contexts")
    p.add_argument("--chunk-size", type=int_list, default=DEFAULT_CHUNK_SIZES,
                   help="with --causal true: chunk sizes in 50 Hz frames drawn per batch (-1: full context)")
    p.add_argument("--left-context-frames", type=int_list, default=DEFAULT_LEFT_CONTEXT_FRAMES,
                   help="with --causal true: left contexts in 50 Hz frames drawn per batch (-1: all)")


def apply_streaming_args(model_cfg: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """``model_cfg`` with a causal encoder when ``--causal true`` (unchanged otherwise)."""
    if not args.causal:
        return model_cfg
    cfg = dict(model_cfg)
    cfg["encoder"] = causal_encoder_config(model_cfg["encoder"], args.chunk_size, args.left_context_frames)
    return cfg
