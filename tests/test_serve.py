"""`ramcli serve` (the gallery) and `ramcli search --html`, over the real CLI as a subprocess and real HTTP:
search pages, image pages, thumbnails, and the safety rules (ids only, no traversal, CSRF, a token off
loopback, a vanished file). The real-browser test is in ``test_serve_browser.py``."""

from __future__ import annotations

import http.cookiejar
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import make_photo, run_cli

MODEL = "tiny_ram_plus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A running `ramcli serve` and a cookie-keeping HTTP client for it."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                  _NoRedirect())

    def get(self, path: str) -> tuple[int, str, bytes]:
        return self._send(urllib.request.Request(f"http://127.0.0.1:{self.port}{path}"))

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str, bytes]:
        data = urllib.parse.urlencode(fields).encode()
        return self._send(urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method="POST"))

    def _send(self, req: urllib.request.Request) -> tuple[int, str, bytes]:
        try:
            with self.opener.open(req) as resp:
                return resp.status, resp.headers.get("content-type", ""), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("content-type", ""), err.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 303 is an answer to look at, not to follow


def serve(index: Path, *extra: str) -> Iterator[Served]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ramcli", "serve", "--index", str(index), "--port", str(port),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:  # no fixed deadline: a loaded machine starts slowly; a dead server ends the wait
            if proc.poll() is not None:
                raise AssertionError(f"ramcli serve exited {proc.returncode}: {proc.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield Served(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def library(tmp_path: Path, tiny_model) -> dict:
    root = tmp_path / "lib"
    photos = [make_photo(root / f"p{i}.jpg", (200 + 10 * i, 150), seed=40 + i, quality=90) for i in range(4)]
    index = tmp_path / "i.db"
    result = run_cli("tag", "-m", MODEL, "--index", str(index), "--threshold", "0", "--top-k", "3", "--json",
                     str(root))
    assert result.returncode == 0, result.stderr
    tags = {json.loads(x)["path"]: json.loads(x)["tags"] for x in result.stdout.splitlines()}
    return {"root": root, "photos": photos, "index": index, "tags": tags}


@pytest.fixture
def served(library: dict) -> Iterator[Served]:
    yield from serve(library["index"])


def _ids(html: bytes) -> list[str]:
    return re.findall(r'href="/photo/([0-9a-f]{32})', html.decode())


def test_search_page_grid_and_image_page(served: Served, library: dict) -> None:
    tag = library["tags"][str(library["photos"][0])][0]
    status, kind, html = served.get("/search?" + urllib.parse.urlencode({"q": tag}))
    assert status == 200 and kind.startswith("text/html")
    carrying = [p for p, t in library["tags"].items() if tag in t]
    paths = re.findall(r'data-path="([^"]+)"', html.decode())
    assert sorted(paths) == sorted(carrying)  # the same photos `ramcli search` finds
    cli = run_cli("search", tag, "--index", str(library["index"]), "--paths")
    assert cli.stdout.split() == paths  # and in the same order
    image = _ids(html)[0]
    status, kind, thumb = served.get(f"/thumb/{image}")
    assert status == 200 and kind == "image/jpeg" and thumb[:2] == b"\xff\xd8"
    status, _, big = served.get(f"/thumb/{image}?size=1024")
    assert status == 200 and big[:2] == b"\xff\xd8"
    status, _, page = served.get(f"/photo/{image}")
    text = page.decode()
    assert status == 200 and 'name="csrf"' in text and "keywords in:" in text
    assert all(f'data-tag="{t}"' in text for t in library["tags"][paths[0]])
    status, _, similar = served.get(f"/search?like={image}")
    assert status == 200 and len(re.findall(r"data-path=", similar.decode())) == 4


def test_ids_only_no_traversal_and_clean_404s(served: Served, library: dict) -> None:
    for path in ("/thumb/..%2F..%2Fetc%2Fpasswd", "/photo/..%2F..%2Fetc%2Fpasswd", "/thumb/%2Fetc%2Fpasswd",
                 "/photo/not-an-id", "/thumb/" + "0" * 32, "/photo/" + "f" * 32, "/search?like=" + "a" * 32,
                 "/thumb/" + "0" * 31 + "g"):
        status, _, body = served.get(path)
        assert status == 404, path
        assert b"root:" not in body
    status, _, _ = served.get("/../../etc/passwd")
    assert status == 404
    # a photo deleted on disk: its page and thumbnail are a clean 404, the rest of the gallery works
    _, _, html = served.get("/search?" + urllib.parse.urlencode({"q": library["tags"][str(library["photos"][1])][0]}))
    gone = library["photos"][1]
    ids = dict(zip(re.findall(r'data-path="([^"]+)"', html.decode()), _ids(html), strict=True))
    gone.unlink()
    status, _, page = served.get(f"/photo/{ids[str(gone)]}")
    assert status == 404 and b"not there any more" in page
    assert served.get(f"/thumb/{ids[str(gone)]}?size=1024")[0] == 404
    assert served.get("/")[0] == 200


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_state_changes_need_post_and_the_csrf_token(served: Served, library: dict) -> None:
    photo = library["photos"][0]
    tag = library["tags"][str(photo)][0]
    _, _, html = served.get("/search?" + urllib.parse.urlencode({"q": tag}))
    image = dict(zip(re.findall(r'data-path="([^"]+)"', html.decode()), _ids(html), strict=True))[str(photo)]
    before = photo.read_bytes()
    assert served.post(f"/photo/{image}/verdict", {"tag": tag, "verdict": "reject"})[0] == 403
    assert served.post(f"/photo/{image}/verdict", {"tag": tag, "verdict": "reject", "csrf": "guess"})[0] == 403
    query = urllib.parse.urlencode({"tag": tag, "verdict": "reject"})
    assert served.get(f"/photo/{image}/verdict?{query}")[0] == 405
    assert served.post("/add-tag", {"name": "lighthouse"})[0] == 403
    assert photo.read_bytes() == before
    _, _, page = served.get(f"/photo/{image}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.decode())[1]
    status, _, _ = served.post(f"/photo/{image}/verdict", {"tag": tag, "verdict": "reject", "csrf": csrf})
    assert status == 303
    out = subprocess.run(["exiftool", "-j", "-XMP-dc:Subject", str(photo)], capture_output=True, text=True, check=True)
    subjects = json.loads(out.stdout)[0].get("Subject", [])
    assert tag not in (subjects if isinstance(subjects, list) else [subjects])
    _, _, page = served.get(f"/photo/{image}")
    assert re.search(rf'data-tag="{re.escape(tag)}" class="rejected"', page.decode())


def test_a_token_off_loopback(library: dict) -> None:
    refused = run_cli("serve", "--index", str(library["index"]), "--host", "0.0.0.0", "--port", str(_free_port()))
    assert refused.returncode == 2 and "--token" in refused.stderr
    for served in serve(library["index"], "--host", "0.0.0.0", "--token", "s3cret"):
        assert served.get("/")[0] == 403
        assert served.get("/search?q=x&token=wrong")[0] == 403
        assert served.get("/?token=s3cret")[0] == 200
        assert served.get("/search?q=x")[0] == 200  # the cookie carries it from there


def test_search_html_contact_sheet(library: dict, tmp_path: Path) -> None:
    tag = library["tags"][str(library["photos"][0])][0]
    sheet = tmp_path / "sheet.html"
    res = run_cli("search", tag, "--index", str(library["index"]), "--html", str(sheet))
    assert res.returncode == 0, res.stderr
    text = sheet.read_text(encoding="utf-8")
    carrying = [p for p, t in library["tags"].items() if tag in t]
    assert text.count("data:image/jpeg;base64,") == len(carrying)
    assert all(p in text for p in carrying) and "http" not in text.split("<body>")[1]  # nothing to fetch
