"""Pruned RNN-T ASR head (icefall zipformer ``forward_transducer``), optionally with a CTC branch.

The head owns the stateless decoder, the joiner and the two "simple" projections used by the smoothed
(trivial-joiner) loss that finds the pruning ranges. The loss backend (k2 or fast_rnnt) is chosen in
:mod:`mt2kd_lib.losses.rnnt_backend`.
"""

import operator
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mt2kd_lib.losses import rnnt_backend
from mt2kd_lib.models.transducer.decoder import Decoder
from mt2kd_lib.models.transducer.joiner import Joiner, scaled_linear


@dataclass
class TransducerLosses:
    """Losses returned by :meth:`TransducerHead.forward`.

    ``simple``: smoothed RNN-T loss with the additive joiner (drives the pruning bounds);
    ``pruned``: RNN-T loss with the real joiner inside the pruning ranges;
    ``ctc``: CTC loss of the optional CTC branch, ``None`` when ``use_ctc`` is False.
    Each is a scalar for reduction "sum"/"mean" and a (N,) tensor for reduction "none".
    The dataclass also unpacks as a tuple: ``simple, pruned = losses`` (2 items) when there is no
    CTC branch, ``simple, pruned, ctc = losses`` otherwise.
    """

    simple: torch.Tensor
    pruned: torch.Tensor
    ctc: Optional[torch.Tensor] = None

    def __iter__(self):
        items = (self.simple, self.pruned) if self.ctc is None else (self.simple, self.pruned, self.ctc)
        return iter(items)

    def __len__(self) -> int:
        return 2 if self.ctc is None else 3


def check_token_lists(y: Sequence[Sequence[int]], vocab_size: int, blank_id: int) -> None:
    """Raise ValueError naming the first bad utterance/token (empty, blank inside, out of range)."""
    for i, seq in enumerate(y):
        if len(seq) == 0:
            raise ValueError(f"transducer targets: utterance {i} has an empty token sequence (filter it out)")
        for tok in seq:
            try:
                tok = operator.index(tok)
            except TypeError:
                raise ValueError(f"transducer targets: utterance {i} has a non-integer token {tok!r}") from None
            if tok == blank_id:
                raise ValueError(f"transducer targets: utterance {i} contains the blank id {blank_id}")
            if not 0 <= tok < vocab_size:
                raise ValueError(f"transducer targets: utterance {i} has token {tok} outside [0, {vocab_size})")


def pad_token_lists(y: Sequence[Sequence[int]], pad: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad lists of token ids into (N, S_max) int64 plus their (N,) lengths."""
    lens = torch.tensor([len(s) for s in y], dtype=torch.int64)
    s_max = int(lens.max()) if len(y) else 0
    out = torch.full((len(y), s_max), pad, dtype=torch.int64)
    for i, seq in enumerate(y):
        if len(seq):
            out[i, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.int64)
    return out.to(device), lens.to(device)


class TransducerHead(nn.Module):
    """Stateless-decoder pruned RNN-T head on top of any encoder giving (N, T, encoder_dim)."""

    def __init__(
        self,
        encoder_dim: int,
        vocab_size: int,
        decoder_dim: int = 512,
        joiner_dim: int = 512,
        context_size: int = 2,
        blank_id: int = 0,
        use_ctc: bool = False,
    ) -> None:
        super().__init__()
        self.encoder_dim = encoder_dim
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.context_size = context_size
        self.use_ctc = use_ctc
        self.decoder = Decoder(vocab_size, decoder_dim, blank_id=blank_id, context_size=context_size)
        self.joiner = Joiner(encoder_dim, decoder_dim, joiner_dim, vocab_size)
        # Trivial-joiner projections for the smoothed loss (icefall: ScaledLinear, initial_scale=0.25).
        self.simple_am_proj = scaled_linear(encoder_dim, vocab_size, initial_scale=0.25)
        self.simple_lm_proj = scaled_linear(decoder_dim, vocab_size, initial_scale=0.25)
        if use_ctc:
            self.ctc_output = nn.Sequential(nn.Dropout(p=0.1), nn.Linear(encoder_dim, vocab_size))
        else:
            self.ctc_output = None

    def _check_inputs(self, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor, y: Sequence[Sequence[int]]) -> None:
        if encoder_out.dim() != 3 or encoder_out.size(-1) != self.encoder_dim:
            raise ValueError(
                f"TransducerHead: encoder_out must be (N, T, {self.encoder_dim}), got {tuple(encoder_out.shape)}"
            )
        n, t = encoder_out.shape[:2]
        if encoder_out_lens.shape != (n,):
            raise ValueError(f"TransducerHead: encoder_out_lens must be ({n},), got {tuple(encoder_out_lens.shape)}")
        if len(y) != n:
            raise ValueError(f"TransducerHead: got {len(y)} token sequences for a batch of {n}")
        bad = ((encoder_out_lens < 1) | (encoder_out_lens > t)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"TransducerHead: encoder_out_lens out of [1, {t}] for utterance(s) {bad}: "
                f"{encoder_out_lens[bad].tolist()}"
            )
        check_token_lists(y, self.vocab_size, self.blank_id)

    def forward(
        self,
        encoder_out: torch.Tensor,
        encoder_out_lens: torch.Tensor,
        y: List[List[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.25,
        reduction: str = "sum",
    ) -> TransducerLosses:
        """Compute the simple and pruned RNN-T losses (and CTC when ``use_ctc``).

        Args:
          encoder_out: (N, T, encoder_dim) encoder output.
          encoder_out_lens: (N,) valid frames per utterance.
          y: token ids per utterance (no blanks, non-empty).
          prune_range: symbols kept per frame in the pruned loss.
          am_scale / lm_scale: weights of the AM-only / LM-only terms of the smoothed loss.
          reduction: "sum", "mean" or "none" (per-utterance (N,) losses).
        Returns:
          :class:`TransducerLosses`; unpacks as ``(simple, pruned)`` or ``(simple, pruned, ctc)``.
        """
        if reduction not in ("sum", "mean", "none"):
            raise ValueError(f"TransducerHead: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
        if prune_range < 2:
            raise ValueError(f"TransducerHead: prune_range must be >= 2 for regular RNN-T, got {prune_range}")
        self._check_inputs(encoder_out, encoder_out_lens, y)
        device = encoder_out.device
        n = encoder_out.size(0)

        y_padded, y_lens = pad_token_lists(y, pad=0, device=device)
        # Decoder input: blank ("start of sentence") prepended, so position s sees tokens < s.
        # Padded positions lie beyond each utterance's boundary, so their value never matters.
        sos_y = torch.cat([torch.full((n, 1), self.blank_id, dtype=torch.int64, device=device), y_padded], dim=1)
        decoder_out = self.decoder(sos_y)  # (N, S+1, decoder_dim)

        boundary = torch.zeros((n, 4), dtype=torch.int64, device=device)
        boundary[:, 2] = y_lens
        boundary[:, 3] = encoder_out_lens.to(torch.int64)

        lm = self.simple_lm_proj(decoder_out)
        am = self.simple_am_proj(encoder_out)
        # The recursions are done in float32 even under autocast (half precision under/overflows).
        with torch.autocast(device_type=device.type, enabled=False):
            simple_loss, (px_grad, py_grad) = rnnt_backend.rnnt_loss_smoothed(
                lm=lm.float(),
                am=am.float(),
                symbols=y_padded,
                termination_symbol=self.blank_id,
                lm_only_scale=lm_scale,
                am_only_scale=am_scale,
                boundary=boundary,
                reduction=reduction,
                return_grad=True,
            )

        ranges = rnnt_backend.get_rnnt_prune_ranges(
            px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=prune_range
        )
        am_pruned, lm_pruned = rnnt_backend.do_rnnt_pruning(
            am=self.joiner.encoder_proj(encoder_out), lm=self.joiner.decoder_proj(decoder_out), ranges=ranges
        )
        logits = self.joiner(am_pruned, lm_pruned, project_input=False)  # (N, T, s_range, V)
        with torch.autocast(device_type=device.type, enabled=False):
            pruned_loss = rnnt_backend.rnnt_loss_pruned(
                logits=logits.float(),
                symbols=y_padded,
                ranges=ranges,
                termination_symbol=self.blank_id,
                boundary=boundary,
                reduction=reduction,
            )

        ctc_loss = None
        if self.ctc_output is not None:
            ctc_loss = self.forward_ctc(encoder_out, encoder_out_lens, y_padded, y_lens, reduction)
        return TransducerLosses(simple=simple_loss, pruned=pruned_loss, ctc=ctc_loss)

    def forward_ctc(
        self,
        encoder_out: torch.Tensor,
        encoder_out_lens: torch.Tensor,
        y_padded: torch.Tensor,
        y_lens: torch.Tensor,
        reduction: str = "sum",
    ) -> torch.Tensor:
        """CTC loss of the CTC branch (blank = ``blank_id``); inf for infeasible utterances is kept so
        the trainer's non-finite check can see it rather than silently zeroing it."""
        if self.ctc_output is None:
            raise RuntimeError("TransducerHead.forward_ctc called but the head was built with use_ctc=False")
        log_probs = F.log_softmax(self.ctc_output(encoder_out).float(), dim=-1)  # (N, T, V)
        targets = torch.cat([y_padded[i, : int(y_lens[i])] for i in range(y_padded.size(0))])
        return F.ctc_loss(
            log_probs=log_probs.permute(1, 0, 2),
            targets=targets.cpu(),
            input_lengths=encoder_out_lens.cpu().to(torch.int64),
            target_lengths=y_lens.cpu(),
            blank=self.blank_id,
            reduction=reduction,
            zero_infinity=False,
        )

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        """(N, T, V) CTC log-probs (for CTC decoding); requires ``use_ctc``."""
        if self.ctc_output is None:
            raise RuntimeError("TransducerHead.ctc_log_probs: head built with use_ctc=False")
        return F.log_softmax(self.ctc_output(encoder_out), dim=-1)
