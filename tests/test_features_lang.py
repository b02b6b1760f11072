"""Feature round-trip through the lilcom archive, and the BPE lang dir."""

import numpy as np
import torch
from lhotse import CutSet, Fbank, FbankConfig

from mt2kd_lib.data.bpe import load_bpe
from mt2kd_lib.data.features import fbank_cuts_path


def test_fbank_round_trip_matches_direct_computation(tiny_recipe):
    cuts = CutSet.from_file(fbank_cuts_path(tiny_recipe["data"] / "fbank", "asr", "train"))
    extractor = Fbank(FbankConfig(num_mel_bins=80, dither=0.0))
    for cut in list(cuts)[:3]:
        stored = cut.load_features()
        assert stored.shape[1] == 80
        assert abs(stored.shape[0] - round(cut.duration * 100)) <= 1
        direct = extractor.extract(cut.load_audio()[0], cut.sampling_rate)
        n = min(len(direct), len(stored))
        err = np.abs(stored[:n] - direct[:n])
        # lilcom keeps log-mel energies to about 2^-5 of a unit: far below what training notices.
        assert err.max() < 0.05, err.max()
        assert np.isfinite(stored).all()


def test_kd_pool_reuses_training_features(tiny_recipe):
    fb = tiny_recipe["data"] / "fbank"
    train = {c.id: c.features.storage_key for c in CutSet.from_file(fbank_cuts_path(fb, "asr", "train"))}
    pool = CutSet.from_file(fbank_cuts_path(fb, "kd", "pool"))
    shared = [c for c in pool if c.id in train]
    assert shared and all(c.features.storage_key == train[c.id] for c in shared)


def test_bpe_lang_dir(tiny_recipe):
    lang = tiny_recipe["lang"]
    tokens = dict(line.split() for line in (lang / "tokens.txt").read_text().splitlines())
    assert tokens["<blk>"] == "0" and tokens["<sos/eos>"] == "1" and tokens["<unk>"] == "2"
    sp = load_bpe(lang)
    assert sp.get_piece_size() == len(tokens)
    text = "THE QUICK DOG SEES A RIVER"
    ids = sp.encode(text, out_type=int)
    assert 0 not in ids and sp.decode(ids) == text
