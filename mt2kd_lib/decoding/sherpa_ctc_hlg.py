"""Deployment-side HLG decoding: sherpa-onnx's offline recognizer with the exported CTC model
(:func:`mt2kd_lib.export.onnx_ctc.export_ctc`) and the lang stage's HLG.fst (input label = token id + 1). Used to
check that the deployed decoder gives the transcripts of k2's HLG 1-best (:func:`fsa_search.ctc_hlg_1best`)."""

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np


def make_ctc_hlg_recognizer(ctc_onnx: Union[str, Path], tokens: Union[str, Path], hlg_fst: Union[str, Path],
                            sample_rate: int = 16000, max_active: int = 3000, num_threads: int = 1,
                            bpe_model: Optional[Union[str, Path]] = None):
    """sherpa-onnx's offline recognizer with CTC + HLG.fst. With ``bpe_model``, HLG.fst is first checked to be a
    readable graph built for that BPE model (sherpa-onnx would end the process on a bad one)."""
    import sherpa_onnx

    for p in (ctc_onnx, tokens, hlg_fst):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: missing (export the CTC model and run the lang stage with k2)")
    if bpe_model is not None:
        from mt2kd_lib.lang.graphs import check_openfst_graph

        check_openfst_graph(Path(hlg_fst), Path(bpe_model))
    return sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(ctc_onnx), tokens=str(tokens), num_threads=num_threads, sample_rate=sample_rate, feature_dim=80,
        ctc_graph=str(hlg_fst), ctc_max_active=max_active)


def decode_waves(rec, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> List[str]:
    """Transcripts of ``waves`` (float32 mono in [-1, 1]) by a recognizer of :func:`make_ctc_hlg_recognizer`."""
    streams = []
    for w in waves:
        s = rec.create_stream()
        s.accept_waveform(sample_rate, np.asarray(w, dtype=np.float32))
        streams.append(s)
    rec.decode_streams(streams)
    return [s.result.text.strip() for s in streams]


def sherpa_ctc_hlg_decode(ctc_onnx: Union[str, Path], tokens: Union[str, Path], hlg_fst: Union[str, Path],
                          waves: Sequence[np.ndarray], sample_rate: int = 16000, max_active: int = 3000,
                          num_threads: int = 1, bpe_model: Optional[Union[str, Path]] = None) -> List[str]:
    """Transcripts of ``waves`` decoded by sherpa-onnx with CTC + HLG.fst (recognizer built, then decoding)."""
    rec = make_ctc_hlg_recognizer(ctc_onnx, tokens, hlg_fst, sample_rate, max_active, num_threads, bpe_model)
    return decode_waves(rec, waves, sample_rate)
