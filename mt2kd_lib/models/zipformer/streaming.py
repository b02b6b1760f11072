"""Chunk-by-chunk running of a causal :class:`EncoderWithEmbed` over whole utterances.

A stream of fbank frames is cut into chunks of ``chunk_input_frames(C)`` frames that start ``2 * C`` frames apart
(C = chunk size in 50 Hz frames); the encoder's states carry the left context from one chunk to the next. This is
how a live stream is processed (icefall's streaming_decode.py, sherpa-onnx's OnlineRecognizer), written here for
a padded batch of utterances known in advance: tests and offline measurements of streaming accuracy.

Equivalence with the full pass ``forward(chunk_size=C, left_context_chunks=L // C)``: exact (up to float rounding)
when L is a multiple of C, except for an utterance shorter than one chunk, where the full pass (as icefall's)
scales its chunk-wise convolutions for a chunk of the utterance's length, the streaming pass for a whole chunk.
"""

from dataclasses import dataclass
from typing import Iterator, List, Tuple

import torch
from torch import Tensor

from mt2kd_lib.models.zipformer.model import EncoderWithEmbed


@dataclass
class Chunk:
    """fbank frames of chunk ``index`` (N, chunk_input_frames, F) and their valid counts (N,)."""

    index: int
    features: Tensor
    feature_lens: Tensor


def num_chunks(feature_lens: Tensor, chunk_size: int) -> int:
    """Chunks needed to cover the longest utterance's (T - 7) // 2 frames at 50 Hz."""
    t50 = int(torch.div(feature_lens.max() - 7, 2, rounding_mode="floor"))
    return max(1, -(-t50 // chunk_size))


def iter_chunks(encoder: EncoderWithEmbed, features: Tensor, feature_lens: Tensor,
                chunk_size: int) -> Iterator[Chunk]:
    """Cut padded utterances (N, T, F) into the overlapping chunks :meth:`EncoderWithEmbed.streaming_forward`
    takes; frames past the end are zeros and not counted in ``feature_lens``."""
    t_in = encoder.chunk_input_frames(chunk_size)
    N, _, F = features.shape
    for k in range(num_chunks(feature_lens, chunk_size)):
        start = 2 * chunk_size * k
        x = features[:, start: start + t_in]
        if x.shape[1] < t_in:
            x = torch.cat([x, x.new_zeros(N, t_in - x.shape[1], F)], dim=1)
        yield Chunk(k, x, (feature_lens - start).clamp(min=0, max=t_in))


@torch.no_grad()
def streaming_encode(encoder: EncoderWithEmbed, features: Tensor, feature_lens: Tensor, chunk_size: int,
                     left_context_frames: int) -> Tuple[Tensor, Tensor, List[Tuple[Tensor, Tensor]]]:
    """Run ``encoder`` chunk by chunk over (N, T, F) fbank and concatenate the outputs.

    Returns what :meth:`EncoderWithEmbed.forward_with_stacks` does: (out (N, T', D), out_lens,
    [(stack_out (N, T50, d_i), lens50)]), with T' and T50 rounded up to whole chunks.
    """
    if encoder.training:
        raise RuntimeError("streaming_encode needs an eval-mode encoder")
    states = encoder.get_init_states(left_context_frames, features.shape[0], features.device)
    outs, out_lens = [], torch.zeros_like(feature_lens)
    stacks: List[List[Tuple[Tensor, Tensor]]] = []
    for chunk in iter_chunks(encoder, features, feature_lens, chunk_size):
        out, lens, states, stack_outs = encoder.streaming_forward(chunk.features, chunk.feature_lens, states)
        outs.append(out)
        out_lens = out_lens + lens
        stacks.append(stack_outs)
    lens50 = states[-1]
    stack_list = [(torch.cat([s[i][0] for s in stacks], dim=1), lens50) for i in range(len(stacks[0]))]
    return torch.cat(outs, dim=1), out_lens, stack_list
