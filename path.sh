# Source me: activates the mt2kd virtualenv and puts the repo on PYTHONPATH (icefall style).
MT2KD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MT2KD_ROOT
MT2KD_VENV=${MT2KD_VENV:-$MT2KD_ROOT/.venv}
if [ -f "$MT2KD_VENV/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$MT2KD_VENV/bin/activate"
fi
export PYTHONPATH=$MT2KD_ROOT:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
# Small machines: do not let every library spawn a thread per core for each worker.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
