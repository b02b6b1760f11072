"""icefall-format ASR result files: recogs-*.txt, errs-*.txt and wer-summary-*.txt.

``results`` are ``(cut_id, ref_words, hyp_words)`` triples; alignment uses kaldialign.
"""

import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import kaldialign

ERR = "*"  # epsilon symbol in alignments

Result = Tuple[str, List[str], List[str]]


def _check_results(results: Sequence[Result]) -> None:
    """Raise ValueError naming the first malformed entry (word lists given as strings are a classic bug)."""
    for k, item in enumerate(results):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"asr results: entry {k} must be (cut_id, ref_words, hyp_words), got {item!r}")
        cut_id, ref, hyp = item
        for name, words in (("ref", ref), ("hyp", hyp)):
            if isinstance(words, str) or not all(isinstance(w, str) for w in words):
                raise ValueError(f"asr results: {name} of cut {cut_id!r} must be a list of word strings, got {words!r}")
            if ERR in words:
                raise ValueError(f"asr results: {name} of cut {cut_id!r} contains the reserved word {ERR!r}")


def compute_wer(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> Tuple[float, int, int, int, int]:
    """Corpus WER of word lists: ``(wer_percent, insertions, deletions, substitutions, n_ref_words)``."""
    if len(refs) != len(hyps):
        raise ValueError(f"compute_wer: {len(refs)} references but {len(hyps)} hypotheses")
    ins = dels = subs = n_ref = 0
    for k, (ref, hyp) in enumerate(zip(refs, hyps)):
        if isinstance(ref, str) or isinstance(hyp, str):
            raise ValueError(f"compute_wer: item {k} must be lists of words, got a string")
        n_ref += len(ref)
        for r, h in kaldialign.align(list(ref), list(hyp), ERR):
            if r == ERR:
                ins += 1
            elif h == ERR:
                dels += 1
            elif r != h:
                subs += 1
    if n_ref == 0:
        raise ValueError("compute_wer: the references contain no words; WER is undefined")
    return 100.0 * (ins + dels + subs) / n_ref, ins, dels, subs, n_ref


def _merged_alignment(ref: List[str], hyp: List[str]) -> str:
    """One line like icefall's PER-UTT DETAILS: successive errors merged, e.g. ``a (b c->x) d``."""
    ali = [[[r], [h]] for r, h in kaldialign.align(ref, hyp, ERR)]
    for i in range(len(ali) - 1):
        if ali[i][0] != ali[i][1] and ali[i + 1][0] != ali[i + 1][1]:
            ali[i + 1] = [ali[i][0] + ali[i + 1][0], ali[i][1] + ali[i + 1][1]]
            ali[i] = [[], []]
    parts = []
    for r_words, h_words in ali:
        r_words = [w for w in r_words if w != ERR]
        h_words = [w for w in h_words if w != ERR]
        if not r_words and not h_words:
            continue
        r = " ".join(r_words) if r_words else ERR
        h = " ".join(h_words) if h_words else ERR
        parts.append(r if r == h else f"({r}->{h})")
    return " ".join(parts)


def write_error_stats(f, test_set_name: str, results: Sequence[Result]) -> float:
    """Write the icefall errs-file body to the open text file ``f``; return WER in percent."""
    subs: Dict[Tuple[str, str], int] = defaultdict(int)
    ins: Dict[str, int] = defaultdict(int)
    dels: Dict[str, int] = defaultdict(int)
    words: Dict[str, List[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])  # corr, ref_sub, hyp_sub, ins, del
    num_corr = 0
    for _, ref, hyp in results:
        for r, h in kaldialign.align(list(ref), list(hyp), ERR):
            if r == ERR:
                ins[h] += 1
                words[h][3] += 1
            elif h == ERR:
                dels[r] += 1
                words[r][4] += 1
            elif r != h:
                subs[(r, h)] += 1
                words[r][1] += 1
                words[h][2] += 1
            else:
                words[r][0] += 1
                num_corr += 1
    ref_len = sum(len(r) for _, r, _ in results)
    if ref_len == 0:
        raise ValueError(f"write_error_stats: {test_set_name}: the references contain no words")
    n_sub, n_ins, n_del = sum(subs.values()), sum(ins.values()), sum(dels.values())
    tot = n_sub + n_ins + n_del
    wer = 100.0 * tot / ref_len
    logging.info(
        f"[{test_set_name}] %WER {wer:.2f}% [{tot} / {ref_len}, {n_ins} ins, {n_del} del, {n_sub} sub ]"
    )
    print(f"%WER = {wer:.2f}", file=f)
    print(
        f"Errors: {n_ins} insertions, {n_del} deletions, {n_sub} substitutions, "
        f"over {ref_len} reference words ({num_corr} correct)",
        file=f,
    )
    print(
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, "
        "INSERTIONS:, PER-WORD STATS:",
        file=f,
    )
    print("", file=f)
    print("PER-UTT DETAILS: corr or (ref->hyp)  ", file=f)
    for cut_id, ref, hyp in results:
        print(f"{cut_id}:\t{_merged_alignment(list(ref), list(hyp))}", file=f)
    print("", file=f)
    print("SUBSTITUTIONS: count ref -> hyp", file=f)
    for count, (r, h) in sorted(((v, k) for k, v in subs.items()), reverse=True):
        print(f"{count}   {r} -> {h}", file=f)
    print("", file=f)
    print("DELETIONS: count ref", file=f)
    for count, r in sorted(((v, k) for k, v in dels.items()), reverse=True):
        print(f"{count}   {r}", file=f)
    print("", file=f)
    print("INSERTIONS: count hyp", file=f)
    for count, h in sorted(((v, k) for k, v in ins.items()), reverse=True):
        print(f"{count}   {h}", file=f)
    print("", file=f)
    print("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp", file=f)
    for _, word, (corr, ref_sub, hyp_sub, w_ins, w_del) in sorted(
        ((sum(v[1:]), k, v) for k, v in words.items()), reverse=True
    ):
        print(f"{word}   {corr} {ref_sub + hyp_sub + w_ins + w_del} {corr + ref_sub + w_del} {corr + hyp_sub + w_ins}", file=f)
    return wer


def _read_summary(path: Path) -> Dict[str, float]:
    """Rows of an existing ``settings\\tWER`` table (header skipped)."""
    rows: Dict[str, float] = {}
    for n, line in enumerate(path.read_text().splitlines()):
        if n == 0 or not line.strip():
            continue
        key, sep, val = line.rpartition("\t")
        if not sep:
            raise ValueError(f"{path}: line {n + 1} is not 'settings<TAB>WER': {line!r}")
        try:
            rows[key] = float(val)
        except ValueError:
            raise ValueError(f"{path}: line {n + 1} has a non-numeric WER: {line!r}") from None
    return rows


def write_asr_results(
    res_dir: Union[str, Path], test_set_name: str, key: str, results: List[Result]
) -> float:
    """Write recogs/errs files for one decoding setting and merge its WER into the summary table.

    Files (in ``res_dir``): ``recogs-{test_set_name}-{key}.txt``, ``errs-{test_set_name}-{key}.txt``
    and ``wer-summary-{test_set_name}.txt`` (rows of other settings are kept; best WER first).
    Returns the WER in percent.
    """
    if not results:
        raise ValueError(f"write_asr_results: no results for {test_set_name}/{key}")
    if "\t" in key or "\n" in key:
        raise ValueError(f"write_asr_results: key {key!r} must not contain tabs/newlines")
    _check_results(results)
    res_dir = Path(res_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r[0])  # icefall sorts by cut id

    with open(res_dir / f"recogs-{test_set_name}-{key}.txt", "w", encoding="utf-8") as f:
        for cut_id, ref, hyp in results:
            print(f"{cut_id}:\tref={list(ref)}", file=f)
            print(f"{cut_id}:\thyp={list(hyp)}", file=f)
    with open(res_dir / f"errs-{test_set_name}-{key}.txt", "w", encoding="utf-8") as f:
        wer = write_error_stats(f, f"{test_set_name}-{key}", results)

    summary = res_dir / f"wer-summary-{test_set_name}.txt"
    rows = _read_summary(summary) if summary.exists() else {}
    rows[key] = round(wer, 2)
    with open(summary, "w", encoding="utf-8") as f:
        print("settings\tWER", file=f)
        for k, v in sorted(rows.items(), key=lambda kv: (kv[1], kv[0])):
            print(f"{k}\t{v}", file=f)
    return wer
