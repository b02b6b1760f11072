"""The lang stage's graphs, end to end: lexicon and n-gram LM from the training transcripts, then (with k2) L, G, LG,
HLG as k2 .pt files and as OpenFst files, all in the lang dir next to bpe.model. Without k2 only the lexicon and the
ARPA LM are written, and one log line says which graphs were skipped."""

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

from mt2kd_lib.data.bpe import load_bpe
from mt2kd_lib.lang import graphs
from mt2kd_lib.lang.lexicon import build_lexicon, lexicon_arcs, transcript_words, write_lexicon
from mt2kd_lib.lang.ngram import arpa_words, train_arpa

K2_GRAPHS = ("L.pt", "L_disambig.pt", "LG.pt", "HLG.pt")


def prepare_lang_graphs(transcripts: Sequence[str], lang_dir: Path, order: int = 3, source: str = "transcripts",
                        arpa: Optional[Path] = None, use_k2: Optional[bool] = None) -> Dict:
    """Write the lexicon, the LM and (with k2) the graphs into ``lang_dir``; returns what graphs.json records.

    Args:
      transcripts: the ASR training transcripts (words separated by spaces); ``source`` names them in errors.
      lang_dir: holds bpe.model (the lang stage's BPE); everything is written next to it.
      order: n-gram order of the Kneser-Ney LM estimated from ``transcripts``.
      arpa: an existing ARPA LM to use instead; its words join the lexicon (each must be spellable by the BPE).
      use_k2: None = when k2 imports.
    """
    lang_dir = Path(lang_dir)
    sp = load_bpe(lang_dir)
    bpe_model = lang_dir / "bpe.model"
    words = transcript_words(transcripts)
    if not words:
        raise ValueError(f"{source}: no words to build a lexicon from")
    lm_words = []
    if arpa is None:
        arpa = train_arpa(transcripts, lang_dir / f"lm_{order}gram.arpa", order)
    else:
        lm_words = arpa_words(arpa)
    # Words are spelled source by source, so that an error names the file the unspellable word came from.
    build_lexicon(lm_words, sp, str(arpa))
    lex = build_lexicon(sorted(set(words) | set(lm_words)), sp, source)
    write_lexicon(lex, lang_dir)
    info = {"bpe_sha256": graphs.file_sha256(bpe_model), "order": order, "arpa": Path(arpa).name,
            "num_words": len(lex.entries), "first_token_disambig_id": lex.first_token_disambig_id,
            "first_word_disambig_id": lex.first_word_disambig_id, "k2_graphs": []}
    if use_k2 is None:
        use_k2 = graphs.k2_available()
    if not use_k2:
        logging.warning(f"k2 is not installed: skipping the k2 graphs {', '.join(K2_GRAPHS)} and their OpenFst "
                        f"copies in {lang_dir} (lexicon and ARPA LM written); the FSA decoding methods need them")
        graphs.write_manifest(lang_dir, info)
        return info
    import k2

    sha = info["bpe_sha256"]
    L = graphs.arcs_to_k2(*lexicon_arcs(lex, disambig=False))
    L_disambig = graphs.arcs_to_k2(*lexicon_arcs(lex, disambig=True))
    g_text = graphs.compile_g(Path(arpa), lang_dir / "words.txt", order)
    (lang_dir / f"G_{order}_gram.fst.txt").write_text(g_text)
    G = k2.Fsa.from_openfst(g_text, acceptor=False)
    LG = graphs.compile_lg(L_disambig, G, lex)
    HLG = graphs.compile_hlg(LG, max_token_id=sp.get_piece_size() - 1)
    for name, fsa in (("L", L), ("L_disambig", L_disambig), ("LG", LG), ("HLG", HLG)):
        graphs.save_graph(fsa, lang_dir / f"{name}.pt", name, sha)
    # OpenFst copies for deployment. HLG.fst follows sherpa-onnx's offline CTC FST decoder: input label = token
    # id + 1 (0 is epsilon there), output label = word id.
    graphs.write_openfst(graphs.fsa_to_openfst_text(L), lang_dir / "L.fst")
    graphs.write_openfst(g_text, lang_dir / "G.fst")
    graphs.write_openfst(graphs.fsa_to_openfst_text(LG), lang_dir / "LG.fst")
    graphs.write_openfst(graphs.fsa_to_openfst_text(HLG, ilabel_offset=1), lang_dir / "HLG.fst")
    info["k2_graphs"] = list(K2_GRAPHS)
    info["openfst_graphs"] = ["L.fst", "G.fst", "LG.fst", "HLG.fst"]
    info["num_arcs"] = {"LG": int(LG.num_arcs), "HLG": int(HLG.num_arcs)}
    graphs.write_manifest(lang_dir, info)
    return info
