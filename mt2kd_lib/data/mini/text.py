"""A fixed, seeded sentence grammar: the ASR transcripts of egs/mini.

Dev/test sentences are held out (never generated for training) so WER measures generalisation to new word
sequences spoken by new speakers, not memorisation.
"""

from typing import List, Set

import numpy as np

DETERMINERS = "the a this that every some one two three".split()
ADJECTIVES = (
    "red green blue yellow black white small large quick slow bright dark old young happy quiet loud warm cold "
    "heavy light gentle strong clever brave soft sharp sweet"
).split()
NOUNS = (
    "dog cat bird horse river mountain garden window table chair teacher doctor farmer child city village "
    "boat train letter story song apple bread house road forest island kitchen market morning evening winter "
    "summer friend brother sister engine bottle paper stone flower"
).split()
VERBS = (
    "sees finds likes carries follows watches paints builds opens closes moves reads writes brings takes "
    "helps visits counts cleans pushes pulls"
).split()
ADVERBS = "slowly quickly often never always gladly quietly early late today again".split()
PREPOSITIONS = "near under over behind beside across inside around".split()

VOCABULARY = sorted(set(DETERMINERS + ADJECTIVES + NOUNS + VERBS + ADVERBS + PREPOSITIONS + ["and", "then"]))


def _noun_phrase(rng: np.random.Generator) -> List[str]:
    words = [str(rng.choice(DETERMINERS))]
    if rng.random() < 0.6:
        words.append(str(rng.choice(ADJECTIVES)))
    words.append(str(rng.choice(NOUNS)))
    return words


def _clause(rng: np.random.Generator) -> List[str]:
    words = _noun_phrase(rng) + [str(rng.choice(VERBS))] + _noun_phrase(rng)
    if rng.random() < 0.4:
        words += [str(rng.choice(PREPOSITIONS))] + _noun_phrase(rng)
    if rng.random() < 0.3:
        words.append(str(rng.choice(ADVERBS)))
    return words


def sentence(rng: np.random.Generator, min_words: int, max_words: int) -> str:
    """One sentence (lower case) of min_words..max_words words."""
    while True:
        words = _clause(rng)
        if len(words) < min_words and rng.random() < 0.7:
            words += [str(rng.choice(["and", "then"]))] + _clause(rng)
        if min_words <= len(words) <= max_words:
            return " ".join(words)


def sentences(rng: np.random.Generator, n: int, min_words: int, max_words: int, exclude: Set[str]) -> List[str]:
    """``n`` sentences, none of them in ``exclude`` (used to hold out dev/test sentences)."""
    out = []
    for _ in range(100 * n + 1000):
        if len(out) == n:
            return out
        s = sentence(rng, min_words, max_words)
        if s not in exclude:
            out.append(s)
    raise RuntimeError(f"could not draw {n} sentences outside the {len(exclude)} excluded ones")
