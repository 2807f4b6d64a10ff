"""Plain helpers for tests/data (a unique module name: `conftest` is ambiguous on sys.path)."""

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was not amused!",
    "Dr. Smith went to Washington in 1999. He stayed there.\nThen he left for Boston.",
    "Tokenization splits unaffable words into pieces. Café au lait is French.",
    "A third document, with commas; semicolons: and a question? Yes.",
]

WORDPIECE_TOKENS = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(".,;:!?'\"-()")
    + [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    + ["the", "quick", "brown", "fox", "jump", "##s", "over", "lazy", "dog", "it", "was", "not",
       "am", "##used", "token", "##ization", "split", "word", "into", "piece", "he", "there",
       "then", "left", "for", "boston", "washington", "in", "cafe", "au", "lait", "is", "french",
       "una", "##ffa", "##ble", "dr", "smith", "went", "to", "stayed", "The", "A", "It"]
)


def load_tool(name: str):
    """Import tools/<name>.py as a module (tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # worker processes pickle its functions by module name
    spec.loader.exec_module(module)
    return module
