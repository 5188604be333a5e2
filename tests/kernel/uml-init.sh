#!/bin/sh
# PID 1 of the lvsagent kernel lab (a user-mode Linux guest booted on the host's own root
# filesystem through hostfs), started by tests/kernel/uml.py.
#
# Why a shell script of our own rather than systemd: one command is run, so mounts plus
# `exec` is all the boot needed, and it takes well under a second.
#
# Contract with uml.py: the kernel command line carries lvsagent_shared=DIR (the kernel hands
# unknown name=value parameters to init as environment variables). DIR is a host directory,
# visible here at the same path because / is the host's /. This script first writes
# DIR/booted (the runner takes a guest without it, after a while, for dead), then runs DIR/run.sh
# (written by uml.py: environment, cwd and the command, shell-quoted), with its stdout and
# stderr going to DIR/output, writes its exit status to DIR/status, flushes, and powers off.
# Everything else the guest writes to the console goes to the host's console log, not to
# DIR/output. PID 1 must never exit (the kernel would panic): every path ends in poweroff.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
shared=${lvsagent_shared:-}
keep=${lvsagent_keep:-}
unset lvsagent_shared lvsagent_keep
[ -n "$shared" ] && : >"$shared/booted"

power_off() {
    sync
    # systemctl with -ff calls reboot(2) itself; systemd does not run here.
    poweroff -f -f
    # Last resort if that failed: ask the kernel directly (MAGIC_SYSRQ is built in).
    echo o >/proc/sysrq-trigger
    # Never return: PID 1 exiting panics the kernel; uml.py's timeout bounds this.
    while :; do sleep 60; done
}

fail() {
    echo "uml-init: $*" >&2
    [ -n "$shared" ] && [ -d "$shared" ] && echo "uml-init: $*" >>"$shared/init-error"
    power_off
}

mount_once() {  # TYPE TARGET [OPTIONS]
    mountpoint -q "$2" && return 0
    mkdir -p "$2" && mount -t "$1" -o "${3:-defaults}" "$1" "$2" || fail "cannot mount $1 on $2"
}

# /proc, /sys and a private /dev, /tmp and /run: the host's copies stay untouched (/dev is a
# devtmpfs the kernel mounted already; the check keeps this script correct without it).
mount_once proc /proc nosuid,nodev,noexec
mount_once sysfs /sys nosuid,nodev,noexec
mount_once devtmpfs /dev nosuid,mode=0755
mount_once devpts /dev/pts nosuid,noexec,mode=0620,ptmxmode=0666
mount_once tmpfs /dev/shm nosuid,nodev
# A work tree under /tmp or /run (a CI clone in /tmp) is parked on /dev/shm while those get
# their tmpfs, then bind-mounted back at its own path.
if [ -n "$keep" ]; then
    mkdir -p /dev/shm/keep && mount --bind "$keep" /dev/shm/keep || fail "cannot keep $keep"
fi
mount_once tmpfs /tmp nosuid,nodev,mode=1777
mount_once tmpfs /run nosuid,nodev,mode=0755
if [ -n "$keep" ]; then
    mkdir -p "$keep" && mount --bind /dev/shm/keep "$keep" || fail "cannot remount $keep"
fi
mount_once cgroup2 /sys/fs/cgroup nosuid,nodev,noexec

[ -n "$shared" ] || fail "no lvsagent_shared= on the kernel command line"
[ -r "$shared/run.sh" ] || fail "no $shared/run.sh"

hostname lvsagent-uml 2>/dev/null || true
# The root namespace's loopback: IPVS dests and local servers need it up.
ip link set lo up || fail "ip link set lo up failed"

/bin/sh "$shared/run.sh" </dev/null >"$shared/output" 2>&1
status=$?
# Write then rename: uml.py never reads a half-written status.
echo "$status" >"$shared/status.new" && mv "$shared/status.new" "$shared/status"
power_off
