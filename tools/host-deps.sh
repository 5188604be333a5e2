#!/usr/bin/env bash
# Installs the Debian packages lvsagent's build, tests and demo need (idempotent).
# Run as root on Debian 12.  Skips apt entirely when everything is present.
set -euo pipefail
pkgs=(python3 python3-venv python3-dev python3-nftables nftables iproute2 gcc pkg-config
      libsystemd-dev keepalived tshark arping tcpdump procps openssl
      user-mode-linux)  # user-mode-linux: the stock UML, a test shows it dying on AMX hosts
# tshark asks whether non-root users may capture; answer no instead of prompting.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
status=0
"$(dirname "$0")/apt-ensure" host-deps "${pkgs[@]}" || status=$?
((status == 0 || status == 10)) || exit "$status"
# keepalived's package starts a system service with an empty config; the tests start their own.
((status == 10)) && { systemctl disable --now keepalived >/dev/null 2>&1 || true; }
exit 0
