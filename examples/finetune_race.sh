#!/usr/bin/env bash
# RACE: multiple choice (4 options scored separately, softmax over options); accuracy on dev/middle and dev/high.
#   PRETRAINED=checkpoints/bert/baseline RACE=data/RACE bash examples/finetune_race.sh
# MBS counts questions: each micro-batch runs MBS x 4 sequences.
RACE=${RACE:-data/RACE}
LRS=${LRS:-"1e-5 2e-5"}
SEEDS=${SEEDS:-"1234 1235 1236"}
EPOCHS=${EPOCHS:-3}
MBS=${MBS:-4}
source "$(dirname "$0")/finetune_common.sh"
sweep RACE --seq-length 512 --train-data "$RACE/train/middle" "$RACE/train/high" \
  --valid-data "$RACE/dev/middle" "$RACE/dev/high"
