#!/usr/bin/env bash
# Build, once per machine, the user-mode Linux kernel of the lvsagent kernel lab.
#
# Why: the host kernel has no IPVS, and Debian's stock user-mode-linux has IPVS but no
# nf_tables for ip/inet nor NAT. So we build UML from Debian's linux-source-6.1 with the
# options in uml.config, all built in.
#
# The result is cached OUTSIDE the clone, keyed by the sha256 of uml.config, uml-patches/ and the
# linux-source version, so CI runs on the same machine (each in a fresh clone) build it once:
#     ${LVSAGENT_CACHE:-/var/cache/lvsagent}/uml-<key>/linux   (+ config, build.log)
# The build runs in a temporary directory under the cache and the finished directory is
# renamed into place only on success: a half-built kernel is never found by the runner.
#
# Usage: tests/kernel/build-uml.sh        (as root; 5-15 min on 2 cores the first time)
# Progress goes to stderr; the LAST stdout line is the path of the kernel binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/uml.config
# Fixes for bugs of UML itself that the lab hits, applied in name order (patch -p1).
# Byte order, whatever the caller's locale: uml.py hashes them in sorted() order.
export LC_ALL=C
patches=("$here"/uml-patches/*.patch)
cache_root=${LVSAGENT_CACHE:-/var/cache/lvsagent}
source_pkg=linux-source-6.1
source_tar=/usr/src/$source_pkg.tar.xz
# Build tools, plus what the lab's own scripts call inside the guest.
packages=("$source_pkg" flex bison bc libelf-dev gcc make libc6-dev xz-utils perl patch
          ipvsadm nftables iproute2 python3)

say() { printf 'build-uml: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

ensure_packages() {
    local status=0
    "$here/../../tools/apt-ensure" build-uml "${packages[@]}" || status=$?
    ((status == 0 || status == 10)) || die "cannot install: ${packages[*]}"
}

# Lines of uml.config as "NAME y" (wanted built in) or "NAME n" (wanted off).
wanted_options() {
    sed -nE -e 's/^(CONFIG_[A-Za-z0-9_]+)=y[[:space:]]*$/\1 y/p' \
            -e 's/^# (CONFIG_[A-Za-z0-9_]+) is not set[[:space:]]*$/\1 n/p' "$fragment"
}

# Every option of uml.config must hold in the final .config: olddefconfig silently drops
# an option whose dependencies are unmet, and a lab without, say, NFT_NAT fails far later
# with an obscure EOPNOTSUPP.
verify_config() {
    local config=$1 name want bad=0
    while read -r name want; do
        if [[ $want == y ]]; then
            grep -qx "$name=y" "$config" \
                || { say "missing: $name=y (have: $(grep -E "^(# )?$name[= ]" "$config" || echo absent))"; bad=1; }
        else
            ! grep -qE "^$name=[ym]$" "$config" || { say "should be unset: $name"; bad=1; }
        fi
    done < <(wanted_options)
    return "$bad"
}

[[ -r $fragment ]] || die "no $fragment"
ensure_packages
[[ -r $source_tar ]] || die "$source_tar not found although $source_pkg is installed"

version=$(dpkg-query -W -f='${Version}' "$source_pkg")
key=$( { cat "$fragment" "${patches[@]}"; printf '%s %s\n' "$source_pkg" "$version"; } \
      | sha256sum | cut -c1-16)
dest=$cache_root/uml-$key

if [[ -x $dest/linux ]]; then
    say "cached ($source_pkg $version, key $key)"
    echo "$dest/linux"
    exit 0
fi

mkdir -p "$cache_root"
# One build per machine at a time; a second caller waits, then finds the cached kernel.
exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
    say "another build holds $cache_root/.build.lock; waiting for it"
    flock 9
fi
if [[ -x $dest/linux ]]; then
    say "built meanwhile by another caller"
    echo "$dest/linux"
    exit 0
fi
rm -rf "$dest"  # a leftover without a kernel binary is not a cache entry

work=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
make_pid=
# The compile runs in the background (for the progress lines): stop it with us.  Written so
# that nothing in the trap can fail under set -e: a failing `kill` of the finished make
# ended the trap early, with exit status 1 and the build tree left behind, after a
# successful build.
trap 'if [[ -n $make_pid ]]; then kill "$make_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
trap 'exit 130' INT   # so that the EXIT trap removes the build tree on ^C or TERM too
trap 'exit 143' TERM
log=$work/build.log
failed_log=$cache_root/uml-$key.failed.log
fail() {
    cp "$log" "$failed_log" 2>/dev/null || true
    say "error: $*"
    if [[ -s $log ]]; then
        say "last lines of the log (whole log: $failed_log):"
        tail -n 40 "$log" >&2
    fi
    exit 1
}

start=$SECONDS
say "building UML from $source_pkg $version in $work (key $key); log: $log"
say "this takes 5-15 min on 2 cores"
tar -xJf "$source_tar" -C "$work" || fail "cannot unpack $source_tar"
src=$work/$source_pkg
[[ -d $src ]] || fail "$source_tar did not unpack to $source_pkg/"
for p in "${patches[@]}"; do
    say "applying ${p##*/}"
    patch -p1 -d "$src" <"$p" >>"$log" 2>&1 || fail "${p##*/} does not apply"
done

# The kernel's own make, not the caller's: `make -s` (make demo's quiet sub-make) passes
# "s" down in MAKEFLAGS, Kbuild then prints no "  CC" lines and the progress counts none.
kmake() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make "$@"; }
{
    kmake -C "$src" ARCH=um defconfig
    while read -r name want; do
        if [[ $want == y ]]; then
            "$src/scripts/config" --file "$src/.config" --enable "${name#CONFIG_}"
        else
            "$src/scripts/config" --file "$src/.config" --disable "${name#CONFIG_}"
        fi
    done < <(wanted_options)
    kmake -C "$src" ARCH=um olddefconfig
} >>"$log" 2>&1 || fail "configuring failed"
verify_config "$src/.config" || fail "the options above did not end up in .config"
say "config verified: $(wanted_options | wc -l) options hold; compiling with -j$(nproc)"

# A line at least every PROGRESS_EVERY seconds, so a first run never looks hung: files
# compiled so far (make's CC lines) against a full build's count for uml.config.
PROGRESS_EVERY=30
OBJECTS_EXPECTED=1050
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$src" -j"$(nproc)" ARCH=um linux >>"$log" 2>&1 &
make_pid=$!
while kill -0 "$make_pid" 2>/dev/null; do
    # tail --pid returns as soon as make ends; timeout ends the wait after PROGRESS_EVERY s.
    timeout "$PROGRESS_EVERY" tail --pid="$make_pid" -f /dev/null || true
    kill -0 "$make_pid" 2>/dev/null || break
    built=$(grep -c '^  CC ' "$log" || true)
    pct=$((built * 100 / OBJECTS_EXPECTED)); ((pct > 99)) && pct=99
    say "compiling: $((SECONDS - start)) s so far, $built objects (~$pct %)"
done
wait "$make_pid" || fail "make failed"
make_pid=
[[ -x $src/linux ]] || fail "make succeeded but left no $src/linux"

out=$work/out
mkdir "$out"
mv "$src/linux" "$out/linux"
cp "$src/.config" "$out/config"
printf '%s %s\nkey %s\n' "$source_pkg" "$version" "$key" >"$out/SOURCE"
elapsed=$((SECONDS - start))
say "built in $((elapsed / 60)) min $((elapsed % 60)) s"
cp "$log" "$out/build.log"
mv -T "$out" "$dest"   # atomic: the runner sees a whole directory or none
rm -f "$failed_log"
echo "$dest/linux"
