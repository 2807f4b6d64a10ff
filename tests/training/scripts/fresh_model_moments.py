"""One forward/backward of a freshly built model on the first training batch, with the moment observer on.

Takes pretrain_gpt.py's flags, builds the model, optimizer and data exactly as pretraining does, runs the
first micro-batches through megatron-core's schedule without any optimizer step, and writes the moment records
as iteration 0 to ``--moments-file``. The training loop's iteration-0 record must equal this.

    python tests/training/scripts/fresh_model_moments.py <pretrain_gpt.py flags> --moments-file out.jsonl
"""

from __future__ import annotations

import sys


def main(argv):
    import pretrain_gpt as entry
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.dslm.mcore.observers import MomentObserver, write_moment_records
    from megatron.training.checkpointing import unwrap_model
    from megatron.training.data_iterators import build_data_iterator, num_samples_per_split
    from megatron.training.training import chunk_data_iterators, initialize_megatron, setup_model_and_optimizer

    args = initialize_megatron(argv=argv)
    model, _optimizer, _scheduler = setup_model_and_optimizer(entry.model_provider, args)
    train_ds, _, _ = entry.datasets_provider(num_samples_per_split(args))
    iterator = build_data_iterator(train_ds, 0, args)
    observer = MomentObserver([unwrap_model(m) for m in model]).attach()
    for chunk in model:
        chunk.train()
    get_forward_backward_func()(
        forward_step_func=entry.forward_step, data_iterator=chunk_data_iterators(iterator, model), model=model,
        num_microbatches=args.num_microbatches, seq_length=args.seq_length, micro_batch_size=args.micro_batch_size,
        decoder_seq_length=args.seq_length, forward_only=False)
    records = observer.collect()
    observer.detach()
    write_moment_records(args.moments_file, records, 0)


if __name__ == "__main__":
    main(sys.argv[1:])
