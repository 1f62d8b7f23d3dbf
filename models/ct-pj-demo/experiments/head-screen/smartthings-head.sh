#!/usr/bin/env bash
# SmartThings France with the trained behavior head + repeat features (window 50): sft and
# behaviorlm (KL 0, as the SmartThings ablation chose), 3 seeds each, the budget of
# experiments/smartthings-fr/run.sh (40 steps x 2,048 tokens per arm, q,v LoRA r8); then every system on the
# 99 test samples, with the hybrid arm (each LLM x SASRec).
set -uo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
B=.venv/bin/behaviorlm
D=runs/data/st-fr
OUT=${1:-runs/st-head}
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
[ -f $D/samples.parquet ] || $B data prepare --format smartthings --input ../shared/data/smartthings_fr --out $D
SMALL="threads=2 stage1.steps=20 stage1.batch_tokens=2048 stage1.warmup_steps=3 \
stage2.steps=20 stage2.batch_tokens=2048 stage2.warmup_steps=2 \
baseline.steps=40 baseline.batch_tokens=2048 baseline.warmup_steps=3 checkpoint_every=5 \
head.trained=true head.repeat_window=50 lora.r=8 lora.alpha=16 lora.target_modules=[q_proj,v_proj]"
train() {  # strategy run-name extra-overrides...
  local strategy=$1 name=$2; shift 2
  local final=$strategy; [ "$strategy" = behaviorlm ] && final=stage2
  [ -f $OUT/$name/$final/manifest.json ] && return 0
  local R=; [ -d $OUT/$name ] && R=--resume
  log "train $name"
  $B train --strategy $strategy --data $D --preset cpu --out $OUT/$name --name $name $R $SMALL "$@"
  log "train $name rc=$?"
}
for seed in 0 1 2; do
  train sft st-sft-head-seed$seed seed=$seed
  train behaviorlm st-behaviorlm-head-seed$seed seed=$seed stage1.kl_weight=0.0
done
mkdir -p $OUT/adapters
for seed in 0 1 2; do
  mkdir -p $OUT/adapters/st-sft-head-seed$seed $OUT/adapters/st-behaviorlm-head-seed$seed
  ln -sfn ../../st-sft-head-seed$seed/sft $OUT/adapters/st-sft-head-seed$seed/sft
  ln -sfn ../../st-behaviorlm-head-seed$seed/stage2 $OUT/adapters/st-behaviorlm-head-seed$seed/stage2
done
$B eval --data $D --runs $OUT/adapters/st-* --systems classical,sasrec,adapters,hybrid-sasrec \
  --logit-adjust '' --engine transformers --out $OUT/eval
log "eval done rc=$?"
$B eval --compare $OUT/eval --out $OUT/comparison
log "compare done rc=$?"
