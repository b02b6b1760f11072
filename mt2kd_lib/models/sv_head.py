"""Speaker-verification head: attentive stats pooling -> BN -> Linear embedding, plus speaker losses.

The classifier is optional: with ``num_speakers=None`` the head only produces
embeddings (e.g. to be distilled towards an ECAPA-TDNN teacher's embedding).
"""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mt2kd_lib.models.pooling import AttentiveStatsPooling


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): logits s*cos(theta + m) for the target class.

    Weights and embeddings are L2-normalised so logits are scaled cosines.
    When theta + m would pass pi (cos no longer monotone) the usual
    ``cos(theta) - m*sin(m)`` fallback keeps the target logit decreasing.
    """

    def __init__(self, emb_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"aam_margin={margin} must be in [0, pi/2)")
        if scale <= 0:
            raise ValueError(f"aam_scale={scale} must be > 0")
        self.margin = margin
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, emb_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (N, num_classes) between embeddings and class centres."""
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Margin-adjusted, scaled logits (N, num_classes) for cross-entropy."""
        cos = self.cosine(emb).clamp(-1.0, 1.0)
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-7))
        m = self.margin
        phi = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        phi = torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        one_hot = F.one_hot(target, cos.size(1)).to(cos.dtype)
        return self.scale * (one_hot * phi + (1.0 - one_hot) * cos)


class SVHead(nn.Module):
    """Speaker embedding extractor with an optional speaker classifier.

    ``embed(x, lens)``: AttentiveStatsPooling (N, 2C) -> BatchNorm1d ->
    Linear(2C, emb_dim) -> (N, emb_dim). ``loss(emb, speaker_idx)``: softmax
    cross-entropy through a Linear classifier (``loss="softmax"``) or
    AAM-softmax on cosine logits (``loss="aam"``).
    """

    def __init__(
        self,
        in_dim: int,
        emb_dim: int = 192,
        num_speakers: Optional[int] = None,
        loss: str = "softmax",
        aam_margin: float = 0.2,
        aam_scale: float = 30.0,
        attention_channels: int = 128,
    ) -> None:
        super().__init__()
        if loss not in ("softmax", "aam"):
            raise ValueError(f"loss must be 'softmax' or 'aam', got {loss!r}")
        if emb_dim < 1:
            raise ValueError(f"emb_dim={emb_dim} must be >= 1")
        if num_speakers is not None and num_speakers < 2:
            raise ValueError(f"num_speakers={num_speakers} must be >= 2 (or None for embedding-only use)")
        self.in_dim = in_dim
        self.emb_dim = emb_dim
        self.num_speakers = num_speakers
        self.loss_type = loss
        self.pooling = AttentiveStatsPooling(in_dim, attention_channels=attention_channels)
        self.pool_norm = nn.BatchNorm1d(2 * in_dim)
        self.proj = nn.Linear(2 * in_dim, emb_dim)
        self.classifier: Optional[nn.Module] = None
        if num_speakers is not None:
            if loss == "aam":
                self.classifier = AAMSoftmax(emb_dim, num_speakers, aam_margin, aam_scale)
            else:
                self.classifier = nn.Linear(emb_dim, num_speakers)

    def embed(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Speaker embeddings (N, emb_dim) from frames ``x`` (N, T, C) with valid lengths ``lens``."""
        pooled = self.pooling(x, lens)
        if self.training and pooled.size(0) < 2:
            raise ValueError("SVHead in training mode needs a batch of >= 2 utterances (BatchNorm statistics)")
        return self.proj(self.pool_norm(pooled))

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(x, lens)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Speaker logits without margin: Linear outputs, or scaled cosines for AAM (for accuracy)."""
        clf = self._require_classifier()
        if isinstance(clf, AAMSoftmax):
            return clf.scale * clf.cosine(embeddings)
        return clf(embeddings)

    def loss(self, embeddings: torch.Tensor, speaker_idx: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Speaker-classification loss of ``embeddings`` (N, emb_dim) against ``speaker_idx`` (N,)."""
        clf = self._require_classifier()
        if embeddings.dim() != 2 or embeddings.size(1) != self.emb_dim:
            raise ValueError(f"embeddings must be (N, {self.emb_dim}), got shape {tuple(embeddings.shape)}")
        if speaker_idx.shape != (embeddings.size(0),):
            raise ValueError(
                f"speaker_idx must have shape ({embeddings.size(0)},), got {tuple(speaker_idx.shape)}"
            )
        if speaker_idx.dtype.is_floating_point or speaker_idx.dtype == torch.bool:
            raise ValueError(f"speaker_idx must be an integer tensor, got dtype {speaker_idx.dtype}")
        bad = (speaker_idx < 0) | (speaker_idx >= self.num_speakers)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0, 0])
            raise ValueError(
                f"speaker_idx[{i}]={int(speaker_idx[i])} is outside [0, {self.num_speakers}) (num_speakers)"
            )
        speaker_idx = speaker_idx.long()
        if isinstance(clf, AAMSoftmax):
            logits = clf(embeddings, speaker_idx)
        else:
            logits = clf(embeddings)
        return F.cross_entropy(logits, speaker_idx, reduction=reduction)

    def _require_classifier(self) -> nn.Module:
        """The speaker classifier, or a clear error for an embedding-only head."""
        if self.classifier is None:
            raise RuntimeError("SVHead was built with num_speakers=None (embedding only); it has no classifier")
        return self.classifier
