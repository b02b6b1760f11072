#!/usr/bin/env bash
# Stage 1 of egs/librispeech_audioset_voxceleb: write the manifest contract for the paper's corpora.
#
#   bash egs/librispeech_audioset_voxceleb/prepare.sh --manifest-dir data/librispeech_audioset_voxceleb/manifests --nj 8
#
# Corpus folders and split options come from config.sh next to this script (override them via the environment).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
manifest_dir=
nj=4
while [ $# -gt 0 ]; do
  case "$1" in
    --manifest-dir) manifest_dir=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "prepare.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
[ -n "$manifest_dir" ] || { echo "prepare.sh: --manifest-dir is required" >&2; exit 1; }

recipe=${recipe:-$here}  # config.sh names files relative to the recipe (run.sh sets it; standalone: this folder)
# shellcheck source=config.sh
. "$here/config.sh"
for b in voxceleb1_dev_in_train download_corpora; do  # booleans: true or false, nothing else
  case "${!b}" in true|false) ;; *) echo "prepare.sh: $b must be true or false, got '${!b}'" >&2; exit 1 ;; esac
done
python=${MT2KD_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

args=(--manifest-dir "$manifest_dir" --num-jobs "$nj" --sv-trials "$sv_trials"
      --librispeech-train-parts "$librispeech_train_parts" --librispeech-dev-parts "$librispeech_dev_parts"
      --librispeech-test-parts "$librispeech_test_parts" --audioset-train-parts "$audioset_train_parts"
      --audioset-eval-parts "$audioset_eval_parts" --voxceleb1-parts "$voxceleb1_parts"
      --voxceleb2-parts "$voxceleb2_parts" --musan-parts "$musan_parts")
given=0
add_dir() {  # add_dir <option> <folder>: pass a corpus folder only when it exists (or will be downloaded)
  if [ -n "$2" ] && { [ -d "$2" ] || [ "$download_corpora" = true ]; }; then
    args+=("$1" "$2"); given=$((given + 1))
  elif [ -n "$2" ]; then
    echo "prepare.sh: $2 not found; leaving out ${1#--}" >&2
  fi
}
add_dir --librispeech-dir "$librispeech_dir"
add_dir --voxceleb1-dir "$voxceleb1_dir"
add_dir --voxceleb2-dir "$voxceleb2_dir"
add_dir --musan-dir "$musan_dir"
if [ -n "$audioset_dir" ] && [ -d "$audioset_dir" ]; then
  args+=(--audioset-dir "$audioset_dir"); given=$((given + 1))
  [ -z "$audioset_audio_dir" ] || args+=(--audioset-audio-dir "$audioset_audio_dir")
else
  echo "prepare.sh: ${audioset_dir:-audioset_dir (unset)} not found; leaving out AudioSet (no download recipe)" >&2
fi
[ -z "$voxceleb_trials_dir" ] || args+=(--voxceleb-trials-dir "$voxceleb_trials_dir")
[ "$voxceleb1_dev_in_train" != true ] || args+=(--voxceleb1-dev-in-train)
[ "$download_corpora" != true ] || args+=(--download)

if [ "$given" -eq 0 ]; then
  echo "prepare.sh: no corpus folder found; set librispeech_dir, audioset_dir, voxceleb1_dir, voxceleb2_dir or" \
       "musan_dir in $here/config.sh (or the environment), or download_corpora=true" >&2
  exit 1
fi
# No mkdir here: the CLI checks the selected parts first and creates the folder only when everything succeeded.
"$python" "$repo/local/prepare_librispeech_audioset_voxceleb.py" "${args[@]}"
