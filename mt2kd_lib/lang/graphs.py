"""Decoding graphs: L (lexicon), G (word n-gram LM), H (CTC topology), LG and HLG, compiled with k2 (the recipe of
icefall's compile_lg.py / compile_hlg.py) and also written as OpenFst files for deployment (sherpa-onnx).

Every graph is saved as ``{"fsa": Fsa.as_dict(), "kind": ..., "bpe_sha256": ...}``: the hash of the bpe.model it
was built for is checked before decoding (:func:`load_graph`), so a graph of another BPE model is refused instead of
silently decoding garbage. k2 is imported lazily: everything here needs it except the OpenFst text helpers.
"""

import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from mt2kd_lib.lang.lexicon import Arc, Lexicon

GRAPHS_JSON = "graphs.json"


def k2_available() -> bool:
    try:
        import k2  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def arcs_to_k2(arcs: Sequence[Arc], num_states: int):
    """A k2 transducer (labels = tokens, aux_labels = words) from :func:`lexicon_arcs`-style arcs."""
    import k2

    lines = [f"{s} {d} {t} {w} {sc}" for s, d, t, w, sc in arcs]
    lines.append(str(num_states - 1))
    return k2.Fsa.from_str("\n".join(lines), acceptor=False)


def compile_g(arpa: Path, words_txt: Path, order: int) -> str:
    """OpenFst text of G from an ARPA LM (kaldilm's arpa2fst): input side word ids with #0 on the back-off arcs."""
    import kaldilm

    return kaldilm.arpa2fst(input_arpa=str(arpa), disambig_symbol="#0", read_symbol_table=str(words_txt),
                            max_order=order)


def compile_lg(L_disambig, G, lex: Lexicon):
    """det(L o G) with the disambiguation symbols removed, epsilons removed and arcs sorted (icefall's LG)."""
    import k2

    LG = k2.connect(k2.compose(k2.arc_sort(L_disambig), k2.arc_sort(G)))
    LG = k2.connect(k2.determinize(LG))
    labels = LG.labels.clone()
    labels[labels >= lex.first_token_disambig_id] = 0
    LG.labels = labels
    LG.__dict__["_properties"] = None  # k2 caches properties; relabelling invalidates them (k2 issue 874)
    values = LG.aux_labels.values
    values[values >= lex.first_word_disambig_id] = 0
    LG = k2.connect(k2.remove_epsilon(LG))
    LG.aux_labels = LG.aux_labels.remove_values_eq(0)
    return k2.arc_sort(LG)


def compile_hlg(LG, max_token_id: int):
    """H o LG, H being the standard CTC topology over tokens 0..max_token_id (0 = blank)."""
    import k2

    H = k2.ctc_topo(max_token_id, modified=False)
    HLG = k2.connect(k2.compose(H, LG, inner_labels="tokens"))
    return k2.arc_sort(HLG)


def save_graph(fsa, path: Path, kind: str, bpe_sha256: str) -> None:
    torch.save({"fsa": fsa.as_dict(), "kind": kind, "bpe_sha256": bpe_sha256}, path)


def load_graph(path: Path, kind: str, bpe_model: Path, device: Optional[torch.device] = None):
    """The k2 Fsa saved by :func:`save_graph`, after checking that it is a ``kind`` graph built for ``bpe_model``.

    Raises FileNotFoundError (missing), ValueError (corrupt, another kind, another BPE model); each names the file.
    """
    import k2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {kind} graph; run the lang stage (run.sh stage 3) with k2 installed")
    try:
        d = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise ValueError(f"{path}: cannot read the {kind} graph ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict) or "fsa" not in d or "bpe_sha256" not in d:
        raise ValueError(f"{path}: not a graph written by mt2kd (no fsa / bpe_sha256 entries)")
    if d.get("kind") != kind:
        raise ValueError(f"{path}: holds a {d.get('kind')!r} graph, expected {kind!r}")
    want = file_sha256(bpe_model)
    if d["bpe_sha256"] != want:
        raise ValueError(f"{path}: built for another BPE model (sha256 {d['bpe_sha256'][:12]}..., {bpe_model} has "
                         f"{want[:12]}...); rebuild the graphs with run.sh stage 3")
    try:
        fsa = k2.Fsa.from_dict(d["fsa"])
    except Exception as exc:
        raise ValueError(f"{path}: the {kind} graph is corrupt ({type(exc).__name__}: {exc})") from None
    return fsa.to(device) if device is not None else fsa


def check_openfst_graph(path: Path, bpe_model: Path) -> Path:
    """``path`` (an OpenFst graph of the lang stage, e.g. HLG.fst) after checking that the graphs.json next to it
    records ``bpe_model``'s hash (an OpenFst file cannot hold it) and that OpenFst can read it (sherpa-onnx would end
    the process on a bad file). FileNotFoundError / ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such graph; run the lang stage (run.sh stage 3) with k2 installed")
    manifest = path.parent / GRAPHS_JSON
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot tell which BPE model it was built for ({manifest}: "
                         f"{type(exc).__name__}: {exc})") from None
    want = file_sha256(bpe_model)
    if path.name not in info.get("openfst_graphs", []) or info.get("bpe_sha256") != want:
        raise ValueError(f"{path}: not built for {bpe_model} (sha256 {want[:12]}...; {manifest} records "
                         f"{str(info.get('bpe_sha256'))[:12]}... for {info.get('openfst_graphs', [])}); "
                         f"rebuild the graphs with run.sh stage 3")
    import kaldifst

    if kaldifst.StdVectorFst.read(str(path)) is None:  # kaldifst returns None (and logs) for a corrupt file
        raise ValueError(f"{path}: not a readable OpenFst graph (corrupt or truncated); rebuild it with run.sh stage 3")
    return path


def fsa_to_openfst_text(fsa, ilabel_offset: int = 0) -> str:
    """OpenFst text (tropical costs = -scores) of a k2 FSA or FST.

    k2's final arcs (label -1, into the one final state) become final weights of their source states. An arc whose
    ragged aux label holds several words outputs the first one and the rest on a chain of epsilon-input arcs.
    ``ilabel_offset`` 1 shifts the input labels so that 0 is free for epsilon (sherpa-onnx's CTC graphs: input
    label = token id + 1).
    """
    import k2

    arcs = fsa.arcs.values()[:, :3].tolist()
    scores = fsa.scores.tolist()
    aux = getattr(fsa, "aux_labels", None)
    if aux is None:
        words: List[List[int]] = [[a[2]] for a in arcs]
    elif isinstance(aux, k2.RaggedTensor):
        words = aux.tolist()
    else:
        words = [[w] for w in aux.tolist()]
    num_states = fsa.shape[0]
    next_state = num_states
    lines: List[str] = []
    finals: Dict[int, float] = {}
    for (src, dst, label), score, ws in zip(arcs, scores, words):
        if label == -1:
            finals[src] = min(finals.get(src, float("inf")), -score)
            continue
        ws = [w for w in ws if w > 0] or [0]
        hops = [(label + ilabel_offset, ws[0])] + [(0, w) for w in ws[1:]]
        cur = src
        for k, (il, ol) in enumerate(hops):
            nxt = dst if k == len(hops) - 1 else next_state
            if nxt == next_state:
                next_state += 1
            lines.append(f"{cur} {nxt} {il} {ol} {-score if k == 0 else 0.0}")
            cur = nxt
    lines += [f"{s} {w}" for s, w in sorted(finals.items())]
    return "\n".join(lines) + "\n"


def write_openfst(text: str, path: Path) -> None:
    """Compile OpenFst text with kaldifst and write the binary FST."""
    import kaldifst

    fst = kaldifst.compile(s=text, acceptor=False)
    fst.write(str(path))


def write_manifest(lang_dir: Path, info: dict) -> None:
    (Path(lang_dir) / GRAPHS_JSON).write_text(json.dumps(info, indent=2) + "\n")
    logging.info(f"graphs: {json.dumps(info)}")
