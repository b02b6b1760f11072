"""FSA decoding on tiny graphs whose best path is known by hand.

The BPE model has characters as pieces, so a word's tokens are its letters. A "peaky" model (its joiner and CTC
branch read the encoder frame directly) is made to hear the non-word "CAG": token-level methods must output CAG,
graph methods (LG, HLG) the lexicon word CAT, whose spelling is one cheap substitution away. Tests that need k2
are skipped, saying so, only when k2 does not import.
"""

import pytest
import torch

from mt2kd_lib.data.bpe import load_bpe, train_bpe
from mt2kd_lib.decoding import methods as dm
from mt2kd_lib.decoding.ctc_greedy_search import ctc_greedy_search
from mt2kd_lib.decoding.greedy_search import greedy_search_batch
from mt2kd_lib.lang import graphs
from mt2kd_lib.lang.lexicon import read_symbol_table
from mt2kd_lib.lang.prepare import prepare_lang_graphs
from mt2kd_lib.models.transducer.transducer import TransducerHead

TEXTS = ["CAT DOG", "DOG CAT", "CAT CAT DOG", "A CAT", "DOGMA CAT", "CATS DOG"] * 5
needs_k2 = pytest.mark.skipif(not graphs.k2_available(), reason="k2 does not import; run tools/install.sh to build it")


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    d = tmp_path_factory.mktemp("lang")
    train_bpe(TEXTS, d, 12)
    prepare_lang_graphs(TEXTS, d)  # the k2 graphs only where k2 imports
    return d


def frames(sp, spec):
    """(1, T, V) encoder frames: each frame a dict piece -> strength (the peaky head turns it into log-probs)."""
    v = sp.get_piece_size()
    x = torch.zeros(1, len(spec), v)
    for t, f in enumerate(spec):
        for piece, s in f.items():
            x[0, t, 0 if piece == "<blk>" else sp.piece_to_id(piece)] = s
    return x


def peaky_head(v, use_ctc=True):
    """A head whose transducer and CTC log-probs depend on the encoder frame only: logits = 20 tanh(frame)."""
    head = TransducerHead(encoder_dim=v, vocab_size=v, decoder_dim=8, joiner_dim=v, use_ctc=use_ctc).eval()
    with torch.no_grad():
        j = head.joiner
        j.encoder_proj.weight.copy_(torch.eye(v))
        j.encoder_proj.bias.zero_()
        j.decoder_proj.weight.zero_()
        j.decoder_proj.bias.zero_()
        j.output_linear.weight.copy_(20 * torch.eye(v))
        j.output_linear.bias.zero_()
        if use_ctc:
            lin = head.ctc_output[1]
            lin.weight.copy_(20 * torch.eye(v))
            lin.bias.zero_()
    return head


# "CAG": _ C A G, with T a weaker second choice on the G frame, then a blank frame: k2's RNN-T graph search
# (fast_beam_search*) ends an utterance by taking the graph's final arc with a blank on its last frame, so an
# utterance whose every frame emits a token has no complete path there (as in icefall; real audio ends in silence).
CAG = [{"▁": 3}, {"C": 3}, {"A": 3}, {"G": 3, "T": 1}, {"<blk>": 3}]


def test_ctc_greedy_search_merges_repeats_and_drops_blanks():
    lp = torch.full((2, 6, 5), -10.0)
    for t, k in enumerate([1, 1, 0, 1, 2, 2]):
        lp[0, t, k] = 0
    for t, k in enumerate([3, 0, 3, 4, 0, 0]):
        lp[1, t, k] = 0
    assert ctc_greedy_search(lp, torch.tensor([6, 4])) == [[1, 1, 2], [3, 3, 4]]
    with pytest.raises(ValueError, match="log_probs_lens"):
        ctc_greedy_search(lp, torch.tensor([6]))


@needs_k2
def test_hlg_1best_outputs_the_lexicon_word_nearest_to_what_was_heard(lang):
    from mt2kd_lib.decoding.fsa_search import ctc_hlg_1best

    sp = load_bpe(lang)
    HLG = graphs.load_graph(lang / "HLG.pt", "HLG", lang / "bpe.model")
    words = {i: w for w, i in read_symbol_table(lang / "words.txt").items()}
    blank = {"<blk>": 3}
    # Clean "CAT DOG" with blanks between tokens, and "CAG" (no such word): HLG says CAT.
    clean = [f for p in "▁CAT▁DOG" for f in ({p: 3}, blank)]
    x = torch.cat([frames(sp, clean), torch.cat([frames(sp, CAG), torch.zeros(1, 16 - len(CAG), 12)], dim=1)])
    lp = (20 * torch.tanh(x)).log_softmax(-1)
    lens = torch.tensor([16, len(CAG)])
    greedy = [sp.decode(h) for h in ctc_greedy_search(lp, lens)]
    assert greedy == ["CAT DOG", "CAG"]
    hyps = ctc_hlg_1best(lp, lens, HLG)
    assert [[words[i] for i in h] for h in hyps] == [["CAT", "DOG"], ["CAT"]]


@needs_k2
def test_fast_beam_search_trivial_graph_is_free_and_lg_is_constrained(lang):
    from mt2kd_lib.decoding.fsa_search import fast_beam_search, fast_beam_search_nbest_LG
    import k2

    sp = load_bpe(lang)
    head = peaky_head(sp.get_piece_size(), use_ctc=False)
    x = frames(sp, CAG)
    lens = torch.tensor([len(CAG)])
    trivial = fast_beam_search(head, x, lens, k2.trivial_graph(head.vocab_size - 1))
    assert trivial == greedy_search_batch(head, x, lens) and sp.decode(trivial[0]) == "CAG"
    LG = graphs.load_graph(lang / "LG.pt", "LG", lang / "bpe.model")
    words = {i: w for w, i in read_symbol_table(lang / "words.txt").items()}
    hyps = fast_beam_search_nbest_LG(head, x, lens, LG, num_paths=20)
    assert [words[i] for i in hyps[0]] == ["CAT"]


@needs_k2
def test_every_method_by_name_on_the_same_encoder_output(lang):
    sp = load_bpe(lang)
    head = peaky_head(sp.get_piece_size())
    x = frames(sp, CAG)
    lens = torch.tensor([len(CAG)])
    got = {m: d(x, lens) for m, d in dm.decoders_for(list(dm.METHODS), head, lang).items()}
    assert got == {"greedy_search": [["CAG"]], "modified_beam_search": [["CAG"]], "fast_beam_search": [["CAG"]],
                   "ctc_greedy_search": [["CAG"]], "fast_beam_search_nbest_LG": [["CAT"]],
                   "ctc_hlg_1best": [["CAT"]]}


def test_methods_that_cannot_run_say_why(lang, monkeypatch):
    head = peaky_head(12, use_ctc=False)
    got = dm.decoders_for(["greedy_search", "ctc_greedy_search"], head, lang)
    assert callable(got["greedy_search"]) and got["ctc_greedy_search"] == "needs a CTC head (use_ctc)"
    # Without k2 (as on a machine where it is not installed) the FSA methods are reported, not dropped.
    monkeypatch.setattr(dm, "k2_available", lambda: False)
    got = dm.decoders_for(["greedy_search", "fast_beam_search", "fast_beam_search_nbest_LG"], head, lang)
    assert got["fast_beam_search"] == got["fast_beam_search_nbest_LG"] == "needs k2"
    with pytest.raises(ValueError, match="unknown decoding method"):
        dm.parse_methods("greedy_search,beam_search")


def test_hlg_parity_differences_are_attributed_to_numerics_or_pruning():
    from mt2kd_lib.decoding.hlg_parity import _cause

    # (k2 on the ONNX log-probs, k2 with a wide beam, sherpa-onnx); k2 on torch's log-probs said something else
    assert _cause("B", "B", "B").startswith("numerics")
    assert _cause("A", "B", "B").startswith("k2 pruning")
    assert _cause("A", "A", "B").startswith("sherpa-onnx pruning")
    assert _cause("A", "C", "B").startswith("unexplained")
