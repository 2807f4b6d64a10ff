#!/usr/bin/env bash
# QQP (GLUE TSV): duplicate-question classification (2 classes), accuracy on dev after every epoch.
#   PRETRAINED=checkpoints/bert/baseline QQP=data/glue/QQP bash examples/finetune_qqp.sh
QQP=${QQP:-data/glue/QQP}
LRS=${LRS:-"1e-5 2e-5 3e-5"}
SEEDS=${SEEDS:-"1234 1235 1236"}
EPOCHS=${EPOCHS:-3}
MBS=${MBS:-4}
source "$(dirname "$0")/finetune_common.sh"
sweep QQP --seq-length 128 --train-data "$QQP/train.tsv" --valid-data "$QQP/dev.tsv"
