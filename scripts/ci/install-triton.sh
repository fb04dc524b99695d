#!/usr/bin/env bash
# Install the real tritonserver binary (bundled in PyPI nvidia-pytriton 0.7.0, Python backend,
# runs on CPU) apart from the project venv: the wheel requires numpy<2, so only its files are
# used (--no-deps --target). Location: $RADGATE_TRITON_HOME (default ~/.cache/radgate/triton).
set -euo pipefail
HOME_DIR="${RADGATE_TRITON_HOME:-$HOME/.cache/radgate/triton}"
PY="${PYTHON:-$(dirname "$0")/../../.venv/bin/python}"
if [ -x "$HOME_DIR/pytriton/pytriton/tritonserver/bin/tritonserver" ]; then
  echo "tritonserver already installed under $HOME_DIR"; exit 0
fi
mkdir -p "$HOME_DIR"
"$PY" -m pip install --no-deps --target "$HOME_DIR/pytriton" nvidia-pytriton==0.7.0
echo "tritonserver installed under $HOME_DIR/pytriton/pytriton/tritonserver"
