#!/usr/bin/env bash
# Capacity and budget rows of the head screen (issue 32, item 3), run on 2026-12-07 (2-core AMD
# EPYC, native bf16): one change at a time to the screen's winner (`sft` + trained head +
# repeats, all-linear LoRA r16, 200 steps x 4,096 tokens, seed 0), each evaluated on the
# screen's seeded 3,000-sample PJ test subset (+ 2,500 validation samples):
#   full   full fine-tuning of every weight (tuning=full) at lr 1e-4 (a tenth of LoRA's 1e-3, the
#          published rule), the head's rows still at 1e-3 as in the LoRA arms
#   2x     the LoRA arm with twice the steps (400: ~81k targets, 0.79 epochs)
#   epoch1 the LoRA arm trained one whole epoch over every training target (baseline.epochs=1:
#          510 steps with the cpu preset's 4,096-token batches, 2.55x the 1x budget)
#   k5     issue 34 (fewer tokens per prediction): the ref arm (seed 1) trained and evaluated on
#          prompts of the last 5 events instead of 10 (data prepared with --history-len 5 into
#          runs/data/ct-pj-k5: the same targets, each shown with up to 5 events; the repeat
#          features still read 50)
#   ref    the 1x LoRA arm trained on this machine (the proof's seed 1, proof-seeds.sh) on the
#          same subset, beside screen-alllin/ (seed 0, trained on the Xeon)
# Resumable: a finished training or report is skipped, a killed training resumes.
#   bash models/ct-pj-demo/experiments/head-screen/screen-capacity.sh full ref [2x] [epoch1] [k5]
#   bash models/ct-pj-demo/experiments/head-screen/screen-capacity.sh --compare
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
B=.venv/bin/behaviorlm
D=runs/data/ct-pj-local
OUT=runs/screen
HERE=models/ct-pj-demo/experiments/head-screen
SUBSET=(--max-test-samples 3000 --max-validation-samples 2500 --seed 0 --engine transformers --logit-adjust '')
QV=(lora.r=8 lora.alpha=16 "lora.target_modules=[q_proj,v_proj]")
ALL_LINEAR='lora={r: 16, alpha: 32, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}'
HEAD=(head.trained=true head.repeat_window=50)

if [ "${1:-}" = "--compare" ]; then
  reports=($HERE/screen-alllin)
  for r in $HERE/screen-capacity-*/; do [ -f "$r/report.json" ] && reports+=("${r%/}"); done
  exec $B eval --compare "${reports[@]}" --out $HERE/screen-capacity-comparison
fi

train() {  # name overrides...  (the data: $DATA, default $D)
  local name=$1; shift
  local R=; [ -d $OUT/$name ] && R=--resume
  [ -f $OUT/$name/sft/manifest.json ] || $B train --strategy sft --data "${DATA:-$D}" --preset cpu \
    --out $OUT/$name --name $name $R threads=2 "${HEAD[@]}" "$@"
}
report() {  # arm run-dir  (the data: $DATA, default $D)
  [ -f $HERE/screen-capacity-$1/report.json ] || $B eval --data "${DATA:-$D}" --runs "$2" --systems adapters \
    "${SUBSET[@]}" --out $HERE/screen-capacity-$1
}
for arm in "$@"; do
  case $arm in
    full) train sft-head-full tuning=full baseline.lr=0.0001 head.lr=0.001
          report full $OUT/sft-head-full ;;
    2x)   train sft-head-alllin-2x "${QV[@]}" "$ALL_LINEAR" baseline.steps=400
          report 2x $OUT/sft-head-alllin-2x ;;
    epoch1) train sft-head-alllin-epoch1 "${QV[@]}" "$ALL_LINEAR" baseline.epochs=1
          report epoch1 $OUT/sft-head-alllin-epoch1 ;;
    k5)   K5=runs/data/ct-pj-k5
          [ -f $K5/samples.parquet ] || $B data prepare --format context-trails \
            --input ../shared/data/context_trails_pj --times-are-utc --history-len 5 --out $K5
          DATA=$K5 train sft-head-alllin-k5 "${QV[@]}" "$ALL_LINEAR" seed=1
          DATA=$K5 report k5 $OUT/sft-head-alllin-k5 ;;
    ref)  report ref runs/proof-seeds/sft-head-alllin-seed1 ;;
    *)    echo "arm must be full, 2x, epoch1, k5 or ref, got $arm" >&2; exit 2 ;;
  esac
done
