#!/usr/bin/env bash
# Installs k2 (the FSA library behind fast_beam_search, LG/HLG decoding and k2's pruned RNN-T loss) into a venv.
#
#   bash tools/install_k2.sh --venv DIR [--cache DIR] [--k2-source PATH]
#
# Order: (a) a local k2 source (a tarball or a folder; --k2-source or $MT2KD_K2_SOURCE) built CPU-only into a wheel
# that is cached in $cache/wheels (the first build takes 10-20 min on 2 cores, later installs take seconds);
# (b) k2's published wheel for the installed torch from k2's own wheel index; (c) one line saying k2 is not there
# and what that costs. Never fails the install: everything in mt2kd except the FSA decoding methods works without k2.
# Called by tools/install.sh; can be run on its own.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MT2KD_VENV:-$repo/.venv}
cache=${MT2KD_CACHE:-$HOME/.cache/mt2kd}
k2_source=${MT2KD_K2_SOURCE:-}
pybind11_version=3.0.1
k2_index=https://k2-fsa.github.io/k2/cpu.html

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --k2-source) k2_source=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install_k2.sh: unknown option $1" >&2; exit 1 ;;
  esac
done

say() { echo "[install $(date '+%H:%M:%S')] $*"; }
py=$venv/bin/python
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }
lost="k2 is not available: the FSA decoding methods (fast_beam_search*, ctc HLG 1-best) are reported as 'needs k2' and the pruned RNN-T loss uses fast_rnnt"

if "$py" -c "import k2" >/dev/null 2>&1; then say "k2 already installed"; exit 0; fi

# k2 is built and picked for the installed torch (its wheels pin it): without torch there is nothing to match.
if ! torch_version=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null); then
  say "WARNING: $venv has no Python with torch; install torch first (tools/install.sh does). $lost"; exit 0
fi
pytag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
mkdir -p "$cache/wheels" "$cache/src"

# A wheel built here before for this torch and Python (k2's wheels pin torch==<the version they were built with>).
cached_wheel() { ls "$cache/wheels/k2-"*"+cpu.torch$torch_version-$pytag-"*.whl 2>/dev/null | head -1; }

pybind11_src() {  # pybind11 from its PyPI sdist, so that k2's cmake does not download it
  local dir=$cache/src/pybind11-$pybind11_version
  if [ ! -f "$dir/CMakeLists.txt" ]; then
    pip download --no-deps --no-binary pybind11 -d "$cache/src" "pybind11==$pybind11_version" >&2 || return 1
    tar -xzf "$cache/src/pybind11-$pybind11_version.tar.gz" -C "$cache/src" || return 1
  fi
  echo "$dir"
}

# The two fixes the pinned source needs to build here (see shared/deps/README.md):
#  1. k2/CMakeLists.txt builds the C++ programs under k2/torch whenever PyTorch is used, and that part downloads
#     kaldifeat at configure time; Python k2 does not need them, so they are put behind an option, off by default.
#  2. with pybind11 3.x the Ragged pickle lambda returns two different tuple types; declare it as py::tuple.
patch_k2_source() {
  local src=$1
  if ! grep -q K2_BUILD_TORCH_PROGRAMS "$src/k2/CMakeLists.txt"; then
    sed -i 's/^if(K2_USE_PYTORCH)$/option(K2_BUILD_TORCH_PROGRAMS "Build the C++ programs in k2\/torch (downloads kaldifeat)" OFF)\nif(K2_USE_PYTORCH AND K2_BUILD_TORCH_PROGRAMS)/' \
      "$src/k2/CMakeLists.txt"
  fi
  sed -i 's/\[\](const PyClass &obj) {$/[](const PyClass \&obj) -> py::tuple {/' "$src/k2/python/csrc/torch/ragged.cu"
  grep -q K2_BUILD_TORCH_PROGRAMS "$src/k2/CMakeLists.txt" \
    && grep -q 'const PyClass &obj) -> py::tuple' "$src/k2/python/csrc/torch/ragged.cu"
}

build_from_source() {  # $1: tarball or folder; leaves the wheel in $cache/wheels
  local src=$1 work pb whl
  work=$(mktemp -d "${TMPDIR:-/tmp}/mt2kd-k2-build.XXXXXX")
  if [ -d "$src" ]; then
    cp -r "$src" "$work/k2"
  else
    mkdir "$work/k2" && tar -xzf "$src" -C "$work/k2" --strip-components=1 || { rm -rf "$work"; return 1; }
  fi
  if ! patch_k2_source "$work/k2"; then
    say "WARNING: could not apply the build fixes to $src (an unexpected k2 version?)"; rm -rf "$work"; return 1
  fi
  pb=$(pybind11_src) || { say "WARNING: no pybind11 $pybind11_version source for the k2 build"; rm -rf "$work"; return 1; }
  say "building k2 from $src (CPU-only, ${K2_MAKE_ARGS:--j2}; 10-20 min the first time, log: $work/build.log)"
  local t0=$SECONDS
  if ! (cd "$work/k2" && \
        K2_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DK2_WITH_CUDA=OFF -DPYTHON_EXECUTABLE=$py -DFETCHCONTENT_SOURCE_DIR_PYBIND11=$pb -DFETCHCONTENT_FULLY_DISCONNECTED=ON" \
        K2_MAKE_ARGS=${K2_MAKE_ARGS:--j2} \
        nice -n 10 "$py" setup.py bdist_wheel >"$work/build.log" 2>&1); then
    say "WARNING: the k2 build failed; the last lines of $work/build.log:"; tail -n 15 "$work/build.log" >&2
    return 1
  fi
  whl=$(ls "$work/k2/dist/"k2-*.whl | head -1)
  cp "$whl" "$cache/wheels/"
  say "built $(basename "$whl") in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
  rm -rf "$work"
}

install_wheel() {  # k2's wheel declares torch==X and graphviz; torch is already there, graphviz is light
  pip install --no-deps "$1" && pip install graphviz
}

whl=$(cached_wheel)
if [ -z "$whl" ] && [ -n "$k2_source" ]; then
  if [ -e "$k2_source" ]; then
    build_from_source "$k2_source" && whl=$(cached_wheel)
  else
    say "WARNING: k2 source $k2_source does not exist"
  fi
fi
if [ -n "$whl" ]; then
  if install_wheel "$whl" && "$py" -c "import k2" >/dev/null 2>&1; then say "installed k2 from $(basename "$whl")"; exit 0; fi
  say "WARNING: $(basename "$whl") does not install or import"
fi
# k2's own wheel index: its wheels are named k2-<version>+cpu.torch<torch version>. --no-deps so that a wheel for
# another torch cannot replace ours; one that does not import against our torch is removed. Offline: fails quietly.
if timeout 120 "$py" -m pip --disable-pip-version-check -q install --no-deps --only-binary k2 -f "$k2_index" \
     "k2>=1.24" >/dev/null 2>&1; then
  if "$py" -c "import k2" >/dev/null 2>&1 && pip install graphviz >/dev/null 2>&1; then
    say "installed k2 from k2's wheel index"; exit 0
  fi
  pip uninstall -y k2 >/dev/null 2>&1
fi
say "$lost (pass --k2-source PATH or set MT2KD_K2_SOURCE to a k2 source to build it)"
exit 0
