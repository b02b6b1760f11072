"""The teacher interface every KD teacher implements.

A teacher maps 16 kHz mono audio to either a frame-level embedding ``(T, D)`` at a known frame shift, or an
utterance-level vector ``(D,)``. It declares its task (asr/at/sv), what its output is (an embedding or class
probabilities), its dimension and its frame rate, so the dump stage and the KD heads can be configured from it.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections import defaultdict
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

TASKS = ("asr", "at", "sv")
OUTPUT_KINDS = ("embedding", "probabilities")
LEVELS = ("frame", "utterance")


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher produces; stored next to its dumped outputs so readers can check them."""

    name: str
    task: str  # one of TASKS
    output_kind: str  # one of OUTPUT_KINDS
    level: str  # one of LEVELS
    dim: int
    frame_shift: Optional[float] = None  # seconds between frames; frame-level teachers only
    sampling_rate: int = 16000
    min_duration: float = 0.0  # shortest audio (s) the teacher accepts (its receptive field)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"teacher {self.name}: task {self.task!r} not in {TASKS}")
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"teacher {self.name}: output_kind {self.output_kind!r} not in {OUTPUT_KINDS}")
        if self.level not in LEVELS:
            raise ValueError(f"teacher {self.name}: level {self.level!r} not in {LEVELS}")
        if self.level == "frame" and not self.frame_shift:
            raise ValueError(f"teacher {self.name}: a frame-level teacher needs frame_shift")
        if self.dim <= 0:
            raise ValueError(f"teacher {self.name}: dim must be positive, got {self.dim}")


class Teacher(ABC):
    """Base class. Subclasses set ``self.spec`` and implement :meth:`infer_batch`."""

    spec: TeacherSpec
    device: torch.device = torch.device("cpu")

    def to(self, device: torch.device) -> "Teacher":
        self.device = torch.device(device)
        return self

    @abstractmethod
    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        """Run on a list of 1-D float32 waveforms at ``spec.sampling_rate``.

        Returns one float32 array per input: ``(T, dim)`` for frame-level teachers, ``(dim,)`` for
        utterance-level ones. Implementations must not pad variable-length inputs in a way that changes outputs.
        """

    def check_audio(self, audio: np.ndarray, item: str) -> None:
        """Refuse audio the teacher cannot process, naming the item."""
        if audio.ndim != 1:
            raise ValueError(f"{item}: teacher {self.spec.name} expects mono 1-D audio, got shape {audio.shape}")
        dur = audio.shape[0] / self.spec.sampling_rate
        if dur < self.spec.min_duration:
            raise ValueError(
                f"{item}: {dur:.3f}s of audio is shorter than teacher {self.spec.name}'s receptive field "
                f"({self.spec.min_duration:.3f}s)"
            )
        if not np.isfinite(audio).all():
            raise ValueError(f"{item}: audio contains NaN or inf")

    def infer_by_length(self, audios: List[np.ndarray],
                        forward: Callable[[List[np.ndarray]], np.ndarray]) -> List[np.ndarray]:
        """Check every input, then run ``forward`` once per group of equal-length inputs (so nothing is padded)
        and return its rows in input order as contiguous float32 arrays."""
        groups: Dict[int, List[int]] = defaultdict(list)
        for i, audio in enumerate(audios):
            self.check_audio(audio, f"utterance {i}")
            groups[audio.shape[0]].append(i)
        out: List[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(audios)
        for idx in groups.values():
            res = forward([audios[i] for i in idx])
            for j, i in enumerate(idx):
                out[i] = np.ascontiguousarray(res[j], dtype=np.float32)
        return out

    def num_params(self) -> int:
        """Parameters of the torch modules this teacher holds (0 for runtimes such as ONNX), for the results table."""
        seen = {id(p): p.numel() for v in vars(self).values() if isinstance(v, torch.nn.Module) for p in v.parameters()}
        return sum(seen.values())

    def num_frames(self, num_samples: int) -> int:
        """Frames a frame-level teacher emits for ``num_samples`` samples (override when it differs)."""
        hop = int(round(self.spec.frame_shift * self.spec.sampling_rate))
        return num_samples // hop
