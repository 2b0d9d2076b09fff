#!/usr/bin/env bash
# Installs what the DNS discovery tests need (issue 6): BIND 9's `named` (the dynamic-update
# server the publisher talks to) and `dig` (the independent DNS client). Idempotent: does
# nothing when both are already on PATH. The tests start their own `named` on a loopback port,
# so the package's system service must never run: a temporary policy-rc.d (Debian's
# invoke-rc.d policy hook, exit 101 = "action forbidden") stops the postinst from starting it.
set -euo pipefail

if command -v named >/dev/null 2>&1 && command -v dig >/dev/null 2>&1; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends bind9 bind9-dnsutils >/dev/null

# Belt and braces on machines whose init does start services despite the policy.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now named.service >/dev/null 2>&1 || true
fi

command -v named >/dev/null && command -v dig >/dev/null
