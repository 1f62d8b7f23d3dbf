#!/usr/bin/env bash
# Issue 17, SmartThings France (chained): every LLM arm at the same budget, 3 seeds.
# 567 training targets in 70 packed rows (15,961 tokens, 28 per target): the cpu preset's
# 200 x 4096 tokens would be ~50 epochs, so every arm gets 40 steps x 2048 tokens (~5 epochs):
# behaviorlm 20 + 20, sft and balanced 40.
set -uo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"  # the repository root, wherever it is checked out
B=.venv/bin/behaviorlm
D=runs/data/st-fr
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
SMALL="threads=2 stage1.steps=20 stage1.batch_tokens=2048 stage1.warmup_steps=3 \
stage2.steps=20 stage2.batch_tokens=2048 stage2.warmup_steps=2 \
baseline.steps=40 baseline.batch_tokens=2048 baseline.warmup_steps=3 checkpoint_every=5"
# the cpu preset's readout and LoRA before 2026-12-05 (label-word head, q,v r8), as these ran
LABEL_WORD_QV="head.trained=false head.repeat_window=0 lora.r=8 lora.alpha=16 lora.target_modules=[q_proj,v_proj]"
SMALL="$SMALL $LABEL_WORD_QV"
train() {  # strategy run-name extra-overrides...
  local strategy=$1 name=$2; shift 2
  local final=$strategy; [ "$strategy" = behaviorlm ] && final=stage2
  [ -f runs/st/$name/$final/manifest.json ] && return 0
  local R=; [ -d runs/st/$name ] && R=--resume
  log "train $name"
  $B train --strategy $strategy --data $D --preset cpu ${FROM:+--stage1-from $FROM} \
    --out runs/st/$name --name $name $R $SMALL "$@"
  log "train $name rc=$?"
}
for seed in 0 1 2; do
  train sft st-sft-seed$seed seed=$seed
  train balanced st-balanced-seed$seed seed=$seed
  train behaviorlm st-behaviorlm-seed$seed seed=$seed
  train behaviorlm st-behaviorlm-kl0-seed$seed seed=$seed stage1.kl_weight=0.0
done
# stage-2 variants from each seed's stage 1 and difficulty (the same 20 x 2048-token stage 2)
for seed in 0; do
  export FROM=runs/st/st-behaviorlm-seed$seed
  train behaviorlm st-behaviorlm-hard1-seed$seed seed=$seed subset.hard_fraction=1.0
  train behaviorlm st-behaviorlm-random-seed$seed seed=$seed subset.hard_fraction=0.0
  train behaviorlm st-behaviorlm-la02-seed$seed seed=$seed stage2.logit_adjust_tau=0.2
  unset FROM
done
log "eval: every system on the full test split (99 samples)"
# the variants' stage 1 is a copy of their source's: evaluate only their stage 2
for run in runs/st/st-*; do
  name=$(basename $run)
  for stage in $run/*/; do
    stage=$(basename $stage)
    case $name in *-hard1-*|*-random-*|*-la02-*) [ $stage = stage2 ] || continue;; esac
    mkdir -p runs/st/adapters/$name && ln -sfn ../../$name/$stage runs/st/adapters/$name/$stage
  done
done
$B eval --data $D --runs runs/st/adapters/st-* --systems classical,sasrec,zero-shot,adapters \
  --logit-adjust 0.5 --engine transformers --out runs/st/eval
log "eval done rc=$?"
$B eval --compare runs/st/eval --out runs/st/comparison
log "compare done rc=$?"
