#!/usr/bin/env bash
# The trained-head screen (issue 32), as run on 2026-12-05: each arm is `sft` with the cpu
# preset's budget (200 steps x 4,096 tokens), one seed, then evaluated on the same seeded
# 3,000-sample PJ test subset (+ 2,500 validation samples for the temperature).
# Needs the prepared data: see models/ct-pj-demo/COMMAND.md (`behaviorlm data prepare ...`).
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
B=.venv/bin/behaviorlm
D=runs/data/ct-pj-local
OUT=${1:-runs/screen}
SUBSET="--max-test-samples 3000 --max-validation-samples 2500 --seed 0 --engine transformers --logit-adjust ''"
# the LoRA of the cpu preset when this ran (q,v r8); the preset now has the all-linear winner
QV="lora.r=8 lora.alpha=16 lora.target_modules=[q_proj,v_proj]"
ALL_LINEAR='lora={r: 16, alpha: 32, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}'
arm() {  # name overrides...
  local name=$1; shift
  [ -f $OUT/$name/sft/manifest.json ] || $B train --strategy sft --data $D --preset cpu \
    --out $OUT/$name --name $name threads=2 head.trained=true $QV "$@"
}
# 1. the head + repeat features (window 50), q,v LoRA r8 as the demo; the baselines on the subset
arm sft-head head.repeat_window=50
eval "$B eval --data $D --runs models/ct-pj-demo/stage2 $OUT/sft-head \
  --systems classical,sasrec,adapters $SUBSET --out $OUT/eval1"
# 2. one change at a time: head lr 10x, no repeat features, all-linear LoRA r16
arm sft-head-lr10 head.repeat_window=50 head.lr=0.01
arm sft-head-nofeat head.repeat_window=0
arm sft-head-alllin head.repeat_window=50 "$ALL_LINEAR"
for name in sft-head-lr10 sft-head-nofeat sft-head-alllin; do
  eval "$B eval --data $D --runs $OUT/$name --systems adapters $SUBSET --out $OUT/eval-$name"
done
# 3. the winner (now the cpu preset: all-linear r16, head, repeats) with the feature weights at
#    their own lr
arm sft-head-alllin-flr head.feature_lr=0.05 lora.r=16 lora.alpha=32 \
  "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
eval "$B eval --data $D --runs $OUT/sft-head-alllin-flr --systems adapters $SUBSET --out $OUT/eval-sft-head-alllin-flr"
