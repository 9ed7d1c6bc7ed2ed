#!/usr/bin/env bash
# Chromium and its chromedriver for the real-browser tests (tests/browser.py drives them with Selenium).
# Debian's packages, because CI reaches only Debian's mirrors and PyPI: Selenium Manager cannot download a
# browser here, and the two packages come from one source, so driver and browser versions always match.
# Idempotent: installs only what is missing, only as root with apt-get; otherwise says why it skipped.
# Never fails CI: without a browser the browser tests skip (with the reason), like the exiftool checks.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
browser_bin() { for b in chromium chromium-browser; do have "$b" && { echo "$b"; return 0; }; done; return 1; }

if browser_bin >/dev/null && have chromedriver; then
  echo "browser-deps: skipped, already installed: $("$(browser_bin)" --version 2>/dev/null | head -n1);" \
    "$(chromedriver --version 2>/dev/null | head -n1)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "browser-deps: skipped, not root (as root: apt-get install chromium chromium-driver); browser tests will skip"
  exit 0
fi
if ! have apt-get; then
  echo "browser-deps: skipped, no apt-get (install Chromium and chromedriver yourself); browser tests will skip"
  exit 0
fi

echo "browser-deps: installing chromium chromium-driver with apt-get"
if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
  && browser_bin >/dev/null && have chromedriver; then
  echo "browser-deps: installed $("$(browser_bin)" --version 2>/dev/null | head -n1); $(chromedriver --version | head -n1)"
else
  echo "browser-deps: chromium not installed; browser tests will skip"
fi
