"""Deployment-side HLG decoding: sherpa-onnx's offline recognizer with the exported CTC model
(:func:`mt2kd_lib.export.onnx_ctc.export_ctc`) and the lang stage's HLG.fst (input label = token id + 1). Used to
check that the deployed decoder gives the transcripts of k2's HLG 1-best (:func:`fsa_search.ctc_hlg_1best`)."""

from pathlib import Path
from typing import List, Sequence, Union

import numpy as np


def sherpa_ctc_hlg_decode(ctc_onnx: Union[str, Path], tokens: Union[str, Path], hlg_fst: Union[str, Path],
                          waves: Sequence[np.ndarray], sample_rate: int = 16000, max_active: int = 3000,
                          num_threads: int = 1) -> List[str]:
    """Transcripts of ``waves`` (float32 mono in [-1, 1]) decoded by sherpa-onnx with CTC + HLG.fst."""
    import sherpa_onnx

    for p in (ctc_onnx, tokens, hlg_fst):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: missing (export the CTC model and run the lang stage with k2)")
    rec = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(ctc_onnx), tokens=str(tokens), num_threads=num_threads, sample_rate=sample_rate, feature_dim=80,
        ctc_graph=str(hlg_fst), ctc_max_active=max_active)
    streams = []
    for w in waves:
        s = rec.create_stream()
        s.accept_waveform(sample_rate, np.asarray(w, dtype=np.float32))
        streams.append(s)
    rec.decode_streams(streams)
    return [s.result.text.strip() for s in streams]
