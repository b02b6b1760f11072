"""A teacher exported to ONNX, run with onnxruntime.

The model takes either the waveform ``(B, N)`` float32 (``input="waveform"``) or kaldi fbank ``(B, T, F)``
(``input="fbank"``: 25 ms / 10 ms, povey window, ``num_mel_bins`` bins, no dither, computed with kaldi-native-fbank
on the waveform times ``wave_scale``; 1.0 is the lhotse/icefall convention, 32768 the Kaldi one). If the model has a
second input it receives the int64 lengths ``(B,)`` (samples or frames). Its output ``output_index`` is
``(B, T', D)`` for a frame-level teacher or ``(B, D)`` for an utterance-level one. The output dimension is read
from the model where it is static and must then agree with ``dim`` when both are given.
Utterances are run one at a time, so no padding ever reaches the model.
"""

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from mt2kd_lib.teachers.base import LEVELS, Teacher, TeacherSpec

INPUTS = ("fbank", "waveform")


def kaldi_fbank(audio: np.ndarray, num_mel_bins: int, sample_rate: int, wave_scale: float) -> np.ndarray:
    """Kaldi fbank ``(T, num_mel_bins)`` with snip_edges, no dither (deterministic targets)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_mel_bins
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(sample_rate, (audio.astype(np.float32) * wave_scale).tolist())
    fb.input_finished()
    if fb.num_frames_ready == 0:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]).astype(np.float32)


class OnnxTeacher(Teacher):
    """Any frame- or utterance-level teacher exported to ONNX."""

    def __init__(
        self,
        model_path: Union[str, Path],
        input: str = "fbank",
        level: str = "frame",
        task: str = "asr",
        name: str = "onnx",
        output_kind: str = "embedding",
        dim: Optional[int] = None,
        frame_shift: Optional[float] = None,
        num_mel_bins: int = 80,
        wave_scale: float = 1.0,
        sampling_rate: int = 16000,
        min_duration: float = 0.0,
        output_index: int = 0,
        device: Union[str, torch.device] = "cpu",
        providers: Optional[Sequence[str]] = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX teacher {name}: model file {path} does not exist")
        if input not in INPUTS:
            raise ValueError(f"ONNX teacher {name}: input {input!r} not in {INPUTS}")
        if level not in LEVELS:
            raise ValueError(f"ONNX teacher {name}: level {level!r} not in {LEVELS}")
        if providers is None:
            wanted = ["CUDAExecutionProvider"] if torch.device(device).type == "cuda" else []
            providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types for malformed files
            raise ValueError(f"ONNX teacher {name}: cannot load {path} with onnxruntime: {e}") from e
        self.input, self.num_mel_bins, self.wave_scale = input, num_mel_bins, wave_scale
        ins = self.session.get_inputs()
        if not 1 <= len(ins) <= 2:
            raise ValueError(f"ONNX teacher {name}: {path} has {len(ins)} inputs; expected x or (x, lengths)")
        self.input_names = [i.name for i in ins]
        want_rank = 3 if input == "fbank" else 2
        if len(ins[0].shape) != want_rank:
            raise ValueError(
                f"ONNX teacher {name}: input {ins[0].name} has shape {ins[0].shape}; "
                f"input={input!r} needs rank {want_rank}"
            )
        if input == "fbank" and isinstance(ins[0].shape[2], int) and ins[0].shape[2] != num_mel_bins:
            raise ValueError(
                f"ONNX teacher {name}: model expects {ins[0].shape[2]} fbank bins but num_mel_bins={num_mel_bins}"
            )
        outs = self.session.get_outputs()
        if not 0 <= output_index < len(outs):
            raise ValueError(f"ONNX teacher {name}: output_index {output_index} but the model has {len(outs)} outputs")
        self.output_name = outs[output_index].name
        out_shape = outs[output_index].shape
        want_out_rank = 3 if level == "frame" else 2
        if len(out_shape) != want_out_rank:
            raise ValueError(
                f"ONNX teacher {name}: output {self.output_name} has shape {out_shape}; a {level}-level teacher "
                f"needs rank {want_out_rank}"
            )
        model_dim = out_shape[-1] if isinstance(out_shape[-1], int) else None
        if model_dim is not None and dim is not None and model_dim != dim:
            raise ValueError(f"ONNX teacher {name}: config dim {dim} but the model's output dim is {model_dim}")
        dim = dim if dim is not None else model_dim
        if dim is None:
            raise ValueError(f"ONNX teacher {name}: output dim is dynamic in {path}; give dim in the config")
        self.spec = TeacherSpec(name, task, output_kind, level, int(dim), frame_shift=frame_shift,
                                sampling_rate=sampling_rate, min_duration=min_duration)
        self.device = torch.device(device)

    def model_input(self, audio: np.ndarray) -> np.ndarray:
        """The array fed to the model for one utterance, with a batch axis of 1."""
        if self.input == "waveform":
            return audio.astype(np.float32)[None]
        return kaldi_fbank(audio, self.num_mel_bins, self.spec.sampling_rate, self.wave_scale)[None]

    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        out = []
        for i, audio in enumerate(audios):
            self.check_audio(audio, f"utterance {i}")
            x = self.model_input(audio)
            if x.shape[1] == 0:
                raise ValueError(f"utterance {i}: too short for one fbank frame ({audio.shape[0]} samples)")
            feeds = {self.input_names[0]: x}
            if len(self.input_names) == 2:
                feeds[self.input_names[1]] = np.array([x.shape[1]], dtype=np.int64)
            y = self.session.run([self.output_name], feeds)[0]
            if y.shape[0] != 1 or y.shape[-1] != self.spec.dim or y.ndim != (3 if self.spec.level == "frame" else 2):
                raise RuntimeError(
                    f"utterance {i}: ONNX teacher {self.spec.name} returned shape {y.shape}, expected "
                    f"(1, {'T, ' if self.spec.level == 'frame' else ''}{self.spec.dim})"
                )
            if not np.isfinite(y).all():
                raise RuntimeError(f"utterance {i}: ONNX teacher {self.spec.name} produced NaN/inf")
            out.append(np.ascontiguousarray(y[0], dtype=np.float32))
        return out
