"""A teacher trained by this repo (``local/train.py``): the egs/mini teachers.

``task`` picks what the checkpoint gives: ``asr`` -> the encoder's output frames (25 Hz embeddings),
``at`` -> class probabilities (sigmoid of the AT head), ``sv`` -> the SV head's speaker embedding.
Features are computed on the fly with the same lhotse fbank the training features used.
"""

from pathlib import Path
from typing import List, Union

import numpy as np
import torch
from lhotse import Fbank, FbankConfig

from mt2kd_lib.data.frames import ENCODER_FRAME_SHIFT, encoder_output_frames
from mt2kd_lib.data.features import NUM_MEL_BINS
from mt2kd_lib.teachers.base import Teacher, TeacherSpec



class CheckpointTeacher(Teacher):
    def __init__(self, checkpoint: Union[str, Path], task: str, device: str = "cpu", name: str = "checkpoint"):
        from mt2kd_lib.models.factory import model_from_checkpoint

        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"teacher {name}: checkpoint {path} does not exist")
        try:
            self.model = model_from_checkpoint(path).eval()
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"teacher {name}: {path} is not an mt2kd checkpoint: {e}") from e
        if task not in self.model.tasks:
            raise ValueError(f"teacher {name}: {path} has heads {self.model.tasks}, not {task!r}")
        self.task = task
        if task == "asr":
            spec = dict(output_kind="embedding", level="frame", dim=self.model.encoder.output_dim,
                        frame_shift=ENCODER_FRAME_SHIFT)
        elif task == "at":
            spec = dict(output_kind="probabilities", level="utterance", dim=self.model.at_head.num_classes)
        else:
            spec = dict(output_kind="embedding", level="utterance", dim=self.model.sv_head.emb_dim)
        # Conv2d subsampling and two 2x downsamplings need about 0.15 s of input.
        self.spec = TeacherSpec(name=name, task=task, min_duration=0.15, **spec)
        self.fbank = Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS, dither=0.0))
        self.to(device)

    def to(self, device) -> "CheckpointTeacher":
        super().to(device)
        self.model.to(self.device)
        return self

    def num_frames(self, num_samples: int) -> int:
        return encoder_output_frames(int(round(num_samples / 160)))  # 100 Hz fbank -> 25 Hz

    @torch.no_grad()
    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        feats = [torch.from_numpy(self.fbank.extract(a.astype(np.float32), 16000)) for a in audios]
        lens = torch.tensor([f.shape[0] for f in feats])
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device)
        lens = lens.to(self.device)
        if self.task == "asr":
            out, out_lens = self.model.asr_encoder_out(x, lens)
            return [out[i, : out_lens[i]].float().cpu().numpy() for i in range(len(audios))]
        if self.task == "at":
            probs = torch.sigmoid(self.model.at_logits(x, lens))
            return [p.float().cpu().numpy() for p in probs]
        emb = self.model.sv_embeddings(x, lens)
        return [e.float().cpu().numpy() for e in emb]
