#!/usr/bin/env bash
# Install Debian's headless-capable Chromium (and its chromedriver, which the studio's browser test drives through
# Selenium) for the report screenshot test (tests/test_eval_report_render.py) and tests/test_studio_browser.py.
# Best effort and idempotent: exits 0 when Chromium is already there, and also when it cannot be
# installed (no apt-get, not root, no network); the test then skips and says why.
#   scripts/install_chromium.sh          prints the browser path when one is available
set -u
find_browser() {
  for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  done
  return 1
}
if find_browser >/dev/null && command -v chromedriver >/dev/null 2>&1; then find_browser; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: apt-get is not available; not installing Chromium" >&2; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_chromium: not root and no passwordless sudo; not installing Chromium" >&2; exit 0
  fi
else
  SUDO=""
fi
export DEBIAN_FRONTEND=noninteractive
# A stale package list makes the install fail with 404s; refresh it first (best effort).
$SUDO apt-get update -qq >/dev/null 2>&1 || echo "install_chromium: apt-get update failed; trying the cached lists" >&2
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null 2>&1; then
  echo "install_chromium: apt-get install chromium failed" >&2; exit 0
fi
find_browser || true
exit 0
