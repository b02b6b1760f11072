"""Word lexicon spelled by the BPE model (icefall's lang_bpe layout: words.txt, lexicon.txt, L / L_disambig).

Tokens keep their BPE ids (``<blk>`` = 0 never appears in the lexicon); the disambiguation tokens #0, #1, ... get
the ids after the BPE vocabulary, so the BPE ``tokens.txt`` used by training is left as it is. The lexicon FST is
built here as a plain list of arcs so that k2 (:mod:`mt2kd_lib.lang.graphs`) and OpenFst both read the same one.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import sentencepiece as spm

EPS = "<eps>"
BOS, EOS = "<s>", "</s>"

# (src, dst, token id, word id, score); a final arc has token and word -1 and goes to the last state.
Arc = Tuple[int, int, int, int, float]


@dataclass
class Lexicon:
    """Words with their BPE spellings, plus the symbol tables the graphs are built with."""

    entries: List[Tuple[str, List[str]]]  # (word, BPE pieces), one spelling per word
    token2id: Dict[str, int]  # BPE pieces and the disambiguation tokens #0, #1, ...
    word2id: Dict[str, int] = field(default_factory=dict)  # <eps> 0, the words, #0, <s>, </s>
    disambig: List[str] = field(default_factory=list)  # per entry: "" or the #k appended in L_disambig

    @property
    def first_token_disambig_id(self) -> int:
        return self.token2id["#0"]

    @property
    def first_word_disambig_id(self) -> int:
        return self.word2id["#0"]


def transcript_words(transcripts: Iterable[str]) -> List[str]:
    """The sorted distinct words of ``transcripts`` (whitespace-separated)."""
    return sorted({w for t in transcripts for w in t.split()})


def spell(sp: spm.SentencePieceProcessor, word: str, source: str) -> List[str]:
    """BPE pieces of ``word``; ValueError naming ``source`` when the BPE model cannot spell it (an <unk> piece)."""
    ids = sp.encode(word, out_type=int)
    if not ids or sp.unk_id() in ids:
        raise ValueError(f"{source}: the BPE model cannot spell the word {word!r} (it maps to <unk>); "
                         "the lexicon and LM must only use words of the BPE training transcripts")
    return [sp.id_to_piece(i) for i in ids]


def build_lexicon(words: Sequence[str], sp: spm.SentencePieceProcessor, source: str) -> Lexicon:
    """Lexicon of ``words`` spelled by ``sp``, with disambiguation symbols and symbol tables (``source`` names where
    the words came from, for errors)."""
    reserved = {EPS, BOS, EOS, "#0"}
    bad = [w for w in words if w in reserved or w.startswith("#")]
    if bad:
        raise ValueError(f"{source}: reserved word(s) {bad[:5]} in the word list")
    entries = [(w, spell(sp, w, source)) for w in words]
    return _with_tables(entries, sp)


def _with_tables(entries: List[Tuple[str, List[str]]], sp: spm.SentencePieceProcessor) -> Lexicon:
    # Disambiguation (as Kaldi's add_lex_disambig.pl): a spelling that is shared by several words, or that is a
    # proper prefix of another word's spelling, gets #1, #2, ... so that L_disambig is determinizable.
    count = Counter(tuple(p) for _, p in entries)
    prefixes = {tuple(p[:i]) for _, p in entries for i in range(1, len(p))}
    last: Dict[Tuple[str, ...], int] = {}
    disambig = []
    for _, pieces in entries:
        key = tuple(pieces)
        if count[key] == 1 and key not in prefixes:
            disambig.append("")
        else:
            last[key] = last.get(key, 0) + 1
            disambig.append(f"#{last[key]}")
    n_disambig = max(last.values(), default=0)
    vocab = sp.get_piece_size()
    token2id = {sp.id_to_piece(i): i for i in range(vocab)}
    token2id.update({f"#{k}": vocab + k for k in range(n_disambig + 1)})
    word2id = {EPS: 0}
    for w, _ in entries:
        word2id[w] = len(word2id)
    for s in ("#0", BOS, EOS):
        word2id[s] = len(word2id)
    return Lexicon(entries, token2id, word2id, disambig)


def write_lexicon(lex: Lexicon, lang_dir: Path) -> None:
    """lexicon.txt, lexicon_disambig.txt, words.txt and tokens_disambig.txt (BPE tokens + #k) into ``lang_dir``."""
    lang_dir = Path(lang_dir)
    with open(lang_dir / "lexicon.txt", "w", encoding="utf-8") as f, \
            open(lang_dir / "lexicon_disambig.txt", "w", encoding="utf-8") as fd:
        for (w, pieces), d in zip(lex.entries, lex.disambig):
            f.write(f"{w} {' '.join(pieces)}\n")
            fd.write(f"{w} {' '.join(pieces + ([d] if d else []))}\n")
    _write_table(lex.word2id, lang_dir / "words.txt")
    _write_table(lex.token2id, lang_dir / "tokens_disambig.txt")


def _write_table(table: Dict[str, int], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for sym, i in sorted(table.items(), key=lambda kv: kv[1]):
            f.write(f"{sym} {i}\n")


def read_symbol_table(path: Path) -> Dict[str, int]:
    """``symbol id`` lines; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such symbol table; run the lang stage (run.sh stage 3) first")
    table: Dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}: line {n} is not 'symbol id': {line!r}")
        table[parts[0]] = int(parts[1])
    return table


def read_lexicon(path: Path, sp: spm.SentencePieceProcessor) -> Lexicon:
    """A ``word piece piece ...`` lexicon.txt; every piece must be one of ``sp``'s and every word spellable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lexicon")
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{path}: line {n} has a word without a spelling: {line!r}")
        unknown = [p for p in parts[1:] if sp.piece_to_id(p) == sp.unk_id()]  # unknown pieces map to <unk>
        if unknown:
            raise ValueError(f"{path}: line {n}: the BPE model cannot spell the word {parts[0]!r} "
                             f"(pieces {unknown} are <unk> or not in its vocabulary)")
        entries.append((parts[0], parts[1:]))
    return _with_tables(entries, sp)


def lexicon_arcs(lex: Lexicon, disambig: bool) -> Tuple[List[Arc], int]:
    """Arcs of L (``disambig`` False) or L_disambig, and the number of states (the last one is final).

    One loop state 0: each word is a chain 0 -> ... -> 0 that reads its pieces and outputs the word on the first
    arc. L_disambig also reads the word's #k at the end of the chain and has a ``#0:#0`` self-loop on state 0,
    which lets G's back-off arcs (labelled #0) through the composition.
    """
    arcs: List[Arc] = []
    next_state = 1
    for (word, pieces), d in zip(lex.entries, lex.disambig):
        labels = [lex.token2id[p] for p in pieces] + ([lex.token2id[d]] if disambig and d else [])
        src = 0
        for k, tok in enumerate(labels):
            dst = 0 if k == len(labels) - 1 else next_state
            if dst:
                next_state += 1
            arcs.append((src, dst, tok, lex.word2id[word] if k == 0 else 0, 0.0))
            src = dst
    if disambig:
        arcs.append((0, 0, lex.first_token_disambig_id, lex.first_word_disambig_id, 0.0))
    final = next_state
    arcs.append((0, final, -1, -1, 0.0))
    arcs.sort(key=lambda a: a[0])  # k2 wants arcs grouped by source state
    return arcs, final + 1
