#!/usr/bin/env bash
# Proof of the screen's winner on the full PJ test split (14,660 samples), as run on 2026-12-05:
# the all-linear sft arm of screen.sh (seed 0) against the demo, the classical baselines, SASRec
# and the hybrid (each LLM x SASRec, weight fitted on 2,500 validation samples); then BehaviorLM's
# two stages with the same head, repeats and LoRA (the cpu preset's 100 + 100 steps).
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
B=.venv/bin/behaviorlm
D=runs/data/ct-pj-local
SCREEN=${1:-runs/screen}
OUT=${2:-runs/proof}
ALL_LINEAR='lora={r: 16, alpha: 32, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}'
# eval takes run directories holding <stage>/ folders: link the stages to compare
mkdir -p $OUT/adapters/sft-head-alllin-seed0 $OUT/adapters/demo $OUT/adapters/behaviorlm-head-alllin-seed0
ln -sfn "$(realpath $SCREEN/sft-head-alllin/sft)" $OUT/adapters/sft-head-alllin-seed0/sft
ln -sfn "$(realpath models/ct-pj-demo/stage2)" $OUT/adapters/demo/stage2
$B eval --data $D --runs $OUT/adapters/demo $OUT/adapters/sft-head-alllin-seed0 \
  --systems classical,sasrec,adapters,hybrid-sasrec --max-validation-samples 2500 \
  --seed 0 --engine transformers --logit-adjust '' --out $OUT/eval-full1
R=; [ -d $OUT/behaviorlm-head-alllin ] && R=--resume
[ -f $OUT/behaviorlm-head-alllin/stage2/manifest.json ] || $B train --strategy behaviorlm \
  --data $D --preset cpu --out $OUT/behaviorlm-head-alllin --name behaviorlm-head-alllin $R \
  threads=2 head.trained=true head.repeat_window=50 "$ALL_LINEAR"
ln -sfn "$(realpath $OUT/behaviorlm-head-alllin/stage2)" $OUT/adapters/behaviorlm-head-alllin-seed0/stage2
$B eval --data $D --runs $OUT/adapters/behaviorlm-head-alllin-seed0 --systems adapters \
  --max-test-samples 3000 --max-validation-samples 2500 --seed 0 --engine transformers \
  --logit-adjust '' --out $SCREEN/eval-behaviorlm-head-alllin
$B eval --data $D --runs $OUT/adapters/behaviorlm-head-alllin-seed0 --systems adapters \
  --max-validation-samples 2500 --seed 0 --engine transformers --logit-adjust '' --out $OUT/eval-full-bl
