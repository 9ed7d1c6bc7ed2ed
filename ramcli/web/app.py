"""The gallery web app (`ramcli serve`): search, a grid of thumbnails, a page per image, confirm/reject and
add-tag. Starlette (routing, forms, responses) and Jinja2 (server-rendered HTML, autoescaped), no JavaScript
build: a person looks at pictures; a search is a plain GET URL (``/search?q=red+bicycle``) to bookmark.

Every answer comes from the same calls the CLI makes (``Library.search``, ``Library.feedback``,
``Library.add_tag``) or from ``search.gallery`` (an image's page, its thumbnails). The app adds only the web:

* **Loopback by default.** Bound to 127.0.0.1 by the CLI; a non-loopback ``--host`` needs ``--token``, and then
  every request must carry it (``?token=`` once: it is kept in a cookie).
* **Images by index id only**: the 32-hex-digit image hash, checked before anything is read; no path
  parameter exists, so there is nothing to traverse. An image whose files are gone is a clean 404 page.
* **State changes are POST with a CSRF token** (a secret per server run in every form); anything else is
  refused with 403.
* One process, one thread for the index: endpoints are ``async`` and run their (short, blocking) work
  inline, so the index connection and the loaded text encoder live in one thread for the server's life;
  a search after the first one answers without loading anything.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ramcli.errors import RamcliError
from ramcli.library import Library

COOKIE = "ramcli_token"


@dataclass
class _State:
    """What lives as long as the server: the library, its secrets, and (opened on first use, in the one
    thread that serves) the index and its searcher."""

    lib: Library
    token: str | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    index: Any = None
    searcher: Any = None

    def ix(self) -> Any:
        if self.index is None:
            self.index = self.lib.open_index()
        return self.index

    def search(self) -> Any:
        if self.searcher is None:
            from ramcli.search.ranking import open_searcher

            self.searcher = open_searcher(self.ix(), self.lib.model_name)
        return self.searcher

    def changed(self) -> None:
        """After a write through the library (a verdict, a new tag): the searcher's vocabulary is stale."""
        self.searcher = None

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = self.searcher = None


def _env() -> Environment:
    env = Environment(loader=PackageLoader("ramcli.web", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["moment"] = _moment
    return env


def _moment(t: float | None) -> str:
    if t is None:
        return ""
    s = int(t)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def create_app(lib: Library, *, token: str | None = None) -> Starlette:
    """The app over ``lib``; with ``token``, every request must carry it."""
    state = _State(lib, token)
    env = _env()

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(csrf=state.csrf, request=request, **ctx)
        return HTMLResponse(html, status_code=status)

    def not_found(request: Request, what: str) -> HTMLResponse:
        return render(request, "error.html", 404, title="Not found", message=what)

    async def home(request: Request) -> Response:
        return await search(request)

    async def search(request: Request) -> Response:
        from ramcli.search import gallery
        from ramcli.search.ranking import SearchOptions, like_embedding

        q = (request.query_params.get("q") or "").strip()
        like = request.query_params.get("like") or ""
        form = {k: request.query_params.get(k) or "" for k in ("q", "in", "since", "until", "tag", "not_tag")}
        opts = SearchOptions(limit=_int(request.query_params.get("n"), 60),
                             under=(Path(form["in"]),) if form["in"] else (), since=form["since"] or None,
                             until=form["until"] or None, tags=tuple(t for t in [form["tag"]] if t),
                             not_tags=tuple(t for t in [form["not_tag"]] if t))
        hits, error, like_page = [], None, None
        try:
            ix = state.ix()
            if like:
                like_page = gallery.page(ix, state.search().model, like)
                if like_page is None:
                    return not_found(request, "no such image in the index")
                path = next((p.path for p in like_page.places if p.exists), like_page.places[0].path)
                hits = state.search().like(like_embedding(state.search(), Path(path)), opts)
            elif q:
                hits = state.search().search(q, opts)
        except RamcliError as err:
            error = str(err)
        cards = [{"id": h.image, "path": h.path, "name": Path(h.path).name, "tags": h.tags, "score": h.score,
                  "via": h.via, "at": h.at} for h in hits if h.image]
        return render(request, "search.html", form=form, cards=cards, error=error, like=like_page,
                      photos=_count(state), title=q or ("similar" if like else "ramcli"))

    async def photo(request: Request) -> Response:
        from ramcli.search import gallery

        image_id = request.path_params["image_id"]
        if not gallery.valid_id(image_id):
            return not_found(request, "not an image id")
        got = gallery.page(state.ix(), state.search().model, image_id)
        if got is None:
            return not_found(request, "no such image in the index")
        if not any(p.exists for p in got.places):
            return not_found(request, "its file is not there any more: " + ", ".join(p.path for p in got.places))
        at = _float(request.query_params.get("t"))
        return render(request, "photo.html", page=got, at=at, title=Path(got.places[0].path).name,
                      back=request.headers.get("referer") or "/")

    async def thumb(request: Request) -> Response:
        from ramcli.search import gallery

        image_id = request.path_params["image_id"]
        size = _int(request.query_params.get("size"), gallery.SIZES[0], most=max(gallery.SIZES))
        data = gallery.thumbnail(state.ix(), state.search().model, image_id, size=size,
                                 t=_float(request.query_params.get("t")))
        if data is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def verdict(request: Request) -> Response:
        from ramcli.search import gallery

        form = await request.form()
        image_id = request.path_params["image_id"]
        if not _csrf_ok(form.get("csrf"), state.csrf):
            return PlainTextResponse("forbidden: missing or wrong CSRF token", status_code=403)
        kind, tag = str(form.get("verdict") or ""), str(form.get("tag") or "").strip()
        got = gallery.page(state.ix(), state.search().model, image_id) if gallery.valid_id(image_id) else None
        if got is None:
            return not_found(request, "no such image in the index")
        if kind not in ("confirm", "reject") or not tag:
            return PlainTextResponse("a verdict is confirm or reject, on a tag", status_code=400)
        paths = [p.path for p in got.places if p.exists]
        if not paths:
            return not_found(request, "its file is not there any more")
        try:
            for _ in state.lib.feedback(kind, tag, paths):  # writes the files, as `ramcli tags reject` does
                pass
        except RamcliError as err:
            return PlainTextResponse(str(err), status_code=400)
        finally:
            state.changed()
        return RedirectResponse(f"/photo/{image_id}", status_code=303)

    async def add_tag(request: Request) -> Response:
        form = await request.form()
        if not _csrf_ok(form.get("csrf"), state.csrf):
            return PlainTextResponse("forbidden: missing or wrong CSRF token", status_code=403)
        name = str(form.get("name") or "").strip()
        described = [d.strip() for d in str(form.get("descriptions") or "").splitlines() if d.strip()]
        if not name:
            return PlainTextResponse("give the tag a name", status_code=400)
        try:
            for _ in state.lib.add_tag(name, described):  # applied library-wide from stored embeddings
                pass
        except RamcliError as err:
            return PlainTextResponse(str(err), status_code=400)
        finally:
            state.changed()
        return RedirectResponse("/search?" + urlencode({"q": name}), status_code=303)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        state.close()

    app = Starlette(routes=[
        Route("/", home), Route("/search", search), Route("/photo/{image_id}", photo),
        Route("/thumb/{image_id}", thumb), Route("/photo/{image_id}/verdict", verdict, methods=["POST"]),
        Route("/add-tag", add_tag, methods=["POST"]),
    ], lifespan=lifespan)

    if token is not None:
        inner = app

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                request = Request(scope)
                given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
                if not secrets.compare_digest(given.encode(), token.encode()):
                    await PlainTextResponse("forbidden: this gallery needs its token (?token=...)",
                                            status_code=403)(scope, receive, send)
                    return
                if request.query_params.get("token"):  # keep it for the pages that follow
                    async def send_with_cookie(message: Any) -> None:
                        if message["type"] == "http.response.start":
                            cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/".encode()
                            message.setdefault("headers", []).append((b"set-cookie", cookie))
                        await send(message)

                    await inner(scope, receive, send_with_cookie)
                    return
            await inner(scope, receive, send)

        return guarded  # type: ignore[return-value]
    return app


def _csrf_ok(given: object, expected: str) -> bool:
    return isinstance(given, str) and secrets.compare_digest(given.encode(), expected.encode())


def _int(value: str | None, default: int, *, most: int = 1000) -> int:
    with contextlib.suppress(TypeError, ValueError):
        return max(1, min(int(value or ""), most))
    return default


def _float(value: str | None) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return float(value or "")
    return None


def _count(state: _State) -> int:
    with contextlib.suppress(RamcliError):
        return sum(n for _, n in state.ix().models())
    return 0
