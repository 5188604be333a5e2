#!/usr/bin/env bash
# Installs the Debian packages lvsagent's build, tests and demo need (idempotent).
# Run as root on Debian 12.  Skips apt entirely when everything is present.
set -euo pipefail
pkgs=(python3 python3-venv python3-dev python3-nftables nftables iproute2 gcc pkg-config
      libsystemd-dev keepalived tshark arping tcpdump procps
      user-mode-linux)  # user-mode-linux: the stock UML, a test shows it dying on AMX hosts
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "host-deps: installing ${missing[*]}"
# tshark asks whether non-root users may capture; answer no instead of prompting.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# keepalived's package starts a system service with an empty config; the tests start their own.
systemctl disable --now keepalived >/dev/null 2>&1 || true
