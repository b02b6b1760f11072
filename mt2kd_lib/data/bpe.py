"""Sentencepiece BPE for the transducer, in icefall's lang_bpe_<N> layout (bpe.model + tokens.txt)."""

import logging
from pathlib import Path
from typing import Iterable, List, Optional

import sentencepiece as spm

# icefall convention: <blk> = 0 (the transducer blank), <sos/eos> = 1, <unk> = 2.
SPECIAL_SYMBOLS = ["<blk>", "<sos/eos>"]


def train_bpe(transcripts: Iterable[str], lang_dir: Path, vocab_size: int, model_type: str = "unigram") -> Path:
    """Train ``lang_dir/bpe.model`` on ``transcripts`` and write ``tokens.txt``; returns the model path.

    With a small corpus the vocabulary may hold fewer pieces than asked; the real size is logged and is what
    tokens.txt (and so every model) uses.
    """
    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    text_file = lang_dir / "transcript_words.txt"
    lines = [t.strip() for t in transcripts]
    empty = sum(not t for t in lines)
    if empty:
        raise ValueError(f"{empty} empty transcripts given to BPE training; the prepare stage should drop them")
    text_file.write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(lang_dir / "bpe"),
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=1.0,
        input_sentence_size=100_000_000,
        user_defined_symbols=SPECIAL_SYMBOLS,
        unk_id=2,
        bos_id=-1,
        eos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    model = lang_dir / "bpe.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    write_tokens(sp, lang_dir / "tokens.txt")
    if sp.get_piece_size() != vocab_size:
        logging.warning(f"BPE: asked for {vocab_size} pieces, the corpus supports {sp.get_piece_size()}")
    logging.info(f"BPE model {model}: {sp.get_piece_size()} pieces")
    return model


def write_tokens(sp: spm.SentencePieceProcessor, path: Path) -> None:
    with open(path, "w") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)} {i}\n")


def load_bpe(lang_dir: Path) -> spm.SentencePieceProcessor:
    model = Path(lang_dir) / "bpe.model"
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no BPE model; run the lang stage of run.sh first")
    return spm.SentencePieceProcessor(model_file=str(model))


def encode(sp: spm.SentencePieceProcessor, texts: List[str]) -> List[List[int]]:
    return sp.encode(texts, out_type=int)


def bpe_difference(a: Path, b: Path) -> Optional[str]:
    """None when two sentencepiece models give every token the same id (same pieces in the same order), else a
    sentence naming the first difference. Used before reusing logits / a transducer head trained on another BPE."""
    files = []
    for p in (Path(a), Path(b)):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no BPE model")
        files.append(p.read_bytes())
    if files[0] == files[1]:
        return None
    spa, spb = (spm.SentencePieceProcessor(model_proto=f) for f in files)
    na, nb = spa.get_piece_size(), spb.get_piece_size()
    if na != nb:
        return f"{a} has {na} pieces, {b} has {nb}"
    for i in range(na):
        pa, pb = spa.id_to_piece(i), spb.id_to_piece(i)
        if pa != pb:
            return f"token id {i} is {pa!r} in {a} but {pb!r} in {b}"
    # Same vocabulary: segmentation may still differ (other scores/type), which changes the targets.
    probe = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG ABRACADABRA HELLO WORLD"
    if spa.encode(probe) != spb.encode(probe) or spa.encode(probe.lower()) != spb.encode(probe.lower()):
        return f"{a} and {b} have the same pieces but segment text differently"
    return None
