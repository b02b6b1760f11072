"""Stateless transducer decoder (prediction network) as in icefall's zipformer recipe.

The decoder sees only the last ``context_size`` tokens: an embedding followed by a depthwise-ish
grouped Conv1d over those tokens and a ReLU. It has no recurrent state, which is what makes batched
greedy / beam search simple (a hypothesis is fully described by its last ``context_size`` tokens).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Decoder(nn.Module):
    """Embedding(vocab, decoder_dim, padding_idx=blank) + Conv1d over the last ``context_size`` tokens + ReLU."""

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int = 0, context_size: int = 2) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"Decoder: vocab_size must be >= 2 (blank + at least one token), got {vocab_size}")
        if context_size < 1:
            raise ValueError(f"Decoder: context_size must be >= 1, got {context_size}")
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"Decoder: blank_id={blank_id} is outside [0, {vocab_size})")
        if context_size > 1 and (decoder_dim < 4 or decoder_dim % 4 != 0):
            raise ValueError(f"Decoder: decoder_dim={decoder_dim} must be a positive multiple of 4 (conv groups=dim//4)")
        self.vocab_size = vocab_size
        self.decoder_dim = decoder_dim
        self.blank_id = blank_id
        self.context_size = context_size
        # padding_idx=blank: the blank/"start" embedding is a fixed zero vector, so left-padding
        # with zeros (training) and starting hypotheses with blanks (decoding) are identical.
        self.embedding = nn.Embedding(vocab_size, decoder_dim, padding_idx=blank_id)
        if context_size > 1:
            self.conv = nn.Conv1d(
                decoder_dim,
                decoder_dim,
                kernel_size=context_size,
                padding=0,
                groups=decoder_dim // 4,
                bias=False,
            )
        else:
            self.conv = None

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        """Run the decoder.

        Args:
          y: (N, U) int64 token ids. Negative ids are treated as "nothing" (zero embedding).
          need_pad: True in training (left-pad so every position sees ``context_size`` tokens and the
            output keeps length U); False in decoding, where ``U == context_size`` and the output has
            length 1.
        Returns:
          (N, U, decoder_dim) when need_pad else (N, 1, decoder_dim).
        """
        if y.dim() != 2:
            raise ValueError(f"Decoder.forward: expected y of shape (N, U), got {tuple(y.shape)}")
        y = y.to(torch.int64)
        if y.numel() > 0 and int(y.max()) >= self.vocab_size:
            raise ValueError(f"Decoder.forward: token id {int(y.max())} >= vocab_size {self.vocab_size}")
        emb = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1).to(self.embedding.weight.dtype)
        if self.conv is not None:
            emb = emb.permute(0, 2, 1)  # (N, C, U)
            if need_pad:
                emb = F.pad(emb, pad=(self.context_size - 1, 0))
            elif emb.size(-1) != self.context_size:
                raise ValueError(
                    f"Decoder.forward(need_pad=False) needs exactly context_size={self.context_size} "
                    f"tokens, got {emb.size(-1)}"
                )
            emb = self.conv(emb).permute(0, 2, 1)
        return F.relu(emb)
