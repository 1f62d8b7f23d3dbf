#!/usr/bin/env bash
# Build the CPU image and smoke-test it the way a user runs it: the README's `docker run`, the
# HEALTHCHECK / readiness, the README's /v1/predict example and a bad request, the non-root
# user, your own models/ mounted over the image's with the adapter chosen by environment, and a
# SIGTERM that drains an in-flight request. Prints the image size and the time to ready.
#
#   bash scripts/container-smoke.sh            # docker if present, else podman
#   ENGINE=podman KEEP_IMAGE=1 bash scripts/container-smoke.sh
#
# On a machine like the development one (root, no image registry, cgroup v1) it installs podman,
# runc and debootstrap from Debian's packages (NO_INSTALL=1 skips that) and builds a Debian base
# image with debootstrap (../shared/CONTAINERS.md has the recipe). Exit 0 = every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8031}
IMAGE=${IMAGE:-behaviorlm:cpu}
NAME=behaviorlm-smoke-$$
log() { echo "[container-smoke] $*"; }
die() { echo "[container-smoke] FAIL: $*" >&2; exit 1; }

# ---- a container engine ----------------------------------------------------------------------
ENGINE=${ENGINE:-}
if [[ -z "$ENGINE" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  elif [[ "${NO_INSTALL:-0}" != 1 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing podman, runc and debootstrap (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
    ENGINE=podman
  else
    die "no container engine (docker or podman) found; set ENGINE or install one"
  fi
fi
CE=("$ENGINE")
BUILD_ARGS=()
RUN_ARGS=(-p "$PORT:$PORT")
if [[ "$ENGINE" == podman ]]; then
  # crun fails on cgroup v1 hybrid hosts; runc works. No default ulimits above the hard limit,
  # no CNI bridge: host network (the service then listens on the host's loopback).
  command -v runc >/dev/null && CE=(podman --runtime "$(command -v runc)")
  conf=$(mktemp); printf '[containers]\ndefault_ulimits = []\n' > "$conf"; export CONTAINERS_CONF="$conf"
  RUN_ARGS=(--ulimit host --network host)
  BUILD_ARGS+=(--network host --format docker)
fi

# ---- a base image ----------------------------------------------------------------------------
BASE=${BASE:-}
if [[ -z "$BASE" ]]; then
  if "${CE[@]}" pull -q python:3.11-slim >/dev/null 2>&1; then BASE=python:3.11-slim
  else
    BASE=localhost/debian-base:bookworm
    if ! "${CE[@]}" image exists "$BASE" 2>/dev/null && ! "${CE[@]}" image inspect "$BASE" >/dev/null 2>&1; then
      command -v debootstrap >/dev/null || die "no registry reachable and no debootstrap to build a base image"
      log "no registry: building $BASE with debootstrap"
      root=$(mktemp -d)
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" >/dev/null
      tar -C "$root" -c . | "${CE[@]}" import - "$BASE" >/dev/null
      rm -rf "$root"
    fi
  fi
fi
# pip inside the build: the machine's CA bundle and local wheel folder, when it has them.
TORCH_INDEX=https://download.pytorch.org/whl/cpu
if [[ -n "${PIP_FIND_LINKS:-}" && -d "${PIP_FIND_LINKS}" ]]; then
  BUILD_ARGS+=(-v "$PIP_FIND_LINKS:$PIP_FIND_LINKS:ro" --env PIP_FIND_LINKS)
  TORCH_INDEX=""  # the local wheel satisfies the torch pin
fi
if [[ -n "${PIP_CERT:-}" && -f "${PIP_CERT}" ]]; then
  BUILD_ARGS+=(-v "$(dirname "$PIP_CERT"):$(dirname "$PIP_CERT"):ro" --env PIP_CERT)
fi
[[ -f models/ct-pj-demo/stage2/manifest.json ]] || die "models/ct-pj-demo/stage2 missing: the image embeds the demo adapter"

# ---- build -----------------------------------------------------------------------------------
log "building $IMAGE FROM $BASE with $ENGINE"
t0=$(date +%s)
"${CE[@]}" build -q "${BUILD_ARGS[@]}" --build-arg BASE="$BASE" --build-arg TORCH_INDEX="$TORCH_INDEX" \
  -f docker/Dockerfile.cpu -t "$IMAGE" . >/dev/null
build_s=$(( $(date +%s) - t0 ))
size=$("${CE[@]}" image inspect "$IMAGE" --format '{{.Size}}')

cleanup() {
  "${CE[@]}" rm -f "$NAME" "$NAME-own" >/dev/null 2>&1 || true
  [[ "${KEEP_IMAGE:-0}" == 1 ]] || "${CE[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

wait_ready() {  # $1 container, $2 port -> seconds to ready
  local t=$(date +%s.%N)
  for _ in $(seq 1 600); do
    [[ "$("${CE[@]}" inspect -f '{{.State.Running}}' "$1")" == true ]] || { "${CE[@]}" logs "$1" | tail -20; die "$1 exited"; }
    if curl -sf "localhost:$2/health/ready" >/dev/null; then
      echo "$(date +%s.%N) - $t" | bc; return 0
    fi
    sleep 0.25
  done
  die "$1 not ready after 150 s"
}

# ---- run: the README's line (docker: -p; podman here: host network + the port by env) -------
log "run: $ENGINE run -d ${RUN_ARGS[*]} -e BEHAVIORLM_PORT=$PORT $IMAGE"
"${CE[@]}" run -d --name "$NAME" "${RUN_ARGS[@]}" -e BEHAVIORLM_PORT="$PORT" "$IMAGE" >/dev/null
ready_s=$(wait_ready "$NAME" "$PORT")
"${CE[@]}" healthcheck run "$NAME" >/dev/null 2>&1 || [[ "$ENGINE" == docker ]] || die "HEALTHCHECK failed"
uid=$("${CE[@]}" exec "$NAME" id -u)
[[ "$uid" == 10001 ]] || die "service runs as uid $uid, expected 10001"

# The README's predict example.
body='{"history": [
    {"behavior": "Coffee Shop",   "timestamp": "2018-03-03T08:40:00+08:00"},
    {"behavior": "Shopping Mall", "timestamp": "2018-03-03T11:05:00+08:00"}],
  "now": "2018-03-03T13:00:00+08:00", "top_k": 5}'
out=$(curl -sf "localhost:$PORT/v1/predict" -H 'content-type: application/json' -d "$body")
[[ $(jq '.predictions | length' <<<"$out") == 5 ]] || die "predict: $out"
[[ $(jq -r .model <<<"$out") == ct-pj-demo/stage2 ]] || die "predict: default adapter $(jq -r .model <<<"$out")"
bad=$(curl -s -w '\n%{http_code}' "localhost:$PORT/v1/predict" -H 'content-type: application/json' -d '{"history": [{"behavior": ""}]}')
[[ $(tail -1 <<<"$bad") == 422 ]] || die "bad request: $bad"
[[ $(head -1 <<<"$bad" | jq -r .error.field) == "history[0].behavior" ]] || die "bad request field: $bad"
log "predict OK ($(jq -r '.predictions[0].behavior' <<<"$out") first), bad request 422 naming history[0].behavior, uid $uid"

# SIGTERM while a batch is in flight: it finishes (200), then a clean exit. The check is the
# drain, not the speed: a second container with a deadline no 2-core machine misses (64 items
# take 20 s here, 2026-12-02, against the default 10 s deadline) and a stop timeout above the
# shutdown grace, so a slow machine cannot turn it into a deadline or a SIGKILL.
"${CE[@]}" rm -f "$NAME" >/dev/null
"${CE[@]}" run -d --name "$NAME" "${RUN_ARGS[@]}" -e BEHAVIORLM_PORT="$PORT" \
  -e BEHAVIORLM_REQUEST_DEADLINE_S=120 -e BEHAVIORLM_SHUTDOWN_GRACE_S=120 "$IMAGE" >/dev/null
wait_ready "$NAME" "$PORT" >/dev/null
batch=$(jq -c '{items: [range(16) as $i | .]}' <<<"$body")
curl -s -o /tmp/smoke-batch-$$.json -w '%{http_code}' "localhost:$PORT/v1/predict/batch" \
  -H 'content-type: application/json' -d "$batch" > /tmp/smoke-batch-$$.code &
curl_pid=$!
# SIGTERM only once the batch is in the server (its queue or the engine), not before it arrives.
for _ in $(seq 1 100); do
  inflight=$(curl -sf "localhost:$PORT/metrics" | awk '$1 == "behaviorlm_queue_depth" {print int($2)}')
  [[ "${inflight:-0}" -gt 0 ]] && break
  sleep 0.1
done
t0=$(date +%s.%N)
"${CE[@]}" stop -t 300 "$NAME" >/dev/null
stop_s=$(echo "$(date +%s.%N) - $t0" | bc)
wait "$curl_pid" || true
code=$("${CE[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")
why="exit code $code, stop took ${stop_s}s, in flight at SIGTERM ${inflight:-?}; last log lines:
$("${CE[@]}" logs "$NAME" 2>&1 | tail -8)"
[[ $(cat /tmp/smoke-batch-$$.code) == 200 ]] || die "in-flight batch during SIGTERM: HTTP $(cat /tmp/smoke-batch-$$.code); $why"
[[ $(jq .failed /tmp/smoke-batch-$$.json) == 0 ]] || die "in-flight batch had $(jq .failed /tmp/smoke-batch-$$.json) failures: $(jq -c '[.results[].error | select(.)][0]' /tmp/smoke-batch-$$.json); $why"
[[ "$code" == 0 ]] || die "unclean exit: $why"
# The logs are read into a variable first: `logs | grep -q` under pipefail fails whenever grep
# exits at the match before `logs` has written everything (SIGPIPE), which is what failed CI
# with the "stopped" line right there in the output. The log file can also trail the exit.
stopped=0
for _ in $(seq 1 20); do
  logs=$("${CE[@]}" logs "$NAME" 2>&1 || true)
  if grep -q '"message": "stopped"' <<<"$logs"; then stopped=1; break; fi
  sleep 0.5
done
[[ "$stopped" == 1 ]] || die "no clean stop in the logs: $why"
rm -f /tmp/smoke-batch-$$.*
log "SIGTERM: the in-flight batch of 16 finished (200), exit code $code, stop took ${stop_s}s"

# ---- your own models/ mounted over the image's, adapter chosen by environment ----------------
own=$(mktemp -d); mkdir -p "$own/models/mine"
cp -r models/ct-pj-demo/stage1/. "$own/models/mine/"
chmod -R a+rX "$own"
PORT2=$((PORT + 1))
RUN2=("${RUN_ARGS[@]}")
[[ "$ENGINE" == docker ]] && RUN2=(-p "$PORT2:$PORT2")
"${CE[@]}" run -d --name "$NAME-own" "${RUN2[@]}" -e BEHAVIORLM_PORT="$PORT2" \
  -v "$own/models:/app/models:ro" -e BEHAVIORLM_ADAPTERS=mine "$IMAGE" >/dev/null
wait_ready "$NAME-own" "$PORT2" >/dev/null
models=$(curl -sf "localhost:$PORT2/v1/models" | jq -r '[.models[].name] | join(",")')
[[ "$models" == mine ]] || die "mounted models: served '$models', expected 'mine'"
out=$(curl -sf "localhost:$PORT2/v1/predict" -H 'content-type: application/json' -d "$body")
[[ $(jq -r .model <<<"$out") == mine && $(jq -r .stage <<<"$out") == stage1 ]] || die "mounted adapter: $out"
"${CE[@]}" stop -t 40 "$NAME-own" >/dev/null
rm -rf "$own"
log "mounted models/ with BEHAVIORLM_ADAPTERS=mine: served and answered"

echo
echo "container smoke: PASS ($ENGINE, base $BASE)"
printf '  image size      %s MB\n' $(( size / 1000000 ))
printf '  build time      %s s\n' "$build_s"
printf '  time to ready   %.1f s (start to /health/ready 200)\n' "$ready_s"
printf '  SIGTERM drain   %.1f s (in-flight batch of 16 finished)\n' "$stop_s"
