#!/bin/sh
# PID 1 of the Debian-kernel guest once its root is mounted (tests/distro/qemu.py copies this
# into the run's shared directory as `init`; initramfs-init.sh switches to it).
#
# The root is this machine's own, read-only over 9p: the repository, the venv and every tool
# are at their host paths. This script gives the guest private writable /tmp, /run and
# /dev/shm, records which kernel modules the kernel itself loaded before anything ran
# (DIR/modules-at-boot: the tests assert that lvsagent's modules are not among them), then
# runs DIR/run.sh with its output in DIR/output, writes its status to DIR/status and powers
# off. DIR is lvsagent_shared= from the kernel command line (the kernel hands unknown
# name=value parameters to init as environment variables). PID 1 never exits: every path
# ends in poweroff.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
shared=${lvsagent_shared:-}
keep=${lvsagent_keep:-}
unset lvsagent_shared lvsagent_keep lvsagent_distro

power_off() {
    sync
    poweroff -f -f
    echo o >/proc/sysrq-trigger
    while :; do sleep 60; done
}

fail() {
    echo "lvsagent-distro: init: FAILED: $*"
    [ -n "$shared" ] && echo "$*" >>"$shared/init-error"
    power_off
}

mount_on() {  # TYPE TARGET OPTIONS
    mkdir -p "$2" && mount -t "$1" -o "$3" "$1" "$2" || fail "cannot mount $1 on $2"
}

echo "lvsagent-distro: init: started"
mount_on proc /proc nosuid,nodev,noexec
mount_on sysfs /sys nosuid,nodev,noexec
mount_on devpts /dev/pts nosuid,noexec,mode=0620,ptmxmode=0666
mount_on tmpfs /dev/shm nosuid,nodev
# A work tree under /tmp or /run (a CI clone in /tmp) is parked on /dev/shm while those get
# their tmpfs, then bind-mounted back at its own path.
if [ -n "$keep" ]; then
    mkdir -p /dev/shm/keep && mount --bind "$keep" /dev/shm/keep || fail "cannot keep $keep"
fi
mount_on tmpfs /tmp nosuid,nodev,mode=1777
mount_on tmpfs /run nosuid,nodev,mode=0755
if [ -n "$keep" ]; then
    mkdir -p "$keep" && mount --bind /dev/shm/keep "$keep" || fail "cannot remount $keep"
fi
mount_on cgroup2 /sys/fs/cgroup nosuid,nodev,noexec

[ -n "$shared" ] || fail "no lvsagent_shared= on the kernel command line"
[ -r "$shared/run.sh" ] || fail "no $shared/run.sh"
cp /proc/modules "$shared/modules-at-boot" || fail "cannot write to $shared"

hostname lvsagent-distro 2>/dev/null || true
ip link set lo up || fail "ip link set lo up failed"

/bin/sh "$shared/run.sh" </dev/null >"$shared/output" 2>&1
status=$?
echo "$status" >"$shared/status.new" && mv "$shared/status.new" "$shared/status"
power_off
