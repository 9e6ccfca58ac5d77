"""lookalike: find, classify and group similar images.

>>> from lookalike import Index
>>> index = Index.build("photos/", labels="folders")
>>> index.search("query.jpg", k=5)
"""

from lookalike.errors import ImageError, LookalikeError
from lookalike.index import BuildReport, Index, Match, SearchResult

__version__ = "0.1.0"
__all__ = ["BuildReport", "ImageError", "Index", "LookalikeError", "Match", "SearchResult", "__version__"]
