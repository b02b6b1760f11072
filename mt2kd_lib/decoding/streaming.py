"""Streaming inference of a causal student: ASR (greedy or modified beam search), running AT tag probabilities and
an SV embedding of the audio so far, all from one chunk-by-chunk pass of the encoder with its states.

A live application calls :meth:`StreamingStudent.step` with each chunk of fbank frames as it arrives (chunk k =
frames 2*C*k .. 2*C*k + chunk_input_frames(C)); :func:`stream_utterances` does that for a padded batch known in
advance (evaluation, tests).
"""

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

from mt2kd_lib.decoding.beam_search import HypothesisList, beam_best, beam_init, beam_step
from mt2kd_lib.decoding.greedy_search import GreedyState, greedy_init, greedy_step
from mt2kd_lib.models.student import StudentModel
from mt2kd_lib.models.zipformer.streaming import iter_chunks

STREAMING_METHODS = ("greedy_search", "modified_beam_search")


@dataclass
class StreamState:
    """Everything N streams carry from one chunk to the next."""

    encoder_states: List[Tensor]
    asr: Optional[Union[GreedyState, List[HypothesisList]]] = None
    at_sum: Optional[Tensor] = None  # (N, K) sum of the AT frame logits so far
    at_frames: Optional[Tensor] = None  # (N,) frames summed
    sv_frames: List[Tensor] = field(default_factory=list)  # SV head input of each chunk (N, t, C)
    sv_lens: Optional[Tensor] = None  # (N,) valid frames of the concatenated sv_frames
    frames_out: Optional[Tensor] = None  # (N,) encoder output frames (25 Hz) so far


class StreamingStudent:
    """Chunk-by-chunk inference with every head of a causal :class:`StudentModel` (eval mode).

    ``chunk_size`` and ``left_context_frames`` are in 50 Hz frames (icefall's ``--chunk-size`` /
    ``--left-context-frames``); the model should have been trained with them among its random choices.
    """

    def __init__(self, model: StudentModel, chunk_size: int, left_context_frames: int,
                 method: str = "greedy_search", beam: int = 4, unk_id: Optional[int] = None) -> None:
        if model.training:
            raise RuntimeError("StreamingStudent needs an eval-mode model")
        if not model.encoder.config.causal:
            raise ValueError("streaming needs a causal encoder (e.g. the tiny-causal preset, --streaming true)")
        if method not in STREAMING_METHODS:
            raise ValueError(f"unknown streaming decoding method {method!r}; choose from {STREAMING_METHODS}")
        self.model = model
        self.chunk_size = chunk_size
        self.left_context_frames = left_context_frames
        self.chunk_input_frames = model.encoder.chunk_input_frames(chunk_size)  # validates chunk_size
        model.encoder.encoder.check_left_context(left_context_frames)
        self.method, self.beam, self.unk_id = method, beam, unk_id

    def start(self, batch_size: int, device: torch.device = torch.device("cpu")) -> StreamState:
        m = self.model
        state = StreamState(m.encoder.get_init_states(self.left_context_frames, batch_size, device))
        if m.asr_head is not None:
            state.asr = (greedy_init(m.asr_head, batch_size, device) if self.method == "greedy_search"
                         else beam_init(m.asr_head, batch_size))
        if m.at_head is not None:
            state.at_sum = torch.zeros(batch_size, m.at_head.num_classes, device=device)
            state.at_frames = torch.zeros(batch_size, dtype=torch.int64, device=device)
        state.sv_lens = torch.zeros(batch_size, dtype=torch.int64, device=device)
        state.frames_out = torch.zeros(batch_size, dtype=torch.int64, device=device)
        return state

    @torch.no_grad()
    def step(self, state: StreamState, features: Tensor, feature_lens: Tensor) -> StreamState:
        """Consume one chunk: features (N, chunk_input_frames, F), feature_lens (N,) valid frames of it."""
        m = self.model
        out, out_lens, state.encoder_states, stacks = m.encoder.streaming_forward(
            features, feature_lens, state.encoder_states)
        state.frames_out = state.frames_out + out_lens
        if state.asr is not None:
            if self.method == "greedy_search":
                state.asr = greedy_step(m.asr_head, state.asr, out, out_lens, self.unk_id)
            else:
                state.asr = beam_step(m.asr_head, state.asr, out, out_lens, self.beam, self.unk_id)
        if m.at_head is not None:
            x, lens = self._head_input(m.at_input_stack, out, out_lens, stacks)
            valid = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lens.unsqueeze(1)  # ended streams: 0
            frame_logits = m.at_head.proj(x).masked_fill(~valid.unsqueeze(-1), 0.0)
            state.at_sum = state.at_sum + frame_logits.sum(dim=1)
            state.at_frames = state.at_frames + lens
        if m.sv_head is not None:
            x, lens = self._head_input(m.sv_input_stack, out, out_lens, stacks)
            state.sv_frames.append(x)
            state.sv_lens = state.sv_lens + lens
        return state

    @staticmethod
    def _head_input(stack: Optional[int], out: Tensor, out_lens: Tensor,
                    stacks: List[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        return (out, out_lens) if stack is None else stacks[stack]

    # ------------------------------------------------------------------ results so far
    def tokens(self, state: StreamState) -> List[List[int]]:
        if state.asr is None:
            raise RuntimeError("this model has no ASR head")
        if self.method == "greedy_search":
            return [list(h) for h in state.asr.hyps]
        return beam_best(self.model.asr_head, state.asr)

    def at_probs(self, state: StreamState) -> Tensor:
        """(N, K) tag probabilities of the audio so far: sigmoid of the mean frame logit (the AT head's clip
        logit over the frames seen)."""
        if state.at_sum is None:
            raise RuntimeError("this model has no AT head")
        return torch.sigmoid(state.at_sum / state.at_frames.clamp(min=1).unsqueeze(-1))

    @torch.no_grad()
    def sv_embedding(self, state: StreamState) -> Tensor:
        """(N, emb_dim) SV embedding of the frames so far (the head pools over all of them)."""
        if self.model.sv_head is None:
            raise RuntimeError("this model has no SV head")
        if not state.sv_frames:
            raise RuntimeError("sv_embedding: no chunk processed yet")
        x = torch.cat(state.sv_frames, dim=1)
        return self.model.sv_head.embed(x, state.sv_lens.clamp(min=1))


def stream_utterances(streamer: StreamingStudent, features: Tensor, feature_lens: Tensor
                      ) -> Iterator[Tuple[int, StreamState]]:
    """Feed a padded batch (N, T, F) chunk by chunk; yields (chunk index, state after it)."""
    state = streamer.start(features.shape[0], features.device)
    for chunk in iter_chunks(streamer.model.encoder, features, feature_lens, streamer.chunk_size):
        state = streamer.step(state, chunk.features, chunk.feature_lens)
        yield chunk.index, state
