"""Real-browser test helpers: headless Chromium driven by Selenium, and a web server run as a subprocess.

Why a real browser: ``ramcli serve`` is a web app, and what matters is what a person sees and can click
(the page's JavaScript, forms, layout), which an HTTP client alone cannot check. Why Debian's ``chromium``
with the system ``chromedriver``: CI reaches only Debian's mirrors and PyPI, so Selenium Manager must never
try to download a browser or a driver; giving Selenium both paths skips it entirely. Driver and browser
come from the same source package, so their versions always match.

* ``chromium_available()``: ``None`` when a browser test can run, else the reason, for ``pytest.skip``.
* ``browser()``: a headless Chromium whose viewport is ``width`` x ``height``, quit however the test ends.
* ``free_port()`` and ``serving()``: a server subprocess on a free port, ready when it answers HTTP, stopped
  (and its output shown) at the end.
* ``wait_for()``: the elements a CSS selector matches, waiting for at least one.

Selenium is imported inside the functions, not at the top, so that importing this module (and so collecting
the tests that use it) works where selenium is missing and ``chromium_available()`` can say so.

Typical use::

    reason = chromium_available()
    if reason:
        pytest.skip(reason)
    port = free_port()
    with serving([sys.executable, "-m", "ramcli", "serve", "--port", str(port)], port) as server, browser() as driver:
        driver.get(server.url)
        wait_for(driver, "form input[name=q]")[0].send_keys("cat")
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

# The names a distribution gives the browser: Debian ``chromium``, some others ``chromium-browser``.
# RAMCLI_CHROMIUM / RAMCLI_CHROMEDRIVER override the lookup (a browser outside PATH, a pinned build).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER_NAMES = ("chromedriver",)

# Slow, shared CI machines: a first page load can take tens of seconds while other jobs run, and a fixed
# short wait is a flaky test. These are ceilings, not sleeps: every wait returns as soon as it can.
PAGE_LOAD_TIMEOUT = 120.0
SCRIPT_TIMEOUT = 120.0


def _find(names: tuple[str, ...], env_var: str) -> str | None:
    """The first executable among ``names`` on PATH, or the path in ``env_var`` when set (and executable)."""
    override = os.environ.get(env_var)
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_binary() -> str | None:
    """Path of the Chromium executable, or None. Debian's /usr/bin/chromium is a launcher script; that is fine."""
    return _find(CHROMIUM_NAMES, "RAMCLI_CHROMIUM")


def chromedriver_binary() -> str | None:
    """Path of the chromedriver executable (Debian: package chromium-driver), or None."""
    return _find(CHROMEDRIVER_NAMES, "RAMCLI_CHROMEDRIVER")


def chromium_available() -> str | None:
    """None when browser tests can run here, else a one-line reason for ``pytest.skip``.

    Checks only what is cheap and certain (selenium importable, both executables present) so that test
    collection stays fast; a browser that is present but broken fails loudly in ``browser()`` instead of
    being skipped, because that is a real problem worth seeing.
    """
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    for var in ("RAMCLI_CHROMIUM", "RAMCLI_CHROMEDRIVER"):
        value = os.environ.get(var)
        if value and not os.access(value, os.X_OK):
            return f"{var}={value} is not an executable file"
    if chromium_binary() is None:
        return "no Chromium browser on PATH (apt-get install chromium, or set RAMCLI_CHROMIUM)"
    if chromedriver_binary() is None:
        return "no chromedriver on PATH (apt-get install chromium-driver, or set RAMCLI_CHROMEDRIVER)"
    return None


def _tail(path: Path, limit: int = 4000) -> str:
    """The last ``limit`` characters of a log file, for an error message (empty when unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


@contextmanager
def browser(*, width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    """A headless Chromium session whose page viewport is ``width`` x ``height`` CSS pixels.

    The flags, and why:

    * ``--headless=new``: the real browser without a display (the old headless mode is a separate,
      older renderer that behaves differently).
    * ``--no-sandbox``: Chromium refuses to start its sandbox as root, and CI runs as root.
    * ``--disable-dev-shm-usage``: containers often have a tiny /dev/shm; Chromium crashes when it fills.
    * ``--disable-gpu``: no GPU in CI; skips probing for one.
    * a temporary ``--user-data-dir``: no state shared between tests or with a person's own profile,
      and two sessions at once do not fight over a profile lock.
    * ``--force-device-scale-factor=1``, ``--hide-scrollbars``: screenshots the same size on every machine.
    * no first-run, background networking or component updates: there is no internet, and waiting on it
      only slows the start.

    The viewport is set with DevTools' ``Emulation.setDeviceMetricsOverride`` (what Puppeteer's viewport
    does), not by the window: new-headless Chromium keeps about 143 px of the ``--window-size`` for browser
    UI that is not drawn, and will not make a window narrower than 500 px, so phone widths would be
    impossible. The override belongs to this first tab and lasts across its navigations; a tab the page
    opens itself gets the window's size. Don't call ``set_window_size`` on it (ask here for the size).
    The driver is quit, and chromedriver stopped, however the block ends.
    """
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    reason = chromium_available()
    if reason:
        raise RuntimeError(f"browser(): {reason}")
    profile = Path(tempfile.mkdtemp(prefix="ramcli-chromium-"))
    log = profile.parent / f"{profile.name}-chromedriver.log"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()  # with the driver path below, Selenium Manager never runs
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--mute-audio",
    ):
        options.add_argument(arg)
    service = Service(executable_path=chromedriver_binary(), log_output=str(log))
    driver = None
    try:
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except WebDriverException as exc:
            raise RuntimeError(f"Chromium did not start: {exc.msg}\nchromedriver log:\n{_tail(log)}") from exc
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        driver.set_script_timeout(SCRIPT_TIMEOUT)
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):  # a crashed browser must not hide the test's own error
                driver.quit()
        with contextlib.suppress(Exception):
            service.stop()  # quit() already did this when it worked; a no-op then
        shutil.rmtree(profile, ignore_errors=True)
        with contextlib.suppress(OSError):
            log.unlink()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The OS picks it (bind to port 0), so parallel test runs do not collide on a fixed port. Another process
    could take it between this call and the server's bind; that is rare enough, and ``serving`` then fails
    with the server's own error, not a hang.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server(subprocess.Popen):
    """The server ``serving()`` runs: a ``Popen`` that also knows its ``url`` and can show its ``output()``."""

    url: str
    log_path: Path

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far (interleaved as written)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _answers(url: str, timeout: float) -> bool:
    """Whether an HTTP server answers ``url`` at all; any status (404, 500) counts as answering.

    Proxies are bypassed: an ``http_proxy`` in CI's environment must not swallow a request to 127.0.0.1.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # refused, reset, timed out, or a half-started server's garbage
        return False


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not exited within ``grace`` seconds.

    The group, not just the process: a server that starts workers or a reloader must not leave them behind.
    """
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, sig)
            elif sig == signal.SIGTERM:
                proc.terminate()
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def serving(
    cmd: list[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
    timeout: float = 180,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[Server]:
    """Run ``cmd`` (a server listening on 127.0.0.1:``port``) for the duration of the block.

    Ready means ``http://127.0.0.1:{port}{ready_path}`` gives any HTTP response: polling the real socket is
    the only signal that works for every server, and ``timeout`` is generous because a cold Python start
    that imports numpy, onnxruntime and friends can take a minute on a busy CI machine. If the process
    exits, or the timeout passes, before that, this raises with the server's output. ``env`` is added to
    (not substituted for) this process's environment, so PATH, HOME and the virtual environment still
    apply; output is unbuffered so that it is complete when shown.

    At the end the server is sent SIGTERM, then SIGKILL after 10 s. If the block raised, the server's
    output is attached to the exception (pytest shows it under the traceback) and echoed to stderr, which
    is usually where the reason for a browser test's failure is.
    """
    url = f"http://127.0.0.1:{port}{ready_path}"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    fd, log_name = tempfile.mkstemp(prefix="ramcli-server-", suffix=".log")
    log_path = Path(log_name)
    # A file, not a pipe: nobody reads a pipe while the test runs, and a server that logs every request
    # would block once the pipe's buffer is full.
    with os.fdopen(fd, "wb") as log_file:
        proc = Server(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # its own process group, so _stop reaches its children too
        )
    proc.url = url
    proc.log_path = log_path
    ready = False
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url, timeout=5):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {proc.returncode} before answering {url}\n"
                    f"command: {cmd}\noutput:\n{proc.output()[-8000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"server did not answer {url} within {timeout:g} s\n"
                    f"command: {cmd}\noutput:\n{proc.output()[-8000:]}"
                )
            time.sleep(0.1)
        ready = True
        yield proc
    except Exception as exc:
        if ready:  # the test failed: the server's side of the story (not-ready errors already carry it)
            _stop(proc)
            note = f"server output ({' '.join(cmd)}):\n{proc.output()[-8000:]}"
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(note)
            print(note, file=sys.stderr)
        raise
    finally:
        _stop(proc)
        with contextlib.suppress(OSError):
            log_path.unlink()


def wait_for(driver: WebDriver, css: str, timeout: float = 60) -> list[WebElement]:
    """The elements matching CSS selector ``css``, as soon as at least one exists (at most ``timeout`` s).

    An explicit wait instead of ``time.sleep`` or an implicit wait: it returns the moment the page is ready
    and fails with the selector and the page it was looking at, which says what went wrong.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css) or False)
    except TimeoutException as exc:
        raise TimeoutException(f"no element matched {css!r} within {timeout:g} s on {driver.current_url}") from exc


__all__ = [
    "Server",
    "browser",
    "chromedriver_binary",
    "chromium_available",
    "chromium_binary",
    "free_port",
    "serving",
    "wait_for",
]
