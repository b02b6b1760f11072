"""Resemblyzer speaker encoder as a teacher (the pretrained GE2E LSTM shipped inside the ``resemblyzer`` wheel).

Two views of the same network (3-layer LSTM over 40-bin mel power spectra, 10 ms hop, then Linear+ReLU+L2 norm):

* ``level="utterance"``: the official ``VoiceEncoder.embed_utterance`` 256-d L2-normalised embedding (mean of
  1.6 s partial-window embeddings, re-normalised); task ``sv``.
* ``level="frame"``: the top LSTM layer's hidden state for every 10 ms mel frame (256-d, values in (-1, 1)), run
  causally over the whole utterance; a real frame-level speaker-ish teacher.

Preprocessing choice (documented, deliberate): resemblyzer's ``preprocess_wav`` does (1) volume normalisation to
-30 dBFS (increase only) and (2) webrtcvad trimming of long silences. We apply (1), because it is a pure gain the
model was trained with, but NOT (2): trimming removes audio, which would silently break the time alignment of
frame-level outputs with the cut and make utterance outputs depend on a VAD the student never sees. Callers who want
the trimmed behaviour can trim the cuts themselves (e.g. with a VAD-based supervision) before dumping.

The weights ship in the wheel (``resemblyzer/pretrained.pt``); no network access is needed.
"""

import logging
import warnings
from typing import List, Optional, Union

import numpy as np
import torch

from mt2kd_lib.teachers.base import Teacher, TeacherSpec

SAMPLING_RATE = 16000
HOP = 160  # 10 ms mel hop used by resemblyzer (hparams.mel_window_step)
EMBED_DIM = 256
TARGET_DBFS = -30.0  # resemblyzer hparams.audio_norm_target_dBFS
INT16_MAX = 2**15 - 1

# Below this the utterance embedding is unreliable: the model was trained on 1.6 s windows and embed_utterance
# zero-pads shorter input up to one window, so very short audio is mostly padding.
DEFAULT_MIN_DURATION_UTT = 0.5
# A frame-level output needs at least one full 25 ms analysis window.
DEFAULT_MIN_DURATION_FRAME = 0.025


def _import_resemblyzer():
    """Import resemblyzer quietly (its deps emit deprecation warnings at import) with a clear install hint."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from resemblyzer import audio as rz_audio
            from resemblyzer.voice_encoder import VoiceEncoder
    except ImportError as e:
        raise ImportError(
            "ResemblyzerTeacher needs the 'resemblyzer' package (pip install resemblyzer; it needs webrtcvad and "
            f"setuptools<81): {e}"
        ) from e
    return rz_audio, VoiceEncoder


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise (never lower) the level of ``wav`` to ``target_dbfs`` as resemblyzer does; silent audio is unchanged.

    resemblyzer's own version computes log10(0) on all-zero input and returns NaN; we guard that.
    """
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2))) if wav.size else 0.0
    if rms <= 0.0:
        return wav
    change_db = target_dbfs - 20.0 * np.log10(rms / INT16_MAX)
    if change_db <= 0:
        return wav
    return (wav * (10.0 ** (change_db / 20.0))).astype(np.float32)


class ResemblyzerTeacher(Teacher):
    """The resemblyzer pretrained speaker encoder at utterance or frame level.

    Args:
        level: ``"utterance"`` (256-d normalised embedding) or ``"frame"`` (256-d LSTM states at 100 Hz).
        device: torch device for the LSTM.
        min_duration: shortest accepted audio in seconds (default 0.5 s utterance, 0.025 s frame).
        name: teacher name in the spec (default ``resemblyzer`` / ``resemblyzer_frame``).
    """

    def __init__(
        self,
        level: str = "utterance",
        device: Union[str, torch.device] = "cpu",
        min_duration: Optional[float] = None,
        name: Optional[str] = None,
    ) -> None:
        if level not in ("utterance", "frame"):
            raise ValueError(f"ResemblyzerTeacher: level must be 'utterance' or 'frame', got {level!r}")
        self._audio, voice_encoder_cls = _import_resemblyzer()
        if min_duration is None:
            min_duration = DEFAULT_MIN_DURATION_UTT if level == "utterance" else DEFAULT_MIN_DURATION_FRAME
        self.spec = TeacherSpec(
            name=name or ("resemblyzer" if level == "utterance" else "resemblyzer_frame"),
            task="sv",
            output_kind="embedding",
            level=level,
            dim=EMBED_DIM,
            frame_shift=0.01 if level == "frame" else None,
            sampling_rate=SAMPLING_RATE,
            min_duration=float(min_duration),
        )
        self.device = torch.device(device)
        self.encoder = voice_encoder_cls(device=self.device, verbose=False)
        self.encoder.eval()
        logging.debug("loaded resemblyzer voice encoder (%s level) on %s", level, self.device)

    def to(self, device: Union[str, torch.device]) -> "ResemblyzerTeacher":
        self.device = torch.device(device)
        self.encoder.to(self.device)
        self.encoder.device = self.device  # embed_utterance moves its inputs to encoder.device
        return self

    def num_frames(self, num_samples: int) -> int:
        """Frames emitted for ``num_samples`` samples: lhotse's rounding, ``(n + hop/2) // hop``."""
        return (num_samples + HOP // 2) // HOP

    def _mel(self, wav: np.ndarray) -> np.ndarray:
        """(T, 40) mel power spectrum exactly as resemblyzer computes it (librosa, centred frames)."""
        return self._audio.wav_to_mel_spectrogram(wav)

    @torch.no_grad()
    def _frame_states(self, wavs: List[np.ndarray]) -> List[np.ndarray]:
        mels = [self._mel(w)[: self.num_frames(len(w))] for w in wavs]
        lengths = [m.shape[0] for m in mels]
        batch = np.zeros((len(mels), max(lengths), mels[0].shape[1]), dtype=np.float32)
        for i, m in enumerate(mels):
            batch[i, : m.shape[0]] = m
        # Right padding cannot change earlier outputs of a unidirectional LSTM, so padded batching is exact.
        states, _ = self.encoder.lstm(torch.from_numpy(batch).to(self.device))
        states = states.float().cpu().numpy()
        return [np.ascontiguousarray(states[i, :n]) for i, n in enumerate(lengths)]

    @torch.no_grad()
    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        """Embed a list of 16 kHz mono float waveforms (see module docstring for the preprocessing)."""
        if not audios:
            return []
        wavs = []
        for i, a in enumerate(audios):
            a = np.asarray(a, dtype=np.float32)
            self.check_audio(a, f"input #{i}")
            wavs.append(normalize_volume(a))
        if self.spec.level == "frame":
            return self._frame_states(wavs)
        outs = []
        for i, w in enumerate(wavs):
            with np.errstate(invalid="ignore", divide="ignore"):
                emb = self.encoder.embed_utterance(w).astype(np.float32)
            if not np.isfinite(emb).all():
                # ReLU output was all zero (e.g. digital silence): the L2 normalisation divides by zero.
                raise ValueError(
                    f"input #{i}: teacher {self.spec.name} produced a non-finite embedding "
                    "(all-zero activation, e.g. silent audio)"
                )
            outs.append(emb)
        return outs
