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


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A lang dir with graphs, a tiny random CTC student (CTC layer fitted to the test audio) and its ctc.onnx."""
    from mt2kd_lib.export.onnx_ctc import export_ctc

    tmp_path = tmp_path_factory.mktemp("sherpa_hlg")
    lang = tmp_path / "lang"
    train_bpe(TEXTS, lang, 14)
    prepare_lang_graphs(TEXTS, lang)
    vocab = load_bpe(lang).get_piece_size()
    cfg = yaml.safe_load((REPO / "egs/mini/conf/student_tiny.yaml").read_text())
    cfg["heads"] = {"asr": {**cfg["heads"]["asr"], "vocab_size": vocab, "use_ctc": True}}
    torch.manual_seed(0)
    model = build_student(cfg).eval()
    # A random encoder's output hardly changes with the input. The CTC layer reads the encoder output standardized
    # over the test audio, through a random projection: the token posteriors change from frame to frame and from
    # utterance to utterance, so the transcripts differ and HLG has real choices to make.
    with torch.no_grad():
        enc = torch.cat([model.asr_encoder_out(f[None], torch.tensor([f.shape[0]]))[0][0]
                         for f in map(_kaldi_fbank, _waves(12))])
        mean, std = enc.mean(0), enc.std(0) + 1e-6
        weight = 2.0 * torch.randn(vocab, enc.shape[1]) / std / enc.shape[1] ** 0.5
        model.asr_head.ctc_output[1].weight.copy_(weight)
        model.asr_head.ctc_output[1].bias.copy_(-weight @ mean)
    export_ctc(model, tmp_path / "onnx", lang / "tokens.txt", max_seconds=10)
    return {"lang": lang, "model": model, "onnx": tmp_path / "onnx", "root": tmp_path}


def test_sherpa_onnx_ctc_hlg_matches_k2_hlg_1best(exported):
    from mt2kd_lib.decoding.ctc_greedy_search import ctc_greedy_search
    from mt2kd_lib.decoding.fsa_search import ctc_hlg_1best
    from mt2kd_lib.decoding.sherpa_ctc_hlg import sherpa_ctc_hlg_decode

    lang, model, onnx = exported["lang"], exported["model"], exported["onnx"]
    sp = load_bpe(lang)
    waves = _waves(6)
    HLG = graphs.load_graph(lang / "HLG.pt", "HLG", lang / "bpe.model")
    id2word = {i: w for w, i in read_symbol_table(lang / "words.txt").items()}
    ours, greedy = [], []
    with torch.no_grad():
        for w in waves:
            feats = _kaldi_fbank(w)
            enc, enc_lens = model.asr_encoder_out(feats[None], torch.tensor([feats.shape[0]]))
            lp = model.asr_head.ctc_log_probs(enc)
            hyp = ctc_hlg_1best(lp, enc_lens, HLG)[0]
            ours.append(" ".join(id2word[i] for i in hyp))
            greedy.append(sp.decode(ctc_greedy_search(lp, enc_lens)[0]))
    theirs = sherpa_ctc_hlg_decode(onnx / "ctc.onnx", onnx / "tokens.txt", lang / "HLG.fst", waves,
                                   sample_rate=SR, bpe_model=lang / "bpe.model")
    # The comparison must mean something: several different non-empty transcripts, and the graph at work (the
    # unconstrained CTC greedy search spells something else).
    assert len({t for t in ours if t}) >= 3, f"degenerate test model output {ours}"
    assert greedy != ours
    assert theirs == ours


def test_compare_sherpa_hlg_on_cuts_agrees_and_reports(exported):
    """mt2kd_lib.decoding.hlg_parity (tools/compare_sherpa_hlg.py) on lhotse cuts with audio files."""
    import soundfile as sf
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from mt2kd_lib.decoding.hlg_parity import compare_sherpa_hlg

    wav_dir = exported["root"] / "wavs"
    wav_dir.mkdir(exist_ok=True)
    recs, sups = [], []
    for k, w in enumerate(_waves(12)):
        sf.write(str(wav_dir / f"u{k}.wav"), w, SR)
        rec = Recording.from_file(wav_dir / f"u{k}.wav", recording_id=f"u{k}")
        recs.append(rec)
        sups.append(SupervisionSegment(f"u{k}", f"u{k}", 0.0, rec.duration, text=TEXTS[k]))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                                 supervisions=SupervisionSet.from_segments(sups))
    res = compare_sherpa_hlg(exported["model"], exported["lang"], cuts, exported["onnx"])
    assert res["num_utts"] == 12 and res["differences"] == []
    assert res["num_identical"] == 12 and res["agreement"] == 1.0
    assert res["wer"]["k2_hlg_1best"] == res["wer"]["sherpa_onnx_hlg"]
    assert len({t["k2"] for t in res["transcripts"] if t["k2"]}) >= 3
    assert res["max_abs_log_prob_diff_torch_onnx"] < 1e-3
    assert [t["ref"] for t in res["transcripts"]] == TEXTS[:12]
