"""Decoding with k2 FSAs: CTC with HLG (1-best), and the transducer's fast_beam_search on a graph (the trivial graph,
i.e. any token sequence, or LG, i.e. word sequences of the lexicon scored by the n-gram LM, with an n-best rescoring
that sums each word sequence over its token alignments). icefall's methods of the same names, written on k2's API.

Every function returns per utterance either token ids (trivial graph) or word ids (graphs with words).
"""

from typing import List, Sequence

import torch

from mt2kd_lib.models.transducer.transducer import TransducerHead


def _ragged_lists(fsa, attr: str) -> List[List[int]]:
    """Non-epsilon (> 0) values of a per-arc label attribute of a batch of linear FSAs, one list per FSA."""
    import k2

    vals = getattr(fsa, attr)
    if isinstance(vals, k2.RaggedTensor):
        vals = vals.remove_values_leq(0)
        shape = fsa.arcs.shape().compose(vals.shape).remove_axis(1).remove_axis(1)
        return k2.RaggedTensor(shape, vals.values).tolist()
    per_fsa = k2.RaggedTensor(fsa.arcs.shape().remove_axis(1), vals.contiguous())
    return per_fsa.remove_values_leq(0).tolist()


@torch.no_grad()
def ctc_hlg_1best(log_probs: torch.Tensor, log_probs_lens: torch.Tensor, HLG, search_beam: float = 20.0,
                  output_beam: float = 8.0, min_active_states: int = 30,
                  max_active_states: int = 10000) -> List[List[int]]:
    """Word ids of the best path of (CTC log-probs o HLG) per utterance (icefall's "1best" CTC decoding)."""
    import k2

    n = log_probs.size(0)
    # k2's pruned intersection wants the utterances longest first.
    order = sorted(range(n), key=lambda i: -int(log_probs_lens[i]))
    segments = torch.tensor([[i, 0, int(log_probs_lens[i])] for i in order], dtype=torch.int32)
    dense = k2.DenseFsaVec(log_probs, segments)
    lattice = k2.intersect_dense_pruned(HLG, dense, search_beam=search_beam, output_beam=output_beam,
                                        min_active_states=min_active_states, max_active_states=max_active_states)
    words = _ragged_lists(k2.shortest_path(lattice, use_double_scores=True), "aux_labels")
    out: List[List[int]] = [[] for _ in range(n)]
    for k, i in enumerate(order):
        out[i] = words[k]
    return out


def _rnnt_lattice(head: TransducerHead, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor, graph,
                  beam: float, max_states: int, max_contexts: int, temperature: float = 1.0):
    """The lattice of the transducer's frame-synchronous search constrained by ``graph`` (k2 RnntDecodingStreams):
    at each frame k2 proposes the decoder contexts still alive, we score them with the joiner, k2 prunes.
    k2 enters the graph's final arc with a blank on the utterance's last frame: a path must end in a blank frame."""
    import k2

    n, t_max = encoder_out.shape[:2]
    config = k2.RnntDecodingConfig(vocab_size=head.vocab_size, decoder_history_len=head.context_size, beam=beam,
                                   max_states=max_states, max_contexts=max_contexts)
    streams = k2.RnntDecodingStreams([k2.RnntDecodingStream(graph) for _ in range(n)], config)
    enc_proj = head.joiner.encoder_proj(encoder_out)  # (N, T, J)
    for t in range(t_max):
        shape, contexts = streams.get_contexts()  # [stream][context], (num_contexts, context_size) int32
        dec = head.joiner.decoder_proj(head.decoder(contexts.to(torch.int64), need_pad=False)).squeeze(1)
        enc = enc_proj[:, t].index_select(0, shape.row_ids(1).to(torch.int64))
        logits = head.joiner(enc, dec, project_input=False)  # (num_contexts, V)
        streams.advance((logits / temperature).log_softmax(dim=-1))
    streams.terminate_and_flush_to_streams()
    # Padded frames were also fed; the lattice of each utterance stops at its own length.
    return streams.format_output(encoder_out_lens.tolist())


@torch.no_grad()
def fast_beam_search(head: TransducerHead, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor, graph,
                     beam: float = 20.0, max_states: int = 64, max_contexts: int = 8) -> List[List[int]]:
    """Token ids of the best path (``graph`` = k2.trivial_graph(vocab_size - 1): any token sequence)."""
    import k2

    lattice = _rnnt_lattice(head, encoder_out, encoder_out_lens, graph, beam, max_states, max_contexts)
    best = k2.shortest_path(lattice, use_double_scores=True)
    return _ragged_lists(best, "labels")


@torch.no_grad()
def fast_beam_search_nbest_LG(head: TransducerHead, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor, LG,
                              beam: float = 20.0, max_states: int = 64, max_contexts: int = 8, num_paths: int = 200,
                              nbest_scale: float = 0.5) -> List[List[int]]:
    """Word ids per utterance: the search is constrained by LG; ``num_paths`` paths are sampled from the lattice,
    and among their distinct word sequences the one whose token alignments have the highest total (log-sum)
    score in the lattice wins."""
    import k2

    lattice = _rnnt_lattice(head, encoder_out, encoder_out_lens, LG, beam, max_states, max_contexts)
    n = encoder_out.size(0)
    nbest = k2.Nbest.from_lattice(lattice, num_paths=num_paths, use_double_scores=True, nbest_scale=nbest_scale)
    # Each distinct word sequence as a linear acceptor over words, with epsilon self-loops (and no other epsilon
    # arcs, which would count an alignment twice) so that it passes the lattice's word-less arcs ...
    words_fsa = k2.invert(nbest.fsa)
    del words_fsa.aux_labels
    words_fsa = k2.linear_fsa_with_self_loops(words_fsa)
    # ... intersected with the lattice read on its word side: all token alignments of that word sequence.
    inv_lattice = k2.arc_sort(k2.invert(lattice))
    path_to_utt = nbest.shape.row_ids(1)
    paths = k2.intersect_device(inv_lattice, words_fsa, b_to_a_map=path_to_utt, sorted_match_a=True)
    paths = k2.top_sort(k2.connect(paths))
    tot = paths.get_tot_scores(use_double_scores=True, log_semiring=True)
    best = k2.RaggedTensor(nbest.shape, tot.float()).argmax()  # index of the best path of each utterance, -1 if none
    seqs = _ragged_lists(nbest.fsa, "aux_labels")
    return [seqs[int(b)] if int(b) >= 0 else [] for b in best.tolist()][:n]


def words_of(ids: Sequence[int], id2word: Sequence[str]) -> List[str]:
    return [id2word[i] for i in ids]
