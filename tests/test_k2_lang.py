"""The lang graphs: lexicon spelled by the BPE model, our Kneser-Ney ARPA LM, L/LG/HLG built with k2 (tests that
need k2 are skipped, saying so, only when k2 does not import), and the errors for bad inputs."""

import json
import logging
import math

import pytest
import torch

from mt2kd_lib.data.bpe import load_bpe, train_bpe
from mt2kd_lib.lang import graphs
from mt2kd_lib.lang.lexicon import build_lexicon, lexicon_arcs, read_lexicon, read_symbol_table
from mt2kd_lib.lang.ngram import BOS, EOS, arpa_words, estimate_kneser_ney, write_arpa
from mt2kd_lib.lang.prepare import prepare_lang_graphs

# Characters as BPE pieces (vocab 12), so spellings are known: CAT = _ C A T, DOG = _ D O G.
TEXTS = ["CAT DOG", "DOG CAT", "CAT CAT DOG", "A CAT", "DOGMA CAT", "CATS DOG"] * 5
needs_k2 = pytest.mark.skipif(not graphs.k2_available(), reason="k2 does not import; run tools/install.sh to build it")


def make_lang(path, texts=TEXTS, vocab=12):
    train_bpe(texts, path, vocab)
    return path


def arpa_prob(model, hist, w):
    """p(w | hist) from the ARPA tables by the back-off rule (what any ARPA reader computes)."""
    gram = tuple(hist) + (w,)
    if gram in model[len(gram)]:
        return 10 ** model[len(gram)][gram][0]
    bow = model[len(hist)].get(tuple(hist), (0.0, 0.0))[1]
    return 10 ** bow * arpa_prob(model, hist[1:], w)


def test_kneser_ney_arpa_is_a_distribution_for_every_context(tmp_path):
    model = estimate_kneser_ney([t.split() for t in TEXTS], order=3)
    vocab = [g[0] for g in model[1] if g[0] != BOS]
    assert EOS in vocab and sorted(set(vocab) - {EOS}) == ["A", "CAT", "CATS", "DOG", "DOGMA"]
    contexts = [(), ("CAT",), (BOS,), (BOS, "CAT"), ("CAT", "DOG"), ("DOGMA", "CAT"), ("A", "DOG")]
    for h in contexts:
        assert math.isclose(sum(arpa_prob(model, list(h), w) for w in vocab), 1.0, rel_tol=1e-9), h
    # Seen continuations are more likely than unseen ones.
    assert arpa_prob(model, ["CAT", "CAT"], "DOG") > arpa_prob(model, ["CAT", "CAT"], "A")
    write_arpa(model, tmp_path / "lm.arpa")
    text = (tmp_path / "lm.arpa").read_text()
    assert "ngram 3=" in text and text.rstrip().endswith("\\end\\")
    assert sorted(arpa_words(tmp_path / "lm.arpa")) == ["A", "CAT", "CATS", "DOG", "DOGMA"]


def test_lexicon_spells_words_and_disambiguates_prefixes(tmp_path):
    sp = load_bpe(make_lang(tmp_path))
    lex = build_lexicon(["CAT", "CATS", "DOG"], sp, "words")
    assert lex.entries[0] == ("CAT", ["▁", "C", "A", "T"])
    # CAT is a prefix of CATS: it needs #1 to keep L_disambig determinizable.
    assert lex.disambig == ["#1", "", ""]
    assert lex.first_token_disambig_id == sp.get_piece_size()
    assert lex.word2id["<eps>"] == 0 and lex.word2id["#0"] == 4
    arcs, num_states = lexicon_arcs(lex, disambig=True)
    assert (0, 0, lex.token2id["#0"], lex.word2id["#0"], 0.0) in arcs
    assert sum(1 for a in arcs if a[3] == lex.word2id["CAT"]) == 1
    assert arcs[-1][2] == -1 or any(a[2] == -1 and a[1] == num_states - 1 for a in arcs)


def test_a_word_the_bpe_cannot_spell_is_an_error_naming_the_file(tmp_path):
    lang = make_lang(tmp_path / "lang")
    bad_arpa = tmp_path / "other.arpa"
    write_arpa(estimate_kneser_ney([["CAT", "XYZ"]], 2), bad_arpa)
    with pytest.raises(ValueError, match=r"other\.arpa.*cannot spell the word 'XYZ'"):
        prepare_lang_graphs(TEXTS, lang, arpa=bad_arpa, use_k2=False)
    (tmp_path / "lexicon.txt").write_text("CAT ▁ C A T\nQUUX ▁ Q U\n")
    with pytest.raises(ValueError, match=r"lexicon\.txt: line 2.*'QUUX'"):
        read_lexicon(tmp_path / "lexicon.txt", load_bpe(lang))


def test_without_k2_the_lexicon_and_lm_are_written_and_the_graphs_skipped(tmp_path, caplog):
    lang = make_lang(tmp_path)
    with caplog.at_level(logging.WARNING):
        info = prepare_lang_graphs(TEXTS, lang, use_k2=False)
    assert "skipping the k2 graphs" in caplog.text
    assert info["k2_graphs"] == [] and not (lang / "HLG.pt").exists()
    words = read_symbol_table(lang / "words.txt")
    assert {"CAT", "DOGMA", "#0", "<s>", "</s>"} <= set(words) and words["<eps>"] == 0
    assert (lang / "lm_3gram.arpa").is_file() and (lang / "lexicon.txt").is_file()
    assert json.loads((lang / "graphs.json").read_text())["bpe_sha256"] == graphs.file_sha256(lang / "bpe.model")


@needs_k2
def test_graphs_are_built_with_k2_and_as_openfst_files(tmp_path):
    import kaldifst

    lang = make_lang(tmp_path)
    info = prepare_lang_graphs(TEXTS, lang)
    for name in ("L.pt", "L_disambig.pt", "LG.pt", "HLG.pt", "L.fst", "G.fst", "LG.fst", "HLG.fst"):
        assert (lang / name).is_file(), name
    HLG = graphs.load_graph(lang / "HLG.pt", "HLG", lang / "bpe.model")
    LG = graphs.load_graph(lang / "LG.pt", "LG", lang / "bpe.model")
    assert HLG.num_arcs == info["num_arcs"]["HLG"] > LG.num_arcs > 0
    # No disambiguation symbol survives in the decoding graphs.
    assert int(LG.labels.max()) < info["first_token_disambig_id"]
    assert int(HLG.aux_labels.values.max()) < info["first_word_disambig_id"]
    fst = kaldifst.StdVectorFst.read(str(lang / "HLG.fst"))
    assert fst.num_states > 0
    # sherpa-onnx's convention: input label = token id + 1 (0 is epsilon), so the blank reads as 1.
    ilabels = {a.ilabel for s in range(fst.num_states) for a in kaldifst.ArcIterator(fst, s)}
    assert 1 in ilabels and max(ilabels) <= load_bpe(lang).get_piece_size()


@needs_k2
def test_missing_corrupt_or_foreign_graphs_are_refused_naming_the_file(tmp_path):
    lang = make_lang(tmp_path / "a")
    prepare_lang_graphs(TEXTS, lang)
    bpe = lang / "bpe.model"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        graphs.load_graph(lang / "nope.pt", "HLG", bpe)
    (tmp_path / "broken.pt").write_bytes((lang / "HLG.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"broken\.pt: cannot read"):
        graphs.load_graph(tmp_path / "broken.pt", "HLG", bpe)
    with pytest.raises(ValueError, match=r"LG\.pt: holds a 'LG' graph"):
        graphs.load_graph(lang / "LG.pt", "HLG", bpe)
    other = make_lang(tmp_path / "b", texts=[t.lower() for t in TEXTS])
    with pytest.raises(ValueError, match=r"HLG\.pt: built for another BPE model"):
        graphs.load_graph(lang / "HLG.pt", "HLG", other / "bpe.model")
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"foreign\.pt: not a graph"):
        graphs.load_graph(tmp_path / "foreign.pt", "HLG", bpe)
    # The OpenFst copies (what sherpa-onnx reads) are checked through the graphs.json written beside them.
    assert graphs.check_openfst_graph(lang / "HLG.fst", bpe) == lang / "HLG.fst"
    with pytest.raises(ValueError, match=r"a/HLG\.fst: not built for .*b/bpe\.model"):
        graphs.check_openfst_graph(lang / "HLG.fst", other / "bpe.model")
    with pytest.raises(FileNotFoundError, match=r"nope\.fst"):
        graphs.check_openfst_graph(lang / "nope.fst", bpe)
    (lang / "HLG.fst").write_bytes((lang / "HLG.fst").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"HLG\.fst: not a readable OpenFst graph"):
        graphs.check_openfst_graph(lang / "HLG.fst", bpe)
    (lang / "graphs.json").unlink()
    with pytest.raises(ValueError, match=r"HLG\.fst: cannot tell which BPE model"):
        graphs.check_openfst_graph(lang / "HLG.fst", bpe)


def test_lang_stage_of_run_sh_writes_lexicon_lm_and_graphs(tiny_recipe):
    from lhotse import CutSet

    from mt2kd_lib.data import contract

    lang = tiny_recipe["lang"]
    manifests = tiny_recipe["data"] / "manifests"
    train = contract.read_index(manifests)["asr"]["train"]
    train_words = {w for c in CutSet.from_file(contract.cuts_path(manifests, "asr", train))
                   for w in c.supervisions[0].text.split()}
    lex_words = {line.split()[0] for line in (lang / "lexicon.txt").read_text().splitlines()}
    assert lex_words == train_words  # the training transcripts' words, and only those
    assert set(arpa_words(lang / "lm_3gram.arpa")) == train_words
    if graphs.k2_available():
        assert (lang / "HLG.pt").is_file() and (lang / "HLG.fst").is_file() and (lang / "LG.pt").is_file()
    else:
        assert "skipping the k2 graphs" in tiny_recipe["log"] and not (lang / "HLG.pt").exists()
