"""Finetuning tasks (GLUE MNLI/QQP, RACE) on top of the megatron-core BERT stack."""
