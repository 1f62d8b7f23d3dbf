#!/usr/bin/env bash
# Train the three strategies (behaviorlm, sft, balanced) with one preset on one prepared dataset,
# then evaluate them side by side with the classical baselines and the zero-shot base model.
#
#   scripts/compare-strategies.sh DATA OUT PRESET [TEST_SAMPLES] [key=value ...]
#
# Each run goes to OUT/<strategy>, the report to OUT/eval (report.md, report.json, PNG plots).
# Rerunning continues where a killed run stopped (train --resume, eval's resumable output).
# BEHAVIORLM overrides the command (e.g. "python -m behaviorlm.cli"); BASE_MODEL the base model
# (default smollm2), VALIDATION_SAMPLES the samples that fit each adapter's temperature (1000),
# ENGINE the scoring engine of the evaluation (auto, transformers or vllm; default auto).
# TEST_SAMPLES: 'all' (the default: the full test split) or a seeded random subset's size.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
data=$1 out=$2 preset=$3
samples=${4:-all}
shift $(( $# < 4 ? $# : 4 ))
read -r -a bl <<<"${BEHAVIORLM:-behaviorlm}"
base=${BASE_MODEL:-smollm2}
subset=()
if [ "$samples" != all ]; then subset=(--max-test-samples "$samples"); fi
runs=()
for strategy in behaviorlm sft balanced; do
  run="$out/$strategy"
  resume=()
  if [ -d "$run" ]; then resume=(--resume); fi
  echo "== train $strategy -> $run ($(date -u +%H:%M:%S))" >&2
  "${bl[@]}" train --strategy "$strategy" --data "$data" --preset "$preset" --out "$run" \
    --base-model "$base" --name "$strategy" "${resume[@]}" "$@"
  runs+=("$run")
done
echo "== eval -> $out/eval ($(date -u +%H:%M:%S))" >&2
"${bl[@]}" eval --data "$data" --runs "${runs[@]}" --systems classical,zero-shot,adapters \
  "${subset[@]}" --max-validation-samples "${VALIDATION_SAMPLES:-1000}" \
  --logit-adjust 0.5 --base-model "$base" --engine "${ENGINE:-auto}" --store-calibration \
  --out "$out/eval"
