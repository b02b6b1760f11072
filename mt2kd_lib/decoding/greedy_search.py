"""Batched greedy search for the stateless transducer (max one symbol per frame, as icefall)."""

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
    n, t_max = encoder_out.shape[:2]
    device = encoder_out.device
    blank, ctx = head.blank_id, head.context_size

    hyps: List[List[int]] = [[] for _ in range(n)]
    # icefall's start context: (ctx - 1) "nothing" ids (-1, a zero embedding) then blank. With our own models the
    # blank embedding is zero too (padding_idx); an icefall-trained decoder's is not, and this matches icefall.
    context = torch.full((n, ctx), -1, dtype=torch.int64, device=device)
    context[:, -1] = blank
    dec_out = head.joiner.decoder_proj(head.decoder(context, need_pad=False)).squeeze(1)  # (N, J)
    enc_proj = head.joiner.encoder_proj(encoder_out)  # (N, T, J)
    lens = encoder_out_lens.to(device)

    for t in range(t_max):
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
    return hyps
