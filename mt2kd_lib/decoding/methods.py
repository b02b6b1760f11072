"""The ASR decoding methods by name, what each needs, and one callable per method that turns encoder output into
words. The evaluate stage decodes with any subset; a method whose needs are not met is reported with the reason
("needs k2", "needs a CTC head") instead of being dropped."""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from mt2kd_lib.data.bpe import load_bpe
from mt2kd_lib.decoding.beam_search import modified_beam_search
from mt2kd_lib.decoding.ctc_greedy_search import ctc_greedy_search
from mt2kd_lib.decoding.greedy_search import greedy_search_batch
from mt2kd_lib.lang.graphs import k2_available, load_graph
from mt2kd_lib.lang.lexicon import read_symbol_table
from mt2kd_lib.models.transducer.transducer import TransducerHead

METHODS = ("greedy_search", "modified_beam_search", "fast_beam_search", "fast_beam_search_nbest_LG",
           "ctc_greedy_search", "ctc_hlg_1best")
NEEDS_K2 = {"fast_beam_search", "fast_beam_search_nbest_LG", "ctc_hlg_1best"}
NEEDS_CTC = {"ctc_greedy_search", "ctc_hlg_1best"}

# (encoder_out, encoder_out_lens) -> words per utterance
Decoder = Callable[[torch.Tensor, torch.Tensor], List[List[str]]]


@dataclass
class DecodingOptions:
    beam_size: int = 4  # modified_beam_search
    beam: float = 20.0  # fast_beam_search*: score beam
    max_contexts: int = 8
    max_states: int = 64
    num_paths: int = 200  # fast_beam_search_nbest_LG
    nbest_scale: float = 0.5
    # fast_beam_search_nbest_LG: LG's n-gram scores are scaled by this (icefall's --ngram-lm-scale default). At
    # 1.0 every word costs its full LM log-prob on top of the transducer's own scores and the search drops words
    # (egs/mini MT2KD: 72.9% WER, 1322 deletions, against 51.7% greedy).
    ngram_lm_scale: float = 0.01
    search_beam: float = 20.0  # ctc_hlg_1best
    output_beam: float = 8.0


def parse_methods(spec: str) -> List[str]:
    """``"greedy_search,ctc_hlg_1best"`` -> a list (``"all"``: every method, greedy_search first); ValueError naming
    an unknown method."""
    if spec.strip() == "all":
        return list(METHODS)
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown decoding method(s) {bad or [spec]}; choose from {', '.join(METHODS)}")
    return methods


def result_key(method: str, opts: DecodingOptions) -> str:
    """The settings name in result file names (icefall: beam_size_4 for modified beam search)."""
    return f"beam_size_{opts.beam_size}" if method == "modified_beam_search" else method


def unavailable(method: str, head: TransducerHead) -> Optional[str]:
    """Why ``method`` cannot run with this head and installation, or None."""
    if method in NEEDS_K2 and not k2_available():
        return "needs k2"
    if method in NEEDS_CTC and head.ctc_output is None:
        return "needs a CTC head (use_ctc)"
    return None


def make_decoder(method: str, head: TransducerHead, lang_dir: Path,
                 opts: Optional[DecodingOptions] = None) -> Decoder:
    """The decoder of ``method``; graphs are loaded (and checked against lang_dir/bpe.model) once, here."""
    opts = opts or DecodingOptions()
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose from {', '.join(METHODS)}")
    why = unavailable(method, head)
    if why:
        raise RuntimeError(f"decoding method {method}: {why}")
    lang_dir = Path(lang_dir)
    sp = load_bpe(lang_dir)

    def tokens_to_words(hyps: List[List[int]]) -> List[List[str]]:
        return [sp.decode(h).split() for h in hyps]

    if method == "greedy_search":
        return lambda out, lens: tokens_to_words(greedy_search_batch(head, out, lens))
    if method == "modified_beam_search":
        return lambda out, lens: tokens_to_words(modified_beam_search(head, out, lens, beam=opts.beam_size))
    if method == "ctc_greedy_search":
        return lambda out, lens: tokens_to_words(ctc_greedy_search(head.ctc_log_probs(out), lens, head.blank_id))

    import k2

    from mt2kd_lib.decoding import fsa_search

    bpe_model = lang_dir / "bpe.model"
    if method == "fast_beam_search":
        graph = k2.trivial_graph(head.vocab_size - 1)
        return lambda out, lens: tokens_to_words(fsa_search.fast_beam_search(
            head, out, lens, graph, opts.beam, opts.max_states, opts.max_contexts))
    id2word = {i: w for w, i in read_symbol_table(lang_dir / "words.txt").items()}

    def to_words(hyps: List[List[int]]) -> List[List[str]]:
        return [[id2word[i] for i in h] for h in hyps]

    if method == "fast_beam_search_nbest_LG":
        LG = load_graph(lang_dir / "LG.pt", "LG", bpe_model)
        LG.scores = LG.scores * opts.ngram_lm_scale
        return lambda out, lens: to_words(fsa_search.fast_beam_search_nbest_LG(
            head, out, lens, LG, opts.beam, opts.max_states, opts.max_contexts, opts.num_paths, opts.nbest_scale))
    HLG = load_graph(lang_dir / "HLG.pt", "HLG", bpe_model)
    return lambda out, lens: to_words(fsa_search.ctc_hlg_1best(
        head.ctc_log_probs(out), lens, HLG, opts.search_beam, opts.output_beam))


def decoders_for(methods: List[str], head: TransducerHead, lang_dir: Path,
                 opts: Optional[DecodingOptions] = None) -> Dict[str, object]:
    """``{method: decoder}`` for the methods that can run, ``{method: reason}`` (a str) for those that cannot."""
    return {m: (unavailable(m, head) or make_decoder(m, head, lang_dir, opts)) for m in methods}
