"""Lexicon, word n-gram LM and decoding graphs (L, G, LG, HLG) for the FSA decoding methods."""
