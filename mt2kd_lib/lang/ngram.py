"""Word n-gram LM with interpolated Kneser-Ney smoothing, estimated from transcripts and written as ARPA.

One absolute discount per order, D = n1 / (n1 + 2 n2) (Ney's estimate from the counts of n-grams seen once and
twice). The highest order uses raw counts, lower orders continuation counts (how many distinct words precede the
n-gram) except for n-grams that start with <s>, which nothing can precede. The unigram distribution is interpolated
with a uniform one, so every word has a non-zero probability. With interpolation, the ARPA back-off weight of a
context h is exactly the mass the discounts freed: D * N1+(h .) / c(h).
"""

import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

BOS, EOS = "<s>", "</s>"
Gram = Tuple[str, ...]


def _discount(counts: Dict[Gram, float]) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0:
        return 0.5
    d = n1 / (n1 + 2 * n2)
    return min(max(d, 0.1), 0.9)  # tiny corpora give n2 = 0, i.e. D = 1: keep some mass on the seen words


def estimate_kneser_ney(sentences: Iterable[Sequence[str]], order: int = 3) -> Dict[int, Dict[Gram, Tuple[float, float]]]:
    """``{n: {ngram: (log10 prob, log10 back-off)}}`` for n = 1..order (back-off 0.0 where it does not apply)."""
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    raw: Dict[int, Dict[Gram, float]] = {n: defaultdict(float) for n in range(1, order + 1)}
    n_sent = 0
    for words in sentences:
        toks = [BOS, *words, EOS]
        n_sent += 1
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i:i + n])
                if gram == (BOS,):
                    continue
                raw[n][gram] += 1
    if n_sent == 0 or not raw[1]:
        raise ValueError("n-gram LM: no training sentences")

    # Counts used per order: raw at the top (and for <s>-initial grams), continuation counts below.
    counts: Dict[int, Dict[Gram, float]] = {order: dict(raw[order])}
    for n in range(order - 1, 0, -1):
        cont: Dict[Gram, float] = defaultdict(float)
        for gram in raw[n + 1]:
            cont[gram[1:]] += 1
        counts[n] = {g: (raw[n][g] if g[0] == BOS else cont.get(g, raw[n][g])) for g in raw[n]}

    vocab = sorted({g[0] for g in counts[1]})  # every word and </s>; <s> is never predicted
    probs: Dict[int, Dict[Gram, float]] = {}
    gammas: Dict[int, Dict[Gram, float]] = {}
    for n in range(1, order + 1):
        d = _discount(counts[n])
        ctx_total: Dict[Gram, float] = defaultdict(float)
        ctx_types: Dict[Gram, int] = defaultdict(int)
        for gram, c in counts[n].items():
            ctx_total[gram[:-1]] += c
            ctx_types[gram[:-1]] += 1
        gammas[n - 1] = {h: d * ctx_types[h] / ctx_total[h] for h in ctx_total}
        probs[n] = {}
        for gram, c in counts[n].items():
            h = gram[:-1]
            lower = 1.0 / len(vocab) if n == 1 else _interp(probs, gammas, gram[1:])
            probs[n][gram] = max(c - d, 0.0) / ctx_total[h] + gammas[n - 1][h] * lower

    out: Dict[int, Dict[Gram, Tuple[float, float]]] = {}
    for n in range(1, order + 1):
        out[n] = {}
        for gram, p in sorted(probs[n].items()):
            bow = gammas.get(n, {}).get(gram)
            out[n][gram] = (math.log10(p), math.log10(bow) if bow else 0.0)
    # <s> is a context, never a predicted word: ARPA gives it a dummy probability and its back-off weight.
    out[1][(BOS,)] = (-99.0, math.log10(gammas[1][(BOS,)]) if order > 1 and (BOS,) in gammas.get(1, {}) else 0.0)
    return out


def _interp(probs, gammas, gram: Gram) -> float:
    """Interpolated probability of ``gram`` from the orders below, backing off through unseen contexts."""
    n = len(gram)
    if gram in probs[n]:
        return probs[n][gram]
    if n == 1:
        raise KeyError(gram)  # cannot happen: every word of a higher-order gram is also a unigram
    gamma = gammas[n - 1].get(gram[:-1], 1.0)  # an unseen context passes all mass down
    return gamma * _interp(probs, gammas, gram[1:])


def write_arpa(model: Dict[int, Dict[Gram, Tuple[float, float]]], path: Path) -> None:
    """The ARPA text format (``\\data\\``, one ``\\n-grams:`` section per order, ``\\end\\``)."""
    order = max(model)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n in range(1, order + 1):
            f.write(f"ngram {n}={len(model[n])}\n")
        for n in range(1, order + 1):
            f.write(f"\n\\{n}-grams:\n")
            for gram, (lp, bow) in sorted(model[n].items()):
                if n < order and bow != 0.0:
                    f.write(f"{lp:.6f}\t{' '.join(gram)}\t{bow:.6f}\n")
                else:
                    f.write(f"{lp:.6f}\t{' '.join(gram)}\n")
        f.write("\n\\end\\\n")


def arpa_words(path: Path) -> List[str]:
    """The unigram words of an ARPA file (without <s> and </s>); ValueError naming the file when it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ARPA file")
    words, section = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line.startswith("\\"):
            section = line
            continue
        if section == "\\1-grams:" and line:
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"{path}: line {n} is not a unigram entry: {line!r}")
            if parts[1] not in (BOS, EOS):
                words.append(parts[1])
    if not words:
        raise ValueError(f"{path}: no \\1-grams: section with words; not an ARPA LM")
    return words


def train_arpa(transcripts: Iterable[str], path: Path, order: int = 3) -> Path:
    """Estimate the Kneser-Ney LM of ``transcripts`` and write it to ``path``; returns ``path``."""
    model = estimate_kneser_ney((t.split() for t in transcripts), order)
    write_arpa(model, Path(path))
    return Path(path)
