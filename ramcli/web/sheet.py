"""`ramcli search … --html FILE`: a self-contained contact sheet (thumbnails inlined as data URIs) to share a
result set: one file, no server, opens in any browser."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from ramcli.index import Index
from ramcli.search import gallery
from ramcli.web.app import _env


def contact_sheet(index: Index, model: str, hits: list[Any], title: str) -> str:
    """The HTML of a sheet of ``hits`` (``search.ranking.Hit``); a hit whose file is gone shows no picture."""
    cards = []
    for h in hits:
        data = gallery.thumbnail(index, model, h.image, t=h.at) if h.image else None
        src = "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else ""
        cards.append({"path": h.path, "name": Path(h.path).name, "tags": h.tags, "score": h.score, "via": h.via,
                      "at": h.at, "src": src})
    return _env().get_template("sheet.html").render(title=title, cards=cards,
                                                    when=time.strftime("%Y-%m-%d %H:%M"))
