"""``EncoderWithEmbed``: fbank (N, T, 80) at 100 Hz -> Conv2dSubsampling (50 Hz) -> Zipformer2 ->
(N, T', D) at 25 Hz.  This is the encoder module the rest of mt2kd uses."""

from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mt2kd_lib.data.frames import MIN_INPUT_FRAMES  # noqa: F401 (defined once there; re-exported)
from mt2kd_lib.models.zipformer.encoder import Zipformer2
from mt2kd_lib.models.zipformer.scaling import ScheduledFloat, make_pad_mask
from mt2kd_lib.models.zipformer.subsampling import Conv2dSubsampling

if TYPE_CHECKING:  # avoid a runtime import cycle with encoder_presets
    from mt2kd_lib.models.encoder_presets import ZipformerConfig


class EncoderWithEmbed(nn.Module):
    """Conv2dSubsampling + Zipformer2.

    Attributes:
      output_dim: channels of the 25 Hz output (= max(encoder_dim), as in icefall).
      stack_dims: channels of each stack's output (see :meth:`forward_with_stacks`).
      config: the :class:`ZipformerConfig` it was built from.
    """

    def __init__(self, cfg: "ZipformerConfig") -> None:
        super().__init__()
        self.config = cfg
        dims = list(cfg.encoder_dim)
        dropout = cfg.dropout if cfg.dropout is not None else ScheduledFloat((0.0, 0.3), (20000.0, 0.1))
        c1, c2, c3 = cfg.subsampling_channels
        self.encoder_embed = Conv2dSubsampling(cfg.feature_dim, dims[0], layer1_channels=c1,
                                               layer2_channels=c2, layer3_channels=c3, dropout=dropout)
        self.encoder = Zipformer2(
            output_downsampling_factor=2,
            downsampling_factor=tuple(cfg.downsampling_factor),
            encoder_dim=tuple(dims),
            num_encoder_layers=tuple(cfg.num_encoder_layers),
            encoder_unmasked_dim=tuple(cfg.encoder_unmasked_dim),
            query_head_dim=cfg.query_head_dim,
            pos_head_dim=cfg.pos_head_dim,
            value_head_dim=cfg.value_head_dim,
            num_heads=tuple(cfg.num_heads),
            feedforward_dim=tuple(cfg.feedforward_dim),
            cnn_module_kernel=tuple(cfg.cnn_module_kernel),
            pos_dim=cfg.pos_dim,
            dropout=dropout,
            warmup_batches=cfg.warmup_batches,
            causal=cfg.causal,
            chunk_size=tuple(cfg.chunk_size),
            left_context_frames=tuple(cfg.left_context_frames),
        )
        self.feature_dim = cfg.feature_dim
        self.output_dim = max(dims)
        self.stack_dims = dims

    def _check_input(self, features: Tensor, feature_lens: Tensor) -> None:
        if features.ndim != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"features must be (N, T, {self.feature_dim}), got {tuple(features.shape)}")
        N, T, _ = features.shape
        if feature_lens.ndim != 1 or feature_lens.shape[0] != N:
            raise ValueError(f"feature_lens must be ({N},), got {tuple(feature_lens.shape)}")
        if T < MIN_INPUT_FRAMES:
            raise ValueError(f"need at least {MIN_INPUT_FRAMES} frames, got T={T}")
        too_short = (feature_lens < MIN_INPUT_FRAMES).nonzero().flatten().tolist()
        if too_short:
            raise ValueError(f"utterance(s) {too_short} have fewer than {MIN_INPUT_FRAMES} frames "
                             f"(lengths {feature_lens[too_short].tolist()})")
        too_long = (feature_lens > T).nonzero().flatten().tolist()
        if too_long:
            raise ValueError(f"utterance(s) {too_long} have length > T={T}")
        if not torch.isfinite(features).all():
            bad = (~torch.isfinite(features)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"non-finite feature values in utterance(s) {bad}")

    def forward_with_stacks(self, features: Tensor, feature_lens: Tensor,
                            chunk_size: Optional[int] = None,
                            left_context_chunks: Optional[int] = None,
                            ) -> Tuple[Tensor, Tensor, List[Tuple[Tensor, Tensor]]]:
        """features: (N, T, feature_dim); feature_lens: (N,).

        Returns (out (N, T', output_dim) at 25 Hz, out_lens (N,),
        [(stack_out (N, T50, stack_dims[i]), lens50 (N,)) for each stack]) where T50 = (T-7)//2.
        ``chunk_size`` (50 Hz frames) / ``left_context_chunks`` override the causal chunking.
        """
        self._check_input(features, feature_lens)
        x, x_lens = self.encoder_embed(features, feature_lens)  # (N, T50, D0)
        T50 = x.shape[1]
        mask = make_pad_mask(x_lens, T50) if int(x_lens.min()) < T50 else None
        x = x.permute(1, 0, 2)  # (T50, N, D0)
        out, out_lens, stacks = self.encoder(x, x_lens, src_key_padding_mask=mask,
                                             chunk_size=chunk_size,
                                             left_context_chunks=left_context_chunks)
        out = out.permute(1, 0, 2)
        stack_outputs = [(s.permute(1, 0, 2), x_lens) for s in stacks]
        return out, out_lens, stack_outputs

    # ----------------------------------------------------------------- streaming (causal models)
    def chunk_input_frames(self, chunk_size: int) -> int:
        """fbank frames fed per chunk of ``chunk_size`` 50 Hz frames: 2 * chunk_size + 7 (the convs'
        receptive field) + 2 * lookahead (the ConvNeXt's right context); consecutive chunks start
        2 * chunk_size frames apart, so they overlap by the last two terms."""
        self.encoder.check_chunk_size(chunk_size)
        return 2 * chunk_size + 7 + 2 * self.encoder_embed.lookahead

    def get_init_states(self, left_context_frames: int, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> List[Tensor]:
        """Zero states for :meth:`streaming_forward`: 6 per layer (see Zipformer2EncoderLayer), then the
        subsampling's ConvNeXt cache (N, layer3 channels, 3, F') and the processed 50 Hz frames (N,) int64 -- the
        layout of icefall's streaming Zipformer2 and of sherpa-onnx's OnlineZipformer2TransducerModel."""
        states = self.encoder.get_init_states(left_context_frames, batch_size, device)
        states.append(self.encoder_embed.get_init_states(batch_size, device))
        states.append(torch.zeros(batch_size, dtype=torch.int64, device=device))
        return states

    def streaming_forward(self, features: Tensor, feature_lens: Tensor, states: List[Tensor],
                          ) -> Tuple[Tensor, Tensor, List[Tensor], List[Tuple[Tensor, Tensor]]]:
        """One chunk of a causal encoder in eval mode.

        features: (N, chunk_input_frames(C), feature_dim), the fbank frames 2*C*k .. of chunk k;
        feature_lens: (N,) valid frames of it (fewer in an utterance's last chunk; the rest is padding);
        states: from :meth:`get_init_states` or the previous call (their shapes fix the left context).

        Returns (out (N, C/2, output_dim) at 25 Hz, out_lens (N,), new states,
        [(stack output (N, C, stack_dims[i]), valid 50 Hz frames (N,))] for each stack). Chunk by chunk, the outputs equal those of
        the full pass under the same chunk mask, ``forward(chunk_size=C, left_context_chunks=L // C)``,
        when the left context L is a multiple of C (see :func:`mt2kd_lib.models.zipformer.streaming.streaming_encode`).
        """
        if features.ndim != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"features must be (N, T, {self.feature_dim}), got {tuple(features.shape)}")
        n_layers = sum(self.config.num_encoder_layers)
        if len(states) != 6 * n_layers + 2:
            raise ValueError(f"expected {6 * n_layers + 2} states (6 per layer + 2), got {len(states)}")
        T = features.shape[1]
        chunk = (T - 7) // 2 - self.encoder_embed.lookahead
        if chunk <= 0 or self.chunk_input_frames(chunk) != T:
            raise ValueError(f"a chunk of {T} fbank frames is not 2 * chunk_size + "
                             f"{7 + 2 * self.encoder_embed.lookahead} for any chunk_size")
        x, x_lens, embed_cache = self.encoder_embed.streaming_forward(features, feature_lens, states[-2])
        processed = states[-1]
        left = states[0].shape[0]
        # cached positions not yet filled (start of the stream) are masked like padding
        cached_mask = torch.arange(left, device=x.device).unsqueeze(0) < (left - processed).unsqueeze(1)
        chunk_mask = make_pad_mask(x_lens, chunk)
        mask = torch.cat([cached_mask, chunk_mask], dim=1)
        out, out_lens, new_states, stacks = self.encoder.streaming_forward(x.permute(1, 0, 2), x_lens,
                                                                           states[:-2], mask)
        new_states += [embed_cache, processed + x_lens]
        return out.permute(1, 0, 2), out_lens, new_states, [(s.permute(1, 0, 2), x_lens) for s in stacks]

    def forward(self, features: Tensor, feature_lens: Tensor, chunk_size: Optional[int] = None,
                left_context_chunks: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """features: (N, T, feature_dim), feature_lens: (N,) -> ((N, T', output_dim), (N,)) at 25 Hz,
        T' = ceil(((T - 7) // 2) / 2)."""
        out, out_lens, _ = self.forward_with_stacks(features, feature_lens, chunk_size,
                                                    left_context_chunks)
        return out, out_lens
