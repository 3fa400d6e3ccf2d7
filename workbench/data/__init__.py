"""Text in: the character tokenizer and the corpora a fresh machine has."""

from workbench.data.corpora import CORPORA, DEFAULT_CORPUS, SPLITS, Corpus, load_corpus
from workbench.data.tokenizer import CharTokenizer

__all__ = ["CORPORA", "DEFAULT_CORPUS", "SPLITS", "CharTokenizer", "Corpus", "load_corpus"]
