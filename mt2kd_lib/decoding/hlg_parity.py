"""Deployment parity of HLG decoding: the exported CTC model (ONNX) + HLG.fst decoded by sherpa-onnx's offline CTC
FST decoder against our k2 HLG 1-best (:func:`fsa_search.ctc_hlg_1best`) on the same audio.

Both sides get the same input: the waveform of each cut, turned into fbank by stage 2's extractor on our side and by
sherpa-onnx itself on theirs (the two agree, tests/test_export.py). Both sides search the log-softmax output of the
CTC branch (blank = 0) with the same HLG (HLG.fst = HLG.pt with input label = token id + 1).

Where a transcript differs, two more k2 decodes tell why: k2 on the log-probs of the ONNX model (same search,
onnxruntime's numerics) and k2 with a wide beam (close to the exact best path of the ONNX log-probs).
"""

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from mt2kd_lib.decoding.asr_results import compute_wer
from mt2kd_lib.decoding.fsa_search import ctc_hlg_1best
from mt2kd_lib.decoding.methods import DecodingOptions
from mt2kd_lib.decoding.sherpa_ctc_hlg import decode_waves, make_ctc_hlg_recognizer
from mt2kd_lib.lang.graphs import load_graph
from mt2kd_lib.lang.lexicon import read_symbol_table
from mt2kd_lib.models.student import StudentModel

SAMPLE_RATE = 16000
WIDE = {"search_beam": 60.0, "output_beam": 30.0, "max_active_states": 100000}  # "exact" reference search


def _cause(k2_onnx: str, k2_wide: str, sherpa: str) -> str:
    """Why sherpa-onnx and k2 (on torch's log-probs) disagree on one utterance, from two more k2 decodes: of the
    ONNX log-probs with the same beams (``k2_onnx``) and with a wide beam (``k2_wide``)."""
    if k2_onnx == sherpa:
        return "numerics: k2 on the ONNX log-probs gives sherpa's transcript (torch vs onnxruntime)"
    if k2_wide == sherpa:
        return "k2 pruning: a wider k2 beam finds sherpa's transcript"
    if k2_wide == k2_onnx:
        return "sherpa-onnx pruning: a wider k2 beam keeps k2's transcript"
    return "unexplained: neither k2 decode gives sherpa's transcript"


def _agree(a: Sequence[str], b: Sequence[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


@torch.no_grad()
def compare_sherpa_hlg(model: StudentModel, lang_dir: Path, cuts, onnx_dir: Path,
                       opts: Optional[DecodingOptions] = None, max_active: int = 3000,
                       num_threads: int = 1) -> Dict:
    """Decode ``cuts`` (lhotse cuts with audio and a supervision text) with k2 and with sherpa-onnx; return the
    comparison (agreement rates, WERs, real-time factors, settings, and every differing utterance with its cause).

    ``onnx_dir`` holds ctc.onnx and tokens.txt (:func:`mt2kd_lib.export.onnx_ctc.export_ctc`); ``lang_dir`` holds
    bpe.model, words.txt, HLG.pt and HLG.fst of the same lang stage (both graphs are checked against bpe.model).
    ``opts`` gives k2's search_beam / output_beam; ``max_active`` is sherpa-onnx's ctc_max_active.
    """
    import onnxruntime as ort

    from mt2kd_lib.data.features import make_fbank_extractor

    opts = opts or DecodingOptions()
    lang_dir, onnx_dir = Path(lang_dir), Path(onnx_dir)
    bpe_model = lang_dir / "bpe.model"
    HLG = load_graph(lang_dir / "HLG.pt", "HLG", bpe_model)
    hlg_fst = lang_dir / "HLG.fst"
    id2word = {i: w for w, i in read_symbol_table(lang_dir / "words.txt").items()}
    sess_opts = ort.SessionOptions()
    sess_opts.intra_op_num_threads = sess_opts.inter_op_num_threads = num_threads
    sess = ort.InferenceSession(str(onnx_dir / "ctc.onnx"), sess_opts, providers=["CPUExecutionProvider"])
    fbank = make_fbank_extractor()
    model = model.eval()

    def words(log_probs: torch.Tensor, **beams) -> str:
        lens = torch.tensor([log_probs.size(1)], dtype=torch.int32)
        search = {"search_beam": opts.search_beam, "output_beam": opts.output_beam, **beams}
        return " ".join(id2word[i] for i in ctc_hlg_1best(log_probs, lens, HLG, **search)[0])

    ids, refs, waves, ours, max_diff = [], [], [], [], 0.0
    onnx_lp: List[torch.Tensor] = []
    k2_seconds = audio_seconds = 0.0
    for cut in cuts:
        wave = cut.resample(SAMPLE_RATE).load_audio()[0].astype(np.float32)
        ids.append(cut.id)
        refs.append(" ".join(cut.supervisions[0].text.split()))
        waves.append(wave)
        audio_seconds += wave.size / SAMPLE_RATE
        feats = torch.from_numpy(np.asarray(fbank.extract(wave, SAMPLE_RATE), dtype=np.float32))[None]
        t0 = time.perf_counter()  # encoder + HLG search (fbank excluded; sherpa-onnx's time includes its fbank)
        enc, enc_lens = model.asr_encoder_out(feats, torch.tensor([feats.size(1)]))
        lp = model.asr_head.ctc_log_probs(enc)[:, :int(enc_lens[0])]
        ours.append(words(lp))
        k2_seconds += time.perf_counter() - t0
        x_lp, x_len = sess.run(None, {"x": feats.numpy(), "x_lens": np.array([feats.size(1)], dtype=np.int64)})
        onnx = torch.from_numpy(x_lp[:, :int(x_len[0])])
        if onnx.shape != lp.shape:
            raise RuntimeError(f"{cut.id}: ONNX log-probs {tuple(onnx.shape)} vs torch {tuple(lp.shape)}")
        max_diff = max(max_diff, float((onnx - lp).abs().max()))
        onnx_lp.append(onnx)
    rec = make_ctc_hlg_recognizer(onnx_dir / "ctc.onnx", onnx_dir / "tokens.txt", hlg_fst, SAMPLE_RATE,
                                  max_active=max_active, num_threads=num_threads, bpe_model=bpe_model)
    t0 = time.perf_counter()
    theirs = decode_waves(rec, waves, SAMPLE_RATE)  # fbank + ONNX + FST search
    sherpa_seconds = time.perf_counter() - t0
    theirs = [" ".join(t.split()) for t in theirs]
    diffs = []
    for k, (ours_k, theirs_k) in enumerate(zip(ours, theirs)):
        if ours_k == theirs_k:
            continue
        k2_onnx = words(onnx_lp[k])
        k2_wide = words(onnx_lp[k], **WIDE)
        diffs.append({"cut_id": ids[k], "ref": refs[k], "k2": ours_k, "sherpa_onnx": theirs_k, "k2_onnx": k2_onnx,
                      "k2_wide_beam": k2_wide, "cause": _cause(k2_onnx, k2_wide, theirs_k)})

    def wer(hyps: List[str]) -> float:
        return round(compute_wer([r.split() for r in refs], [h.split() for h in hyps])[0], 2)

    return {
        "num_utts": len(ids),
        "agreement": round(_agree(ours, theirs), 4),
        "num_identical": sum(a == b for a, b in zip(ours, theirs)),
        "wer": {"k2_hlg_1best": wer(ours), "sherpa_onnx_hlg": wer(theirs)},
        "rtf": {"k2_hlg_1best": round(k2_seconds / max(audio_seconds, 1e-9), 4),
                "sherpa_onnx_hlg": round(sherpa_seconds / max(audio_seconds, 1e-9), 4)},
        "max_abs_log_prob_diff_torch_onnx": max_diff,
        "settings": {"k2": {"search_beam": opts.search_beam, "output_beam": opts.output_beam,
                            "min_active_states": 30, "max_active_states": 10000},
                     "k2_wide_beam": WIDE,
                     "sherpa_onnx": {"ctc_max_active": max_active, "beam": 16.0,
                                     "note": "FasterDecoder's default beam; sherpa-onnx exposes only max_active"},
                     "input": "waveform -> stage-2 fbank (k2) / sherpa-onnx fbank; log-softmax of the CTC branch, "
                              "blank 0; HLG.pt / HLG.fst of one lang stage"},
        "differences": diffs,
        "transcripts": [{"cut_id": i, "ref": r, "k2": a, "sherpa_onnx": b}
                        for i, r, a, b in zip(ids, refs, ours, theirs)],
    }

