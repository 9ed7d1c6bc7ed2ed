"""ramcli: tag a photo library with RAM++ (Recognize Anything), then search it by what is in it.

The front door for scripts is :class:`ramcli.Library` (``from ramcli import Library``); it is
imported on first use, so ``ramcli --version`` and a tag-only search never pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Event", "Library", "SearchOptions", "TagOptions", "__version__"]

if TYPE_CHECKING:
    from ramcli.library import Library
    from ramcli.pipeline.events import Event
    from ramcli.pipeline.run import TagOptions
    from ramcli.search.ranking import SearchOptions

_LAZY = {"Library": "ramcli.library", "Event": "ramcli.pipeline.events", "TagOptions": "ramcli.pipeline.run",
         "SearchOptions": "ramcli.search.ranking"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ramcli' has no attribute {name!r}")
