#!/usr/bin/env bash
# Idempotent installer for mt2kd.
#
#   bash tools/install.sh [--venv DIR] [--with-kaldifeat] [--no-apt] [--k2-source PATH] [--no-k2]
#
# Creates a virtualenv (default ./.venv, or $MT2KD_VENV), installs torch (an existing torch is kept),
# requirements.txt, and builds fast_rnnt (and optionally kaldifeat) from their PyPI sdists with a wheel
# cache ($MT2KD_CACHE, default ~/.cache/mt2kd) so that a re-install takes seconds.
# k2 (FSA decoding, k2's pruned RNN-T loss) comes from tools/install_k2.sh: a local source (--k2-source or
# $MT2KD_K2_SOURCE) built into a cached wheel, else k2's published wheel, else one line saying what is lost.
# System packages espeak-ng, sox and flite (used to synthesise egs/mini) and ffmpeg (VoxCeleb2 m4a) come from apt
# when it is usable.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MT2KD_VENV:-$repo/.venv}
cache=${MT2KD_CACHE:-$HOME/.cache/mt2kd}
with_kaldifeat=false
with_k2=true
k2_source=${MT2KD_K2_SOURCE:-}
use_apt=true
torch_spec=${MT2KD_TORCH:-torch==2.13.0}
fast_rnnt_version=1.3
kaldifeat_version=1.24
pybind11_version=3.0.1

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --with-kaldifeat) with_kaldifeat=true; shift ;;
    --no-apt) use_apt=false; shift ;;
    --k2-source) k2_source=$2; shift 2 ;;
    --no-k2) with_k2=false; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 1 ;;
  esac
done

say() { echo "[install $(date '+%H:%M:%S')] $*"; }
did=()

# ---- system packages ---------------------------------------------------------------------------
apt_pkgs=(espeak-ng sox flite ffmpeg)  # ffmpeg: VoxCeleb2 m4a (mt2kd_lib/data/corpora/scan.py)
missing=()
for p in espeak-ng sox flite ffmpeg; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if $use_apt && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "apt-get install ${apt_pkgs[*]} (missing: ${missing[*]})"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
    did+=("apt: ${apt_pkgs[*]}")
  else
    say "WARNING: ${missing[*]} not found and apt-get is not usable here (not root or no apt)."
    say "         Install them with your package manager; egs/mini synthesis needs espeak-ng and sox (flite optional)."
  fi
fi

# ---- virtualenv -------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  python3 -m venv "$venv"
  did+=("venv: $venv")
fi
py=$venv/bin/python
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

if ! "$py" -c "import torch" >/dev/null 2>&1; then
  say "pip install $torch_spec"
  pip install "$torch_spec"
  did+=("$torch_spec")
else
  say "keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
fi

# Quick check: skip pip when every requirement is already satisfied.
req_stamp=$venv/.mt2kd-requirements.sha
req_sha=$(sha1sum "$repo/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$req_sha" ]; then
  say "pip install -r requirements.txt"
  pip install -r "$repo/requirements.txt"
  echo "$req_sha" > "$req_stamp"
  did+=("requirements.txt")
fi

# The library as a package (pyproject.toml): importable from anywhere without PYTHONPATH. Editable, so the checkout's
# code is what runs; redone when the venv's install points at another checkout.
installed_at=$(cd / && env -u PYTHONPATH "$py" -c 'import mt2kd_lib, os; print(os.path.dirname(os.path.dirname(os.path.abspath(mt2kd_lib.__file__))))' 2>/dev/null || true)
if [ "$installed_at" != "$(cd "$repo" && pwd -P)" ]; then
  say "pip install -e $repo (the mt2kd_lib package)"
  pip install --no-build-isolation --no-deps -e "$repo"
  did+=("mt2kd (editable)")
fi

# Packages whose declared dependencies would drag in CUDA builds (openai-whisper -> triton): installed without
# them; the light dependencies they really import are in requirements.txt.
for spec in "openai-whisper==20250625:whisper"; do
  pkg=${spec%%:*}; mod=${spec##*:}
  if ! "$py" -c "import $mod" >/dev/null 2>&1; then
    say "pip install --no-deps $pkg"
    pip install --no-deps "$pkg"
    did+=("$pkg (no deps)")
  fi
done

# ---- sdist builds with a wheel cache -----------------------------------------------------------
mkdir -p "$cache/wheels" "$cache/src"
pyinc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')

pybind11_src() {
  local dir=$cache/src/pybind11-$pybind11_version
  if [ ! -f "$dir/CMakeLists.txt" ]; then
    pip download --no-deps --no-binary pybind11 -d "$cache/src" "pybind11==$pybind11_version"
    tar -xzf "$cache/src/pybind11-$pybind11_version.tar.gz" -C "$cache/src"
  fi
  echo "$dir"
}

cuda_flag() {  # CUDA build only where nvcc and a CUDA torch both exist
  if command -v nvcc >/dev/null 2>&1 && "$py" -c "import torch,sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
    echo ON
  else
    echo OFF
  fi
}

build_sdist() {  # name version import_name cmake_env_var cmake_args
  local name=$1 version=$2 mod=$3 envvar=$4 args=$5
  if "$py" -c "import $mod" >/dev/null 2>&1; then say "$name already installed"; return; fi
  local whl
  whl=$(ls "$cache/wheels/${name//-/_}-$version-"*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ]; then
    say "building $name $version from its sdist (cached in $cache/wheels)"
    pip install cmake >/dev/null 2>&1 || true
    env "$envvar=$args" "$py" -m pip --disable-pip-version-check -q wheel --no-build-isolation --no-deps \
      --no-binary "$name" -w "$cache/wheels" "$name==$version"
    whl=$(ls "$cache/wheels/${name//-/_}-$version-"*.whl | head -1)
    did+=("built $name")
  fi
  pip install --no-deps "$whl"
  did+=("installed $name from $(basename "$whl")")
}

pb=$(pybind11_src)
common="-DCMAKE_CXX_STANDARD=20 -DPYTHON_INCLUDE_DIRS=$pyinc -DFETCHCONTENT_SOURCE_DIR_PYBIND11=$pb -DFETCHCONTENT_FULLY_DISCONNECTED=ON"
build_sdist fast-rnnt "$fast_rnnt_version" fast_rnnt FT_CMAKE_ARGS \
  "-DFT_WITH_CUDA=$(cuda_flag) -DFT_BUILD_TESTS=OFF $common"
if $with_kaldifeat; then
  build_sdist kaldifeat "$kaldifeat_version" kaldifeat KALDIFEAT_CMAKE_ARGS \
    "-DKALDIFEAT_BUILD_TESTS=OFF $common"
fi

if $with_k2; then
  MT2KD_CACHE=$cache MT2KD_K2_SOURCE=$k2_source bash "$repo/tools/install_k2.sh" --venv "$venv"
fi

say "done. venv=$venv"
if [ ${#did[@]} -eq 0 ]; then say "nothing to do: everything was already installed"; else printf '  - %s\n' "${did[@]}"; fi
