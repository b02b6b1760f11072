"""The student's CTC branch as one ONNX model in sherpa-onnx's offline zipformer CTC layout: inputs ``x`` (N, T, 80)
fbank and ``x_lens``; outputs ``log_probs`` (N, T', V) and ``log_probs_len``. With the lang stage's HLG.fst it is
decoded by sherpa-onnx's offline CTC FST decoder (:mod:`mt2kd_lib.decoding.sherpa_ctc_hlg`)."""

from pathlib import Path
from typing import Dict, Tuple, Union

from torch import Tensor, nn

from mt2kd_lib.export.onnx_export import (_FBANK_AXES, DEFAULT_MAX_SECONDS, DEFAULT_OPSET, _copy_file, _eval_copy,
                                          _export, _num_out_frames, _pad_time, example_features,
                                          extend_positional_encodings, min_input_frames)
from mt2kd_lib.models.student import StudentModel


class OnnxCtc(nn.Module):
    """fbank -> CTC log-probs of the ASR head's CTC branch."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__()
        self.model = model
        self.pad_frames = min_input_frames(model.encoder)

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        t_out = _num_out_frames(x.shape[1])
        out, out_lens = self.model.asr_encoder_out(_pad_time(x, self.pad_frames), x_lens)
        return self.model.asr_head.ctc_log_probs(out[:, :t_out]), out_lens


def export_ctc(model: StudentModel, out_dir: Union[str, Path], tokens: Union[str, Path], opset: int = DEFAULT_OPSET,
               max_seconds: float = DEFAULT_MAX_SECONDS) -> Dict[str, Path]:
    """Write ``ctc.onnx`` and ``tokens.txt`` into ``out_dir``."""
    if model.asr_head is None or model.asr_head.ctc_output is None:
        raise RuntimeError("export_ctc: the model has no ASR head with a CTC branch (use_ctc)")
    model = _eval_copy(model)
    out_dir = Path(out_dir)
    max_t50 = extend_positional_encodings(model.encoder, max_seconds)
    x, x_lens = example_features(model.encoder)
    files = {"ctc": _export(
        OnnxCtc(model).eval(), (x, x_lens), out_dir / "ctc.onnx", ["x", "x_lens"], ["log_probs", "log_probs_len"],
        {**_FBANK_AXES, "log_probs": {0: "N", 1: "T"}, "log_probs_len": {0: "N"}}, opset,
        {"model_type": "zipformer2_ctc", "version": "1", "model_author": "mt2kd",
         "feature_dim": str(model.encoder.feature_dim), "max_input_frames": str(2 * max_t50 + 7),
         "comment": "mt2kd student: CTC branch of the ASR head"})}
    files["tokens"] = _copy_file(Path(tokens), out_dir / "tokens.txt")
    return files
