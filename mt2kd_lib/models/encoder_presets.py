"""Zipformer2 encoder configurations (``ZipformerConfig``), named presets and ``build_encoder``.

Presets follow icefall's LibriSpeech zipformer recipes ("M" = default 65.5M transducer, "S" = small);
"xs", "tiny" and "tiny-causal" are CPU-sized variants for benchmarks, tests and egs/mini.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from mt2kd_lib.models.zipformer.model import EncoderWithEmbed

IntTuple = Tuple[int, ...]


@dataclass
class ZipformerConfig:
    """Hyper-parameters of Conv2dSubsampling + Zipformer2 (per-stack tuples of equal length)."""

    num_encoder_layers: IntTuple = (2, 2, 3, 4, 3, 2)
    downsampling_factor: IntTuple = (1, 2, 4, 8, 4, 2)
    encoder_dim: IntTuple = (192, 256, 384, 512, 384, 256)
    feedforward_dim: IntTuple = (512, 768, 1024, 1536, 1024, 768)
    num_heads: IntTuple = (4, 4, 4, 8, 4, 4)
    cnn_module_kernel: IntTuple = (31, 31, 15, 15, 15, 31)
    encoder_unmasked_dim: IntTuple = (192, 192, 256, 256, 256, 192)
    query_head_dim: int = 32
    value_head_dim: int = 12
    pos_head_dim: int = 4
    pos_dim: int = 48
    feature_dim: int = 80
    # Conv2dSubsampling's three conv layers (icefall: 8, 32, 128). At the tiny sizes the 128-channel ConvNeXt
    # costs more than the whole encoder, so egs/mini's students halve its width (see RESULTS_NOTES.md).
    subsampling_channels: IntTuple = (8, 32, 128)
    causal: bool = False
    chunk_size: IntTuple = (-1,)
    left_context_frames: IntTuple = (-1,)
    # None: icefall's schedule 0.3 -> 0.1 over 20k batches; a float gives a constant rate.
    dropout: Optional[float] = None
    warmup_batches: float = 4000.0

    def __post_init__(self) -> None:
        for f in ("num_encoder_layers", "downsampling_factor", "encoder_dim", "feedforward_dim",
                  "num_heads", "cnn_module_kernel", "encoder_unmasked_dim", "chunk_size",
                  "left_context_frames", "subsampling_channels"):
            setattr(self, f, tuple(int(v) for v in getattr(self, f)))
        n = len(self.downsampling_factor)
        for f in ("num_encoder_layers", "encoder_dim", "feedforward_dim", "num_heads",
                  "cnn_module_kernel", "encoder_unmasked_dim"):
            if len(getattr(self, f)) != n:
                raise ValueError(f"ZipformerConfig.{f} has {len(getattr(self, f))} entries, "
                                 f"expected {n} (len(downsampling_factor))")
        for d, u in zip(self.encoder_dim, self.encoder_unmasked_dim):
            if u > d:
                raise ValueError(f"encoder_unmasked_dim {u} exceeds encoder_dim {d}")
        if len(self.subsampling_channels) != 3 or min(self.subsampling_channels) < 1:
            raise ValueError(f"subsampling_channels needs 3 positive entries, got {self.subsampling_channels}")
        for k in self.cnn_module_kernel:
            if k % 2 != 1:
                raise ValueError(f"cnn_module_kernel entries must be odd, got {k}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain-dict form (lists for tuples), e.g. for checkpoints / YAML."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ZipformerConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ZipformerConfig keys: {unknown}")
        return cls(**d)


_TINY = dict(
    num_encoder_layers=(1, 1, 1, 1, 1, 1),
    encoder_dim=(64, 96, 96, 96, 96, 96),
    feedforward_dim=(128, 192, 192, 192, 192, 192),
    num_heads=(2, 2, 4, 4, 4, 2),
    cnn_module_kernel=(15, 15, 7, 7, 7, 15),
    encoder_unmasked_dim=(64, 64, 64, 64, 64, 64),
    query_head_dim=16,
    value_head_dim=8,
    pos_dim=32,
)

PRESETS: Dict[str, ZipformerConfig] = {
    "M": ZipformerConfig(),
    "S": ZipformerConfig(
        num_encoder_layers=(2, 2, 2, 2, 2, 2),
        encoder_dim=(192, 256, 256, 256, 256, 256),
        feedforward_dim=(512, 768, 768, 768, 768, 768),
        num_heads=(4, 4, 4, 8, 4, 4),
        cnn_module_kernel=(31, 31, 15, 15, 15, 31),
        encoder_unmasked_dim=(192, 192, 192, 192, 192, 192),
    ),
    "xs": ZipformerConfig(
        num_encoder_layers=(1, 1, 1, 1, 1, 1),
        encoder_dim=(96, 128, 128, 128, 128, 128),
        feedforward_dim=(256, 384, 384, 384, 384, 384),
        num_heads=(4, 4, 4, 8, 4, 4),
        cnn_module_kernel=(31, 31, 15, 15, 15, 31),
        encoder_unmasked_dim=(96, 96, 96, 96, 96, 96),
    ),
    "tiny": ZipformerConfig(**_TINY),
    "tiny-causal": ZipformerConfig(**_TINY, causal=True, chunk_size=(16, 32, 64, -1),
                                   left_context_frames=(64, 128, 256, -1)),
}


def get_config(cfg_or_name: Union[str, ZipformerConfig, Dict[str, Any]]) -> ZipformerConfig:
    """Resolve a preset name, a dict (optionally with ``preset`` plus overrides) or a config."""
    if isinstance(cfg_or_name, ZipformerConfig):
        return cfg_or_name
    if isinstance(cfg_or_name, str):
        if cfg_or_name not in PRESETS:
            raise ValueError(f"unknown encoder preset {cfg_or_name!r}; known: {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[cfg_or_name])
    if isinstance(cfg_or_name, dict):
        d = dict(cfg_or_name)
        base = d.pop("preset", None)
        if base is None:
            return ZipformerConfig.from_dict(d)
        merged = get_config(str(base)).to_dict()
        merged.update(d)
        return ZipformerConfig.from_dict(merged)
    raise ValueError(f"cannot build a ZipformerConfig from {type(cfg_or_name).__name__}")


# icefall's streaming zipformer defaults (train.py --chunk-size / --left-context-frames, 50 Hz frames): one of each
# is drawn per training batch; -1 = full context. Streaming decoding then uses one chunk size and left context.
DEFAULT_CHUNK_SIZES: IntTuple = (16, 32, 64, -1)
DEFAULT_LEFT_CONTEXT_FRAMES: IntTuple = (64, 128, 256, -1)


def causal_encoder_config(cfg_or_name: Union[str, ZipformerConfig, Dict[str, Any]],
                          chunk_size: Tuple[int, ...] = DEFAULT_CHUNK_SIZES,
                          left_context_frames: Tuple[int, ...] = DEFAULT_LEFT_CONTEXT_FRAMES) -> Dict[str, Any]:
    """The dict form of ``cfg_or_name`` made causal and trained with random chunk sizes / left contexts.

    ValueError naming the bad entry when a chunk size cannot be produced at every stack's rate and the 25 Hz
    output, or a left context is not a whole number of frames at every stack's rate.
    """
    cfg = get_config(cfg_or_name)
    need_c = 2
    for d in cfg.downsampling_factor:
        need_c = need_c * d // _gcd(need_c, d)
    need_l = 1
    for d in cfg.downsampling_factor:
        need_l = need_l * d // _gcd(need_l, d)
    for c in chunk_size:
        if c == 0 or c < -1 or (c > 0 and c % need_c):
            raise ValueError(f"chunk size {c} (50 Hz frames): must be -1 (full context) or a positive multiple "
                             f"of {need_c} (the downsampling factors {cfg.downsampling_factor} and the 25 Hz output)")
    for lf in left_context_frames:
        if lf == 0 or lf < -1 or (lf > 0 and lf % need_l):
            raise ValueError(f"left context {lf} (50 Hz frames): must be -1 (all) or a positive multiple of {need_l}")
    if not chunk_size or not left_context_frames:
        raise ValueError("causal_encoder_config: chunk_size and left_context_frames need at least one entry")
    d = cfg.to_dict()
    d.update(causal=True, chunk_size=list(chunk_size), left_context_frames=list(left_context_frames))
    return d


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def build_encoder(cfg_or_name: Union[str, ZipformerConfig, Dict[str, Any]]) -> EncoderWithEmbed:
    """Build Conv2dSubsampling + Zipformer2 from a preset name, a config or a dict."""
    return EncoderWithEmbed(get_config(cfg_or_name))


__all__ = ["ZipformerConfig", "PRESETS", "get_config", "build_encoder", "causal_encoder_config",
           "DEFAULT_CHUNK_SIZES", "DEFAULT_LEFT_CONTEXT_FRAMES"]

