"""Batched greedy search for the stateless transducer (max one symbol per frame, as icefall)."""

from dataclasses import dataclass
from typing import List, Optional

import torch

from mt2kd_lib.models.transducer.transducer import TransducerHead


def _check_decode_inputs(head: TransducerHead, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor) -> None:
    """Raise ValueError on shape/length mismatches (shared by greedy and beam search)."""
    if encoder_out.dim() != 3 or encoder_out.size(-1) != head.encoder_dim:
        raise ValueError(f"decoding: encoder_out must be (N, T, {head.encoder_dim}), got {tuple(encoder_out.shape)}")
    n, t = encoder_out.shape[:2]
    if encoder_out_lens.shape != (n,):
        raise ValueError(f"decoding: encoder_out_lens must be ({n},), got {tuple(encoder_out_lens.shape)}")
    bad = ((encoder_out_lens < 0) | (encoder_out_lens > t)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"decoding: encoder_out_lens out of [0, {t}] for utterance(s) {bad}")


@dataclass
class GreedyState:
    """Greedy search of N streams so far: emitted tokens, decoder context (N, context_size) and output (N, J)."""

    hyps: List[List[int]]
    context: torch.Tensor
    dec_out: torch.Tensor


def greedy_init(head: TransducerHead, n: int, device: torch.device) -> GreedyState:
    """Start state of N streams."""
    # icefall's start context: (ctx - 1) "nothing" ids (-1, a zero embedding) then blank. With our own models the
    # blank embedding is zero too (padding_idx); an icefall-trained decoder's is not, and this matches icefall.
    context = torch.full((n, head.context_size), -1, dtype=torch.int64, device=device)
    context[:, -1] = head.blank_id
    dec_out = head.joiner.decoder_proj(head.decoder(context, need_pad=False)).squeeze(1)  # (N, J)
    return GreedyState([[] for _ in range(n)], context, dec_out)


@torch.no_grad()
def greedy_step(head: TransducerHead, state: GreedyState, encoder_out: torch.Tensor,
                encoder_out_lens: torch.Tensor, unk_id: Optional[int] = None) -> GreedyState:
    """Continue ``state`` over the next frames of each stream: encoder_out (N, T, encoder_dim), of which the first
    encoder_out_lens (N,) are valid (a whole utterance, or one chunk of a stream)."""
    _check_decode_inputs(head, encoder_out, encoder_out_lens)
    blank = head.blank_id
    context, dec_out, hyps = state.context, state.dec_out, state.hyps
    enc_proj = head.joiner.encoder_proj(encoder_out)  # (N, T, J)
    lens = encoder_out_lens.to(encoder_out.device)
    for t in range(encoder_out.shape[1]):
        active = lens > t
        if not bool(active.any()):
            break
        logits = head.joiner(enc_proj[:, t], dec_out, project_input=False)  # (N, V)
        best = logits.argmax(dim=-1)
        emit = active & (best != blank)
        if unk_id is not None:
            emit &= best != unk_id
        if not bool(emit.any()):
            continue
        rows = emit.nonzero().flatten()
        for r in rows.tolist():
            hyps[r].append(int(best[r]))
        # Shift the emitted token into the context and refresh the decoder for those rows only.
        context[rows] = torch.cat([context[rows, 1:], best[rows].unsqueeze(1)], dim=1)
        new_dec = head.joiner.decoder_proj(head.decoder(context[rows], need_pad=False)).squeeze(1)
        dec_out = dec_out.clone()
        dec_out[rows] = new_dec
    return GreedyState(hyps, context, dec_out)


@torch.no_grad()
def greedy_search_batch(
    head: TransducerHead,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    unk_id: Optional[int] = None,
) -> List[List[int]]:
    """Greedy transducer decoding of a padded batch.

    At each frame the joiner's arg-max is taken for every still-active utterance; a non-blank (and
    non-``unk_id``) arg-max is emitted and the decoder is re-run for those utterances only. One symbol
    per frame at most (``max_sym_per_frame=1``), which is what the pruned RNN-T is trained for.

    Args:
      head: the trained transducer head (decoder + joiner).
      encoder_out: (N, T, encoder_dim).
      encoder_out_lens: (N,) valid frames.
      unk_id: optional token never emitted (icefall skips <unk> in the output).
    Returns:
      token ids per utterance, in batch order.
    """
    _check_decode_inputs(head, encoder_out, encoder_out_lens)
    state = greedy_init(head, encoder_out.shape[0], encoder_out.device)
    return greedy_step(head, state, encoder_out, encoder_out_lens, unk_id).hyps
