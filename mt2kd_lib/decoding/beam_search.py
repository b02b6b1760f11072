"""Batched modified beam search for the stateless transducer (icefall's ``modified_beam_search``).

"Modified" = at most one symbol per frame: for every frame, every hypothesis of an utterance is
extended by each vocabulary item (blank keeps the hypothesis unchanged), and the ``beam`` best
(hypothesis, token) pairs of that utterance survive. Hypotheses with identical token sequences are
merged by log-adding their scores. All hypotheses of all active utterances share one decoder/joiner
call per frame; plain Python lists replace k2's ragged tensors.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from mt2kd_lib.decoding.greedy_search import _check_decode_inputs
from mt2kd_lib.models.transducer.transducer import TransducerHead


@dataclass
class Hypothesis:
    """A partial transcript: ``ys`` starts with ``context_size - 1`` ids -1 and a blank; ``log_prob`` is its total score."""

    ys: Tuple[int, ...]
    log_prob: float


class HypothesisList:
    """Hypotheses keyed by token sequence; adding an existing sequence log-adds the scores."""

    def __init__(self) -> None:
        self._data: Dict[Tuple[int, ...], Hypothesis] = {}

    def add(self, hyp: Hypothesis) -> None:
        """Insert ``hyp``, merging with an existing hypothesis that has the same ``ys``."""
        old = self._data.get(hyp.ys)
        if old is None:
            self._data[hyp.ys] = hyp
        else:
            hi, lo = max(old.log_prob, hyp.log_prob), min(old.log_prob, hyp.log_prob)
            old.log_prob = hi + math.log1p(math.exp(lo - hi))

    def best(self) -> Hypothesis:
        """The highest-scoring hypothesis (icefall ranks by total log-prob, no length norm)."""
        return max(self._data.values(), key=lambda h: h.log_prob)

    def __iter__(self):
        return iter(list(self._data.values()))

    def __len__(self) -> int:
        return len(self._data)


@torch.no_grad()
def modified_beam_search(
    head: TransducerHead,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    beam: int = 4,
    unk_id: Optional[int] = None,
) -> List[List[int]]:
    """Decode a padded batch with modified beam search.

    Args:
      head: the transducer head (decoder + joiner).
      encoder_out: (N, T, encoder_dim).
      encoder_out_lens: (N,) valid frames.
      beam: hypotheses kept per utterance.
      unk_id: optional token treated like blank in the output (never emitted), as icefall.
    Returns:
      best token ids per utterance, in batch order.
    """
    if beam < 1:
        raise ValueError(f"modified_beam_search: beam must be >= 1, got {beam}")
    _check_decode_inputs(head, encoder_out, encoder_out_lens)
    beams = beam_init(head, encoder_out.shape[0])
    beams = beam_step(head, beams, encoder_out, encoder_out_lens, beam, unk_id)
    return beam_best(head, beams)


def beam_init(head: TransducerHead, n: int) -> List[HypothesisList]:
    """Start hypotheses of N streams: icefall's start context (greedy_search.py)."""
    beams: List[HypothesisList] = []
    for _ in range(n):
        hl = HypothesisList()
        hl.add(Hypothesis(ys=(-1,) * (head.context_size - 1) + (head.blank_id,), log_prob=0.0))
        beams.append(hl)
    return beams


def beam_best(head: TransducerHead, beams: List[HypothesisList]) -> List[List[int]]:
    """Token ids of each stream's best hypothesis."""
    return [list(b.best().ys[head.context_size:]) for b in beams]


@torch.no_grad()
def beam_step(head: TransducerHead, beams: List[HypothesisList], encoder_out: torch.Tensor,
              encoder_out_lens: torch.Tensor, beam: int = 4, unk_id: Optional[int] = None) -> List[HypothesisList]:
    """Continue each stream's hypotheses over its next encoder_out_lens frames of encoder_out (N, T, encoder_dim)
    (a whole utterance, or one chunk of a stream)."""
    _check_decode_inputs(head, encoder_out, encoder_out_lens)
    n, t_max = encoder_out.shape[:2]
    if len(beams) != n:
        raise ValueError(f"beam_step: {len(beams)} hypothesis lists for a batch of {n}")
    device = encoder_out.device
    blank, ctx = head.blank_id, head.context_size
    vocab = head.vocab_size
    beams = list(beams)
    enc_proj = head.joiner.encoder_proj(encoder_out)  # (N, T, J)
    lens = encoder_out_lens.tolist()

    for t in range(t_max):
        active = [i for i in range(n) if lens[i] > t]
        if not active:
            break
        # Flatten the hypotheses of all active utterances into one batch.
        hyps: List[Hypothesis] = []
        owner: List[int] = []
        spans: List[Tuple[int, int]] = []
        for i in active:
            start = len(hyps)
            for h in beams[i]:
                hyps.append(h)
                owner.append(i)
            spans.append((start, len(hyps)))
        contexts = torch.tensor([h.ys[-ctx:] for h in hyps], dtype=torch.int64, device=device)
        prev_lp = torch.tensor([h.log_prob for h in hyps], dtype=torch.float64, device=device)
        dec_out = head.joiner.decoder_proj(head.decoder(contexts, need_pad=False)).squeeze(1)  # (H, J)
        enc_t = enc_proj[torch.tensor(owner, device=device), t]  # (H, J)
        logits = head.joiner(enc_t, dec_out, project_input=False)  # (H, V)
        scores = torch.log_softmax(logits.double(), dim=-1) + prev_lp.unsqueeze(1)

        for i, (start, end) in zip(active, spans):
            flat = scores[start:end].reshape(-1)
            top_lp, top_idx = flat.topk(min(beam, flat.numel()))
            new_list = HypothesisList()
            for lp, idx in zip(top_lp.tolist(), top_idx.tolist()):
                h = hyps[start + idx // vocab]
                tok = idx % vocab
                keep = tok == blank or (unk_id is not None and tok == unk_id)
                ys = h.ys if keep else h.ys + (tok,)
                new_list.add(Hypothesis(ys=ys, log_prob=lp))
            beams[i] = new_list
    return beams
