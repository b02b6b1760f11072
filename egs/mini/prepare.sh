#!/usr/bin/env bash
# Synthesise the mini corpus and write the manifest contract (see mt2kd_lib/data/contract.py).
#   bash egs/mini/prepare.sh --manifest-dir data/mini/manifests --nj 2 [--corpus-config egs/mini/conf/corpus.yaml]
set -euo pipefail
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifest_dir=
nj=2
corpus_config=${corpus_config:-$recipe/conf/corpus.yaml}
. "$recipe/../../tools/parse_options.sh"
[ -n "$manifest_dir" ] || { echo "$0: --manifest-dir is required" >&2; exit 1; }
# Audio lives next to the manifests: data/<recipe>/audio.
python3 "$recipe/../../local/prepare_mini.py" --config "$corpus_config" --out-dir "$(dirname "$manifest_dir")" --nj "$nj"
