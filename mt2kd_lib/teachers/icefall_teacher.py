"""An icefall-trained Zipformer2 (``epoch-N.pt``, ``pretrained.pt`` or an averaged state_dict) as the ASR teacher.

teachers.yaml::

    icefall_asr:
      kind: icefall_zipformer
      checkpoint: download/icefall-zipformer/exp/pretrained.pt
      # preset: M                # optional; inferred from the checkpoint otherwise
      # output: encoder          # encoder (default): 25 Hz encoder frames, dim = max(encoder_dim)
      #                          # ctc: 25 Hz CTC token posteriors (needs a --use-ctc model and the BPE check)
      # bpe_model: download/icefall-zipformer/data/lang_bpe_500/bpe.model   # needed for output: ctc
      # lang_dir: data/librispeech/lang_bpe_500                             # the recipe's; needed for output: ctc

Token posteriors only mean something to a student that uses the same tokens, so ``output: ctc`` refuses to build
unless the checkpoint's BPE model and the recipe's ``lang_dir/bpe.model`` give every token the same id. The
features are lhotse 80-bin fbank without dither, as icefall's recipes compute them (kaldifeat/lhotse).
"""

from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch
from lhotse import Fbank, FbankConfig

from mt2kd_lib.data.frames import ENCODER_FRAME_SHIFT, encoder_output_frames
from mt2kd_lib.data.features import NUM_MEL_BINS
from mt2kd_lib.teachers.base import Teacher, TeacherSpec

OUTPUTS = ("encoder", "ctc")


class IcefallZipformerTeacher(Teacher):
    def __init__(self, checkpoint: Union[str, Path], preset: Optional[str] = None, output: str = "encoder",
                 bpe_model: Optional[Union[str, Path]] = None, lang_dir: Optional[Union[str, Path]] = None,
                 use_model_avg: bool = False, device: str = "cpu", name: str = "icefall_zipformer"):
        from mt2kd_lib.data.bpe import bpe_difference
        from mt2kd_lib.models.encoder_presets import build_encoder
        from mt2kd_lib.models.icefall_convert import icefall_to_mt2kd, read_icefall_checkpoint
        from mt2kd_lib.models.transducer.transducer import TransducerHead

        if output not in OUTPUTS:
            raise ValueError(f"teacher {name}: output {output!r} not in {OUTPUTS}")
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"teacher {name}: checkpoint {path} does not exist")
        try:
            imp = icefall_to_mt2kd(read_icefall_checkpoint(path, use_model_avg), preset=preset,
                                   with_asr_head=output == "ctc")
        except ValueError as e:
            raise ValueError(f"teacher {name}: {e}") from e
        self.encoder = build_encoder(imp.model_config["encoder"]).eval()
        self.encoder.load_state_dict({k[len("encoder."):]: v for k, v in imp.state.items()
                                      if k.startswith("encoder.")})
        self.output = output
        self.ctc: Optional[torch.nn.Module] = None
        if output == "ctc":
            head_cfg = imp.model_config["heads"].get("asr")
            if head_cfg is None or not head_cfg["use_ctc"]:
                raise ValueError(f"teacher {name}: output ctc needs a checkpoint trained with --use-ctc "
                                 f"({path} has no ctc_output)")
            if bpe_model is None or lang_dir is None:
                raise ValueError(f"teacher {name}: output ctc needs bpe_model (the checkpoint's) and lang_dir "
                                 f"(the recipe's) to check that both use the same tokens")
            diff = bpe_difference(Path(bpe_model), Path(lang_dir) / "bpe.model")
            if diff is not None:
                raise ValueError(f"teacher {name}: the checkpoint's BPE model differs from the recipe's: {diff}")
            import sentencepiece as spm

            pieces = spm.SentencePieceProcessor(model_file=str(Path(lang_dir) / "bpe.model")).get_piece_size()
            if pieces != int(head_cfg["vocab_size"]):
                raise ValueError(f"teacher {name}: the checkpoint has {head_cfg['vocab_size']} tokens, the recipe's "
                                 f"BPE model {pieces}")
            head = TransducerHead(encoder_dim=self.encoder.output_dim, **head_cfg)
            head.load_state_dict({k[len("asr_head."):]: v for k, v in imp.state.items()
                                  if k.startswith("asr_head.")})
            self.ctc = head.ctc_output.eval()
            spec = dict(output_kind="probabilities", dim=int(head_cfg["vocab_size"]))
        else:
            spec = dict(output_kind="embedding", dim=self.encoder.output_dim)
        self.spec = TeacherSpec(name=name, task="asr", level="frame", frame_shift=ENCODER_FRAME_SHIFT,
                                min_duration=0.15, **spec)
        self.fbank = Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS, dither=0.0))
        self.to(device)

    def to(self, device) -> "IcefallZipformerTeacher":
        super().to(device)
        self.encoder.to(self.device)
        if self.ctc is not None:
            self.ctc.to(self.device)
        return self

    def num_frames(self, num_samples: int) -> int:
        return encoder_output_frames(int(round(num_samples / 160)))  # 100 Hz fbank -> 25 Hz

    @torch.no_grad()
    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        for i, a in enumerate(audios):
            self.check_audio(a, f"utterance {i}")
        feats = [torch.from_numpy(self.fbank.extract(a.astype(np.float32), 16000)) for a in audios]
        lens = torch.tensor([f.shape[0] for f in feats], device=self.device)
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device)
        out, out_lens = self.encoder(x, lens)
        if self.ctc is not None:
            out = torch.softmax(self.ctc(out).float(), dim=-1)
        return [out[i, : out_lens[i]].float().cpu().numpy() for i in range(len(audios))]
