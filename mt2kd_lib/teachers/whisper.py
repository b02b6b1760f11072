"""Whisper encoder teacher (ASR) loaded from an official openai-whisper checkpoint.

The checkpoint is the file ``whisper.load_model`` reads: a torch file holding ``{"dims": {...ModelDimensions
fields...}, "model_state_dict": {...}}``. Only the encoder is built (``whisper.model.AudioEncoder``, the module
``whisper.model.Whisper`` uses) and its ``encoder.*`` weights are loaded strictly; the text decoder is not needed for
distillation and would double the memory of large models.

Unlike ``Whisper.embed_audio`` the encoder is run on the true length of each utterance, not on 30 s of padded audio:
the log-mel is computed from the unpadded waveform with ``whisper.audio.log_mel_spectrogram`` (the model's n_mels),
the conv front-end and the blocks see only the real frames, and the sinusoidal positional embedding is sliced to
that length. Outputs are at 50 Hz (20 ms, after the stride-2 conv), dimension ``n_audio_state``.

``layer=-1`` gives the final encoder output (after ``ln_post``); ``layer=i`` (0-based) gives the output of block i
(no ``ln_post``).
"""

from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch
import torch.nn.functional as F

from mt2kd_lib.teachers.base import Teacher, TeacherSpec

WHISPER_SR = 16000
MEL_HOP = 160  # samples between mel frames (10 ms)
FRAME_SHIFT = 0.02  # seconds between encoder frames (stride-2 conv over 10 ms mels)


def load_whisper_checkpoint(checkpoint: Union[str, Path]) -> Dict:
    """Read an official Whisper checkpoint and check its format; returns the dict."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"whisper checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or non-torch file
        raise ValueError(f"whisper checkpoint {path} could not be read by torch.load: {e}") from e
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = sorted(ckpt.keys()) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"whisper checkpoint {path} is not in the official format (a dict with 'dims' and "
            f"'model_state_dict'); found {keys}"
        )
    return ckpt


class WhisperTeacher(Teacher):
    """Frame-level Whisper encoder embeddings at 50 Hz, computed on unpadded audio."""

    def __init__(
        self,
        checkpoint: Union[str, Path],
        layer: int = -1,
        device: Union[str, torch.device] = "cpu",
        name: str = "whisper",
    ) -> None:
        # Imported here so the rest of mt2kd_lib works without openai-whisper installed.
        from whisper.model import AudioEncoder, ModelDimensions

        ckpt = load_whisper_checkpoint(checkpoint)
        try:
            self.dims = ModelDimensions(**ckpt["dims"])
        except TypeError as e:
            raise ValueError(f"whisper checkpoint {checkpoint}: bad 'dims' {ckpt['dims']}: {e}") from e
        d = self.dims
        if layer != -1 and not 0 <= layer < d.n_audio_layer:
            raise ValueError(
                f"whisper checkpoint {checkpoint}: layer {layer} out of range; use -1 (final, after ln_post) "
                f"or 0..{d.n_audio_layer - 1}"
            )
        self.layer = layer
        self.encoder = AudioEncoder(d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer)
        enc_sd = {k[len("encoder."):]: v for k, v in ckpt["model_state_dict"].items() if k.startswith("encoder.")}
        if not enc_sd:
            raise ValueError(f"whisper checkpoint {checkpoint}: model_state_dict has no 'encoder.*' keys")
        missing, unexpected = self.encoder.load_state_dict(enc_sd, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"whisper checkpoint {checkpoint}: encoder weights do not match dims {d}; "
                f"missing {['encoder.' + k for k in missing]}, unexpected {['encoder.' + k for k in unexpected]}"
            )
        # Official checkpoints are fp16; the teacher runs in fp32 for reproducible targets.
        self.encoder.float().eval()
        self.spec = TeacherSpec(
            name=name,
            task="asr",
            output_kind="embedding",
            level="frame",
            dim=d.n_audio_state,
            frame_shift=FRAME_SHIFT,
            sampling_rate=WHISPER_SR,
            min_duration=MEL_HOP / WHISPER_SR,  # one mel frame
        )
        self.max_samples = d.n_audio_ctx * 2 * MEL_HOP  # the positional embedding covers n_audio_ctx frames
        self.to(device)

    def to(self, device: Union[str, torch.device]) -> "WhisperTeacher":
        super().to(device)
        self.encoder.to(self.device)
        return self

    def num_frames(self, num_samples: int) -> int:
        """Encoder frames for ``num_samples``: ``num_samples // 160`` mels, then a stride-2 conv (ceil)."""
        n_mel = num_samples // MEL_HOP
        return (n_mel + 1) // 2

    def log_mel(self, audio: np.ndarray) -> torch.Tensor:
        """Whisper log-mel ``(n_mels, num_samples // 160)`` of unpadded audio."""
        from whisper.audio import log_mel_spectrogram

        wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        mel = log_mel_spectrogram(wav, n_mels=self.dims.n_mels, device=self.device)
        return mel[:, : audio.shape[0] // MEL_HOP]

    @torch.no_grad()
    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Run the encoder on ``(B, n_mels, T)`` mels of one true length; returns ``(B, ceil(T/2), D)``."""
        enc = self.encoder
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.positional_embedding[: x.shape[1]]
        for i, block in enumerate(enc.blocks):
            x = block(x)
            if i == self.layer:
                return x
        return enc.ln_post(x)

    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        """Encode each waveform on its own length; inputs of equal length share one forward pass."""
        for i, audio in enumerate(audios):
            if audio.shape[0] > self.max_samples:
                raise ValueError(
                    f"utterance {i}: {audio.shape[0] / WHISPER_SR:.2f}s is longer than whisper's "
                    f"{self.max_samples / WHISPER_SR:.2f}s context; split it first"
                )

        def forward(same_length: List[np.ndarray]) -> np.ndarray:
            return self.encode_mel(torch.stack([self.log_mel(a) for a in same_length])).float().cpu().numpy()

        return self.infer_by_length(audios, forward)
