#!/usr/bin/env bash
# Install vlmtune into the active Python environment.
#   bash scripts/setup.sh          # the tool
#   bash scripts/setup.sh test     # the tool + test extras
# Without an NVIDIA GPU (no nvidia-smi), PyTorch's CPU build is installed first, so that the `torch>=2.4`
# requirement is already met and pip does not pull a multi-GB CUDA build. With a GPU, whatever torch you
# installed is kept (install your CUDA build first; otherwise pip picks PyPI's default CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: torch will come from PyPI's default (CUDA) build"
  else
    echo "[setup] no NVIDIA GPU: installing PyTorch's CPU build"
    cpu_index=https://download.pytorch.org/whl/cpu
    if python -c "import urllib.request as u; u.urlopen('$cpu_index/', timeout=5)" 2>/dev/null; then
      python -m pip install -q "torch==2.13.0" --index-url "$cpu_index" --extra-index-url https://pypi.org/simple
      # torchvision (Qwen2.5-VL's processor needs it) must be the build made for this torch: best effort.
      python -m pip install -q "torchvision==0.28.0" --index-url "$cpu_index" \
        || echo "[setup] torchvision not installed: only Qwen2.5-VL needs it (its tests skip without it)"
    else
      # PyTorch's index is out of reach (an offline mirror or a local wheel directory serves pip instead).
      # PyPI's torchvision does not import beside this CPU torch, so it is left out (Qwen2.5-VL tests skip).
      python -m pip install -q "torch==2.13.0"
    fi
  fi
fi
extras="${1:-}"
if [ -n "$extras" ]; then
  python -m pip install -q -e ".[$extras]"
else
  python -m pip install -q -e .
fi
python -c "import torch, vlmtune; print(f'[setup] vlmtune {vlmtune.__version__} with torch {torch.__version__}')"
