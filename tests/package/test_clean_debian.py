"""`apt install ./lvsagent_*.deb` on a clean Debian 12, and `apt purge` after it.

The kernel lab's guest (test_package.py) runs on this machine's root, where much is
installed already; here the root is a minimal Debian 12 (debootstrap's minbase, made
once into the cache), so apt has to bring every dependency the package declares:
python3, python3-nftables, python3-systemd, python3-prometheus-client, systemd.  Each
run works on an overlay over that base, in a mount namespace of its own, so the base
stays clean and nothing is left mounted.  Needs root and Debian's package registry
(`make test-deb-clean`; not part of `make test`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lvsagent import __version__

ROOT = Path(__file__).resolve().parents[2]
DEB = ROOT / "build" / "deb" / f"lvsagent_{__version__}_all.deb"
CACHE = Path(os.environ.get("LVSAGENT_CACHE", "/var/cache/lvsagent"))
BASE = CACHE / "bookworm-minbase"
APT_CACHE = CACHE / "bookworm-apt"  # downloads and package lists, kept between runs

# Runs as root in the overlay's chroot.  Each check prints a line; the test reads them.
INSIDE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q /tmp/lvsagent.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
echo "version: $(lvsagent --version)"
echo "user: $(getent passwd lvsagent | cut -d: -f1,7)"
lvsagent check --config /usr/share/doc/lvsagent/examples/lvsagent.example.toml >/dev/null 2>&1
echo "check example: $?"
python3 - <<'EOF'
import importlib, pkgutil, sys
sys.path.insert(0, "/usr/lib/lvsagent")
import lvsagent
names = [m.name for m in pkgutil.walk_packages(lvsagent.__path__, "lvsagent.")]
for name in names + ["nftables", "systemd.daemon", "systemd.journal", "prometheus_client"]:
    importlib.import_module(name)
print(f"imported: {len(names)} modules, nftables, systemd, prometheus_client")
EOF
set +e
lvsagent status >/dev/null 2>&1
echo "status without a daemon: $?"
lvsagent bogus >/dev/null 2>&1
echo "usage error: $?"
set -e
dpkg-query -L lvsagent >/tmp/files
apt-get purge -y -q lvsagent >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; exit 1; }
left=0
while read -r path; do
    if [ -f "$path" ] && [ ! -d "$path" ]; then echo "left: $path"; left=$((left + 1)); fi
done </tmp/files
for dir in /usr/lib/lvsagent /usr/share/lvsagent /usr/share/doc/lvsagent /etc/lvsagent; do
    if [ -e "$dir" ]; then echo "left: $dir"; left=$((left + 1)); fi
done
getent passwd lvsagent && left=$((left + 1))
getent group lvsagent && left=$((left + 1))
echo "left after purge: $left"
"""

# Runs as root in a new mount namespace on the host: the overlay, /dev and /proc, the chroot.
SETUP = r"""
set -eu
work=$1 base=$2 aptcache=$3 deb=$4
mkdir -p "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/work" "$work/root"
root=$work/root
mkdir -p "$aptcache/archives/partial" "$aptcache/lists/partial"
mount --bind "$aptcache/archives" "$root/var/cache/apt/archives"
mount --bind "$aptcache/lists" "$root/var/lib/apt/lists"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/lvsagent.deb"
exec chroot "$root" /bin/sh -c "$5"
"""


def _base() -> None:
    """Debian 12 minbase, made once: debootstrap into a temporary name, renamed when done."""
    if (BASE / "usr" / "bin" / "apt-get").exists():
        return
    if shutil.which("debootstrap") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], check=True)
    partial = BASE.with_name(BASE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(partial)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    partial.rename(BASE)


@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap, mounts and chroot need root")
def test_apt_installs_and_purges_on_a_clean_debian_12(tmp_path: Path) -> None:
    built = subprocess.run(
        ["make", "-s", "--no-print-directory", "deb"], cwd=ROOT, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    _base()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", SETUP, "setup",
         str(tmp_path), str(BASE), str(APT_CACHE), str(DEB), INSIDE],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert lines["version"] == f"lvsagent {__version__}", out
    assert lines["user"] == "lvsagent:/usr/sbin/nologin", out
    assert lines["check example"] == "0", out
    assert lines["imported"].endswith("nftables, systemd, prometheus_client"), out
    assert lines["status without a daemon"] == "69", out
    assert lines["usage error"] == "64", out
    assert lines["left after purge"] == "0", out
