#!/usr/bin/env bash
# Installs what the dashboard's browser test needs: Debian's headless-capable Chromium, which
# Playwright for Python drives through executable_path (tests/integration/test_web_browser.py);
# Playwright's own browser download is never used. Idempotent: does nothing when
# /usr/bin/chromium is already there.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

[ -x /usr/bin/chromium ]
