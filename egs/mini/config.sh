# egs/mini: the synthetic default corpus. Sourced by run.sh; every setting can be overridden from the
# environment or the command line (e.g. `bash run.sh --corpus-config egs/mini/conf/corpus_tiny.yaml`).

# ---- corpus ----
corpus_config=${corpus_config:-$recipe/conf/corpus.yaml}   # sizes and seed of the synthetic corpus
vocab_size=${vocab_size:-256}                              # BPE pieces asked for (the grammar supports fewer)
