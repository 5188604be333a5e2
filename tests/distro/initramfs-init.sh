#!/bin/busybox sh
# PID 1 of the Debian-kernel guest's initramfs (tests/distro/initramfs.py packs it with a
# static busybox and the modules listed in /modules, in load order).
#
# Its one job: load virtio, virtiofs and 9p, mount this machine's root (virtiofs tag "root",
# read-only) on /newroot and the run's shared directory (9p tag "shared", writable) at its own
# host path inside it, then hand over to the shared directory's `init` (guest-init.sh). Every failure
# is printed as "lvsagent-distro: initramfs: ..." and powers off at once, so the host runner
# reports the reason in seconds instead of waiting for its deadline.
bb=/bin/busybox
shared=${lvsagent_shared:-}

fail() {
    echo "lvsagent-distro: initramfs: FAILED: $*"
    $bb sync
    $bb poweroff -f
    # poweroff -f does not return; if it did, PID 1 must not exit (the kernel would panic).
    while :; do $bb sleep 60; done
}

# The KVM probe (qemu.py): reaching this line is all it asks.
if [ "${lvsagent_probe:-}" = 1 ]; then
    echo "lvsagent-distro: probe: ok"
    $bb poweroff -f
fi
$bb mount -t proc proc /proc || fail "cannot mount /proc"
$bb mount -t sysfs sysfs /sys || fail "cannot mount /sys"
$bb mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
while read -r module; do
    $bb insmod "/lib/$module.ko" || fail "insmod $module failed (see the lines above)"
done </modules
[ -n "$shared" ] || fail "no lvsagent_shared= on the kernel command line"
$bb mount -t virtiofs -o ro root /newroot || fail "cannot mount the host's root (virtiofs tag root)"
# The host reads the shared directory while the guest writes it: 9p without a cache.
$bb mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 shared "/newroot$shared" \
    || fail "cannot mount the shared directory $shared (9p tag shared)"
[ -x "/newroot$shared/init" ] || fail "no $shared/init"
echo "lvsagent-distro: initramfs: root mounted"
$bb mount --move /dev /newroot/dev || fail "cannot move /dev"
$bb umount /proc /sys
exec $bb switch_root /newroot "$shared/init"
