#!/usr/bin/env bash
# Container entrypoint: check the BEHAVIORLM_* settings that most often go wrong in a `docker run`
# line, with a message naming the variable, then exec `behaviorlm serve` (PID 1 gets SIGTERM,
# so shutdown is graceful: in-flight requests finish). Extra arguments go to `behaviorlm serve`.
set -euo pipefail

fail() { echo "entrypoint: $*" >&2; exit 64; }

engine="${BEHAVIORLM_ENGINE:-auto}"
case "$engine" in
  transformers|vllm|auto) ;;
  *) fail "BEHAVIORLM_ENGINE must be transformers, vllm or auto, got '$engine'" ;;
esac

port="${BEHAVIORLM_PORT:-8000}"
[[ "$port" =~ ^[0-9]+$ ]] && (( port <= 65535 )) || fail "BEHAVIORLM_PORT must be a port number, got '$port'"

models_dir="${BEHAVIORLM_MODELS_DIR:-models}"
[[ -d "$models_dir" ]] || fail "BEHAVIORLM_MODELS_DIR '$models_dir' is not a directory (mount your models with -v \$PWD/models:$models_dir:ro)"
if [[ -z "${BEHAVIORLM_ADAPTERS:-}" ]]; then
  shopt -s nullglob
  manifests=("$models_dir"/*/manifest.json "$models_dir"/*/*/manifest.json)
  (( ${#manifests[@]} > 0 )) || fail "no adapters in '$models_dir' (expected <name>/manifest.json or <run>/<stage>/manifest.json)"
fi

if [[ "$engine" == "vllm" ]] && ! python -c "import vllm" 2>/dev/null; then
  fail "BEHAVIORLM_ENGINE=vllm but vllm is not installed in this image (use the GPU image, or BEHAVIORLM_ENGINE=transformers)"
fi

export BEHAVIORLM_HOST="${BEHAVIORLM_HOST:-0.0.0.0}"
export BEHAVIORLM_PORT="$port"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec behaviorlm serve "$@"
