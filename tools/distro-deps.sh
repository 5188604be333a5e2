#!/usr/bin/env bash
# Installs what the Debian-kernel test layer (tests/distro, `make test-distro`) needs, as root
# on Debian 12 (idempotent; apt is not touched when everything is present):
#   linux-image-amd64  Debian's packaged kernel and its modules, booted under QEMU;
#   qemu-system-x86    the emulator (TCG; KVM where it really runs a guest);
#   busybox-static     the guest's initramfs (load the 9p modules, mount this machine's root);
#   ipvsadm            the tests' independent view of the IPVS table.
set -euo pipefail
pkgs=(linux-image-amd64 qemu-system-x86 busybox-static ipvsadm kmod)
status=0
"$(dirname "$0")/apt-ensure" distro-deps "${pkgs[@]}" || status=$?
((status == 0 || status == 10)) || exit "$status"
exit 0
