"""CTC greedy search: the arg-max token of every frame, repeats merged, blanks dropped (needs no k2)."""

from typing import List

import torch


@torch.no_grad()
def ctc_greedy_search(log_probs: torch.Tensor, log_probs_lens: torch.Tensor, blank_id: int = 0) -> List[List[int]]:
    """Token ids per utterance from (N, T, V) CTC log-probs and their (N,) valid lengths."""
    if log_probs.dim() != 3:
        raise ValueError(f"ctc_greedy_search: log_probs must be (N, T, V), got {tuple(log_probs.shape)}")
    if log_probs_lens.shape != (log_probs.size(0),):
        raise ValueError(f"ctc_greedy_search: log_probs_lens must be ({log_probs.size(0)},), "
                         f"got {tuple(log_probs_lens.shape)}")
    best = log_probs.argmax(dim=-1).tolist()
    hyps = []
    for row, n in zip(best, log_probs_lens.tolist()):
        out, prev = [], None
        for tok in row[:n]:
            if tok != prev and tok != blank_id:
                out.append(tok)
            prev = tok
        hyps.append(out)
    return hyps
