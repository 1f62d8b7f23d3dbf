#!/usr/bin/env bash
# The training-budget row of the head screen (issue 32, item 3), as run on 2026-12-07 (2-core AMD
# EPYC, native bf16): the screen's winner (`sft` + trained head + repeats, all-linear r16, seed 0)
# with twice the cpu preset's budget (400 steps x 4,096 tokens, ~81k targets, 0.79 epochs of the
# 102,834 training targets, the same warm-up and decay to 0.1x), evaluated on the screen's seeded
# 3,000-sample PJ test subset. The 1x reference on the same samples: screen-alllin/ (seed 0,
# trained on the Xeon) and seed 1 of the proof (proof-seeds.sh, trained on this EPYC), evaluated
# here in the same command.
# Resumable: a finished training is skipped, a killed one resumes (--resume).
#   bash models/ct-pj-demo/experiments/head-screen/screen-budget.sh
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
B=.venv/bin/behaviorlm
D=runs/data/ct-pj-local
OUT=runs/screen
HERE=models/ct-pj-demo/experiments/head-screen
SUBSET=(--max-test-samples 3000 --max-validation-samples 2500 --seed 0 --engine transformers --logit-adjust '')
QV=(lora.r=8 lora.alpha=16 "lora.target_modules=[q_proj,v_proj]")
ALL_LINEAR='lora={r: 16, alpha: 32, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}'
name=sft-head-alllin-2x
R=; [ -d $OUT/$name ] && R=--resume
[ -f $OUT/$name/sft/manifest.json ] || $B train --strategy sft --data $D --preset cpu \
  --out $OUT/$name --name $name $R threads=2 head.trained=true "${QV[@]}" head.repeat_window=50 \
  "$ALL_LINEAR" baseline.steps=400
ref=runs/proof-seeds/sft-head-alllin-seed1
[ -f $HERE/screen-budget/report.json ] || $B eval --data $D --runs $OUT/$name $ref --systems adapters \
  "${SUBSET[@]}" --out $HERE/screen-budget
$B eval --compare $HERE/screen-alllin $HERE/screen-budget --out $HERE/screen-budget-comparison
