"""The interface every tokenizer of ours offers, and the error they raise.

megatron-core's datasets read a fixed set of attributes from `config.tokenizer` (`vocab_size`,
`eod`, `pad`, `cls`, `sep`, `mask`, `inv_vocab` whose continuation pieces start with `##`, and
`unique_identifiers`, which they serialise into the dataset cache hash). We subclass
megatron-core's own abstract base so type checks and `BlendedMegatronDatasetConfig` accept ours.
"""

from collections import OrderedDict
from typing import Dict, List, Optional

from megatron.core.tokenizers import MegatronTokenizerBase


class TokenizerError(ValueError):
    """A tokenizer could not be built from the files it was given (missing, wrong kind, broken)."""


class LocalTokenizer(MegatronTokenizerBase):
    """Base for tokenizers loaded from local files only (nothing is fetched from a hub).

    Subclasses fill `_vocab` (token -> id) and implement `tokenize`/`detokenize`; special ids
    are looked up by name once in `__init__` and exposed read-only. An id that the vocabulary
    does not define raises `AttributeError`, which megatron-core's datasets treat as "absent".
    """

    def __init__(self, path: Optional[str], special_tokens: Dict[str, Optional[int]],
                 identifiers: Dict[str, object]) -> None:
        # The base copies every config entry onto self; pass none so our read-only
        # properties are not shadowed.
        super().__init__(path, {})
        self._special = dict(special_tokens)
        self._inv_vocab: Optional[Dict[int, str]] = None
        ids = OrderedDict()
        ids["class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        ids["tokenizer_path"] = path
        ids.update(identifiers)
        # megatron-core reads this as a plain attribute (json.dumps default=obj.unique_identifiers).
        self.unique_identifiers = ids
        self.padded_vocab_size: Optional[int] = None

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def vocab(self) -> Dict[str, int]:
        return self._vocab

    @property
    def inv_vocab(self) -> Dict[int, str]:
        if self._inv_vocab is None:
            self._inv_vocab = {i: t for t, i in self._vocab.items()}
        return self._inv_vocab

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def apply_chat_template(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no chat template")

    # --- special ids ------------------------------------------------------------------------
    def _special_id(self, name: str) -> int:
        value = self._special.get(name)
        if value is None:
            raise AttributeError(f"{type(self).__name__} has no '{name}' token")
        return value

    @property
    def eod(self) -> int:
        return self._special_id("eod")

    @property
    def pad(self) -> int:
        return self._special_id("pad")

    @property
    def cls(self) -> int:
        return self._special_id("cls")

    @property
    def sep(self) -> int:
        return self._special_id("sep")

    @property
    def mask(self) -> int:
        return self._special_id("mask")

    @property
    def bos(self) -> int:
        return self._special_id("bos")

    @property
    def eos(self) -> int:
        return self._special_id("eos")

    def tokenize(self, text: str) -> List[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detokenize(self, ids: List[int]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, path={self.path!r})"
