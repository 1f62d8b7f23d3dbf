#!/usr/bin/env bash
# The served demo adapter, from the data to the committed folder and its full-split report
# (issue 32, 2026-12-07): BehaviorLM's two stages with the `cpu` preset as it is since the head
# screen (all-linear LoRA r16, the trained behavior head with repeat features), seed 1: the
# BehaviorLM arm of experiments/head-screen/ is seed 0, so the demo is that arm's second seed.
# Resumable: rerun after a kill and each step picks up where it stopped.
#   bash models/ct-pj-demo/make-demo.sh [runs-dir]
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
B=.venv/bin/behaviorlm
RUNS=${1:-runs}
D=$RUNS/data/ct-pj-local
RUN=$RUNS/full/ct-pj-demo-head
DEMO=models/ct-pj-demo

[ -f $D/prepare.json ] || $B data prepare --format context-trails \
  --input ../shared/data/context_trails_pj --times-are-utc --out $D --overwrite

R=; [ -d $RUN ] && R=--resume
[ -f $RUN/stage2/manifest.json ] || $B train --strategy behaviorlm --data $D --preset cpu \
  --out $RUN --name ct-pj-demo $R threads=2 seed=1

# the committed demo: both stages, the run's config and record, the difficulty plot
rm -rf $DEMO/stage1 $DEMO/stage2
cp -r $RUN/stage1 $RUN/stage2 $DEMO/
cp $RUN/config.yaml $RUN/run.json $DEMO/
cp $RUN/difficulty.png $DEMO/ 2>/dev/null || true

# the served stage on the full PJ test split (14,660 samples) against the classical baselines,
# SASRec and the hybrid; its fitted temperature is stored in its manifest (the service applies
# it). eval takes run directories holding <stage>/ folders: link the one to evaluate.
mkdir -p $RUNS/demo-eval/ct-pj-demo
ln -sfn "$(realpath $DEMO/stage2)" $RUNS/demo-eval/ct-pj-demo/stage2
$B eval --data $D --runs $RUNS/demo-eval/ct-pj-demo --systems classical,sasrec,adapters,hybrid-sasrec \
  --max-validation-samples 2500 --seed 0 --engine transformers --logit-adjust '' \
  --store-calibration --out $DEMO/eval
