"""Reference points for an MNLI-format dataset: majority class, hypothesis-only and pair-overlap bag-of-words.

    python scripts/mnli_baselines.py --train MNLI/train.tsv --valid MNLI/dev_matched.tsv MNLI/dev_mismatched.tsv

The baselines live in ``tasks/baselines.py`` (installed with the package); this is its command line.
"""

import sys

from tasks.baselines import main

if __name__ == "__main__":
    sys.exit(main())
