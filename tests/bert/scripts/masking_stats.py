"""Draw BERT samples from megatron-core's masked-wordpiece dataset and print masking statistics as JSON.

Run as a subprocess by tests/bert/test_bert_masking.py (the dataset needs a process group).
usage: masking_stats.py DATA_PREFIX VOCAB NUM_SAMPLES SEQ_LENGTH MASK_PROB
"""

import json
import sys
from pathlib import Path

import numpy as np


def main():
    prefix, vocab, num_samples, seq_length, mask_prob = sys.argv[1:6]
    num_samples, seq_length, mask_prob = int(num_samples), int(seq_length), float(mask_prob)
    from megatron.training.initialize import initialize_distributed
    from megatron.training.tokenizers import build_tokenizer

    from pretrain_bert import build_bert_datasets

    initialize_distributed()
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=vocab)
    train, _, _ = build_bert_datasets([num_samples, 0, 0], data_path=[prefix], split="1,0,0",
                                      seq_length=seq_length, seed=1234, tokenizer=tok, mask_prob=mask_prob,
                                      short_seq_prob=0.1, binary_head=True,
                                      path_to_cache=str(Path(prefix).parent / "cache"))
    real = masked = as_mask = as_original = as_random = 0
    is_random = 0
    type_b = 0
    specials = {tok.cls, tok.sep, tok.pad}
    for i in range(num_samples):
        s = train[i]
        text, labels, loss_mask, pad = s["text"], s["labels"], s["loss_mask"], s["padding_mask"]
        real += int(pad.sum())
        pos = np.nonzero(loss_mask)[0]
        masked += len(pos)
        as_mask += int((text[pos] == tok.mask).sum())
        as_original += int((text[pos] == labels[pos]).sum())
        as_random += int(((text[pos] != tok.mask) & (text[pos] != labels[pos])).sum())
        assert not any(int(labels[p]) in specials for p in pos), "a special token was masked"
        assert int(loss_mask[pad == 0].sum()) == 0, "padding inside the loss mask"
        is_random += int(s["is_random"])
        type_b += int(s["types"][pad == 1].sum() > 0)
    print(json.dumps({"samples": num_samples, "real_tokens": real, "masked": masked,
                      "masked_fraction": masked / real, "mask_token": as_mask / masked,
                      "original": as_original / masked, "random": as_random / masked,
                      "is_random_fraction": is_random / num_samples, "two_segments": type_b / num_samples}))


if __name__ == "__main__":
    main()
