#!/usr/bin/env bash
# MNLI (GLUE TSV): 3 classes, accuracy on dev_matched and dev_mismatched after every epoch.
#   PRETRAINED=checkpoints/bert/baseline MNLI=data/glue/MNLI bash examples/finetune_mnli.sh
# Sweep: LRS="1e-5 2e-5 3e-5" x SEEDS="1234 1235 1236" (one checkpoint dir per run; see finetune_common.sh).
MNLI=${MNLI:-data/glue/MNLI}
LRS=${LRS:-"1e-5 2e-5 3e-5"}
SEEDS=${SEEDS:-"1234 1235 1236"}
EPOCHS=${EPOCHS:-3}
MBS=${MBS:-4}
source "$(dirname "$0")/finetune_common.sh"
sweep MNLI --seq-length 128 --train-data "$MNLI/train.tsv" \
  --valid-data "$MNLI/dev_matched.tsv" "$MNLI/dev_mismatched.tsv"
