"""Deployment parity: sherpa-onnx's offline CTC decoder with our HLG.fst gives the transcripts of k2's HLG 1-best on
the same audio (a tiny random CTC student, exported to ONNX; the BPE has letters as pieces)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mt2kd_lib.data.bpe import load_bpe, train_bpe
from mt2kd_lib.lang import graphs
from mt2kd_lib.lang.lexicon import read_symbol_table
from mt2kd_lib.lang.prepare import prepare_lang_graphs
from mt2kd_lib.models.factory import build_student

if not graphs.k2_available():
    pytest.skip("k2 does not import; run tools/install.sh to build it", allow_module_level=True)
sherpa_onnx = pytest.importorskip("sherpa_onnx")

from mt2kd_lib.data.features import make_fbank_extractor  # noqa: E402

SR = 16000


def _kaldi_fbank(wav: np.ndarray) -> torch.Tensor:
    """Stage 2's fbank, which is also what sherpa-onnx computes (tests/test_export.py checks that)."""
    return torch.from_numpy(np.asarray(make_fbank_extractor().extract(wav.astype(np.float32), SR), dtype=np.float32))

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["CAT DOG", "DOG CAT", "CAT CAT DOG", "A CAT", "DOGMA CAT", "CATS DOG", "GOD ACT"] * 5


def _waves(n: int):
    """Tones and noise of changing pitch, one pattern per seed."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        t = np.arange(int(0.08 * SR)) / SR
        segs = [(0.5 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
                 + 0.05 * rng.standard_normal(t.size)) for _ in range(rng.integers(8, 20))]
        out.append(np.concatenate(segs).astype(np.float32))
    return out


def test_sherpa_onnx_ctc_hlg_matches_k2_hlg_1best(tmp_path):
    from mt2kd_lib.decoding.fsa_search import ctc_hlg_1best
    from mt2kd_lib.decoding.sherpa_ctc_hlg import sherpa_ctc_hlg_decode
    from mt2kd_lib.export.onnx_ctc import export_ctc

    lang = tmp_path / "lang"
    train_bpe(TEXTS, lang, 14)
    prepare_lang_graphs(TEXTS, lang)
    vocab = load_bpe(lang).get_piece_size()
    cfg = yaml.safe_load((REPO / "egs/mini/conf/student_tiny.yaml").read_text())
    cfg["heads"] = {"asr": {**cfg["heads"]["asr"], "vocab_size": vocab, "use_ctc": True}}
    torch.manual_seed(0)
    model = build_student(cfg).eval()
    with torch.no_grad():
        model.asr_head.ctc_output[1].weight.mul_(30.0)  # a peaky CTC output, so that HLG has a real choice to make
    export_ctc(model, tmp_path / "onnx", lang / "tokens.txt", max_seconds=10)

    waves = _waves(6)
    HLG = graphs.load_graph(lang / "HLG.pt", "HLG", lang / "bpe.model")
    id2word = {i: w for w, i in read_symbol_table(lang / "words.txt").items()}
    ours = []
    with torch.no_grad():
        for w in waves:
            feats = _kaldi_fbank(w)
            enc, enc_lens = model.asr_encoder_out(feats[None], torch.tensor([feats.shape[0]]))
            hyp = ctc_hlg_1best(model.asr_head.ctc_log_probs(enc), enc_lens, HLG)[0]
            ours.append(" ".join(id2word[i] for i in hyp))
    theirs = sherpa_ctc_hlg_decode(tmp_path / "onnx/ctc.onnx", tmp_path / "onnx/tokens.txt", lang / "HLG.fst", waves,
                                   sample_rate=SR)
    assert sum(bool(t) for t in ours) >= 3, f"degenerate test model output {ours}"  # the comparison must mean something
    assert theirs == ours
