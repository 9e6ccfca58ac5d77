"""lookalike: find, classify and group similar images.

>>> from lookalike import Index
>>> index = Index.build("photos/", labels="folders")
>>> index.search("query.jpg", k=5)

The names below are loaded on first use (PEP 562): ``lookalike --help`` or ``lookalike.errors`` must not pay for
pyarrow, FAISS and the rest that :mod:`lookalike.index` brings in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lookalike.errors import ImageError, LookalikeError

if TYPE_CHECKING:
    from lookalike.build import BuildReport
    from lookalike.index import Index, Match, SearchResult

__version__ = "0.1.0"
__all__ = ["BuildReport", "ImageError", "Index", "LookalikeError", "Match", "SearchResult", "__version__"]
_FROM_INDEX = ("Index", "Match", "SearchResult")


def __getattr__(name: str) -> Any:
    if name in _FROM_INDEX:
        from lookalike import index

        return getattr(index, name)
    if name == "BuildReport":
        from lookalike.build import BuildReport

        return BuildReport
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
