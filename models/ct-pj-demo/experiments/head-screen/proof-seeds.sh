#!/usr/bin/env bash
# Further seeds of the proof's two LLM arms on the full PJ test split (issue 32), as run on
# 2026-12-07 (2-core AMD EPYC, native bf16): the all-linear `sft` arm of screen.sh with seed N
# (the same overrides as its seed 0), then its report with the adapters alone. BehaviorLM's
# second seed is the served demo (models/ct-pj-demo/make-demo.sh, seed 1; its report is
# models/ct-pj-demo/eval/). Resumable: a finished seed is skipped, a killed one resumes.
#   bash models/ct-pj-demo/experiments/head-screen/proof-seeds.sh [seeds...]   (default: 1)
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
B=.venv/bin/behaviorlm
D=runs/data/ct-pj-local
OUT=runs/proof-seeds
QV="lora.r=8 lora.alpha=16 lora.target_modules=[q_proj,v_proj]"
ALL_LINEAR='lora={r: 16, alpha: 32, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}'
for seed in "${@:-1}"; do
  name=sft-head-alllin-seed$seed
  R=; [ -d $OUT/$name ] && R=--resume
  [ -f $OUT/$name/sft/manifest.json ] || $B train --strategy sft --data $D --preset cpu \
    --out $OUT/$name --name $name $R threads=2 head.trained=true $QV head.repeat_window=50 \
    "$ALL_LINEAR" seed=$seed
  [ -f $OUT/eval-$name/report.json ] || $B eval --data $D --runs $OUT/$name --systems adapters \
    --max-validation-samples 2500 --seed 0 --engine transformers --logit-adjust '' \
    --out $OUT/eval-$name
done
