"""The gallery in a real browser: Debian's headless Chromium driven by Selenium against `ramcli serve` (a real
subprocess over a real tagged library). A person types a query, sees the thumbnails, opens a photo, rejects a
tag; exiftool then reads the keyword gone from the file, and a re-tag over the CLI does not bring it back.

With ``RAMCLI_SCREENSHOTS=DIR`` the test also saves the gallery and the photo page as PNGs (the README's
``docs/gallery.png`` and ``docs/photo.png`` are made this way).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import browser, chromium_available, free_port, serving, wait_for

from conftest import SHARED, make_photo, run_cli

MODEL = "tiny_ram_plus"

pytestmark = pytest.mark.skipif(chromium_available() is not None, reason=str(chromium_available()))


def _subjects(path: Path) -> list[str]:
    out = subprocess.run(["exiftool", "-j", "-XMP-dc:Subject", str(path)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)[0].get("Subject", [])
    return got if isinstance(got, list) else [got]


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_search_look_and_reject_in_a_browser(tmp_path: Path, tiny_model) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root = tmp_path / "Photos"
    demo = sorted((SHARED / "data" / "photos").glob("*.jpg")) if (SHARED / "data" / "photos").is_dir() else []
    root.mkdir()
    for src in demo:  # real photos where the shared data is there
        shutil.copyfile(src, root / src.name)  # writable copies: keywords go into the files
    for i in range(6 - len(demo)):
        make_photo(root / f"generated_{i}.jpg", (480, 360), seed=80 + i, quality=90)
    index = tmp_path / "library.db"
    tagged = run_cli("tag", "-m", MODEL, "--index", str(index), "--threshold", "0", "--top-k", "4", "--json",
                     str(root))
    assert tagged.returncode == 0, tagged.stderr
    tags = {json.loads(x)["path"]: json.loads(x)["tags"] for x in tagged.stdout.splitlines()}
    query = next(iter(tags.values()))[0]
    expected = sorted(p for p, t in tags.items() if query in t)
    shots = os.environ.get("RAMCLI_SCREENSHOTS")

    port = free_port()
    with serving([sys.executable, "-m", "ramcli", "serve", "--index", str(index), "--port", str(port)], port), \
            browser() as driver:
        driver.get(f"http://127.0.0.1:{port}/")
        box = wait_for(driver, "input[name=q]")[0]
        box.send_keys(query)
        box.submit()
        cards = wait_for(driver, ".card")
        assert sorted(c.get_attribute("data-path") for c in cards) == expected
        assert f"q={query.replace(' ', '+')}" in driver.current_url  # a plain GET URL to bookmark
        loaded = "return [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)"
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(loaded))  # every thumbnail really loaded
        if shots:
            driver.save_screenshot(str(Path(shots) / "gallery.png"))
        target = cards[0].get_attribute("data-path")
        cards[0].find_element(By.CSS_SELECTOR, "a").click()
        row = wait_for(driver, f'tr[data-tag="{query}"]')[0]
        assert query in _subjects(Path(target))
        if shots:
            driver.save_screenshot(str(Path(shots) / "photo.png"))
        row.find_element(By.CSS_SELECTOR, 'button[value="reject"]').click()
        wait_for(driver, f'tr[data-tag="{query}"].rejected')
    assert query not in _subjects(Path(target))  # exiftool: the keyword left the file
    again = run_cli("tag", "-m", MODEL, "--index", str(index), "--threshold", "0", "--top-k", "4", "--json",
                    "--retry-errors", str(root))
    assert again.returncode == 0, again.stderr
    assert query not in _subjects(Path(target))  # and a re-tag does not bring it back
    retag = run_cli("tags", "verdicts", query, "--index", str(index), "--json")
    assert [json.loads(x)["path"] for x in retag.stdout.splitlines()] == [target]
