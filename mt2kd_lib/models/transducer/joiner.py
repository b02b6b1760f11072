"""Transducer joiner: project encoder and decoder outputs to a joint space, add, tanh, output linear."""

import torch
from torch import nn


def scaled_linear(in_dim: int, out_dim: int, initial_scale: float) -> nn.Linear:
    """nn.Linear whose default init is multiplied by ``initial_scale`` (icefall's ScaledLinear init).

    Small initial projections keep early RNN-T logits near uniform, which stabilises the start of training.
    """
    lin = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        lin.weight.mul_(initial_scale)
        if lin.bias is not None:
            lin.bias.uniform_(-0.1 * initial_scale, 0.1 * initial_scale)
    return lin


class Joiner(nn.Module):
    """``output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))``."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        for name, val in (("encoder_dim", encoder_dim), ("decoder_dim", decoder_dim),
                          ("joiner_dim", joiner_dim), ("vocab_size", vocab_size)):
            if val < 1:
                raise ValueError(f"Joiner: {name} must be >= 1, got {val}")
        self.encoder_proj = scaled_linear(encoder_dim, joiner_dim, initial_scale=0.25)
        self.decoder_proj = scaled_linear(decoder_dim, joiner_dim, initial_scale=0.25)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor, project_input: bool = True) -> torch.Tensor:
        """Combine encoder and decoder frames.

        Args:
          encoder_out: (..., encoder_dim), or (..., joiner_dim) when ``project_input`` is False.
          decoder_out: same number of dims as ``encoder_out`` (broadcastable), last dim decoder_dim
            or joiner_dim.
          project_input: False when the caller already applied encoder_proj / decoder_proj (pruned loss
            and decoding project once and reuse).
        Returns:
          logits of shape (broadcast(...), vocab_size).
        """
        if encoder_out.dim() != decoder_out.dim():
            raise ValueError(
                f"Joiner: encoder_out has {encoder_out.dim()} dims but decoder_out has {decoder_out.dim()}"
            )
        if project_input:
            logit = self.encoder_proj(encoder_out) + self.decoder_proj(decoder_out)
        else:
            logit = encoder_out + decoder_out
        return self.output_linear(torch.tanh(logit))
