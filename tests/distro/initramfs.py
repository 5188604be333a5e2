"""The guest's initramfs: busybox, the modules that reach the root file system, and an init.

Why our own: Debian's kernel has virtio, virtiofs and 9p as modules, so something must load
them before this machine's root can be mounted, and Debian's own initrd (initramfs-tools)
mounts no such root. Ours is a few MB built in well under a second on each run,
from files of this machine: ``/bin/busybox`` (busybox-static), the kernel's modules and
``modules.dep``, and ``initramfs-init.sh``.

Everything here but :func:`build` is pure: the dependency order from ``modules.dep`` text, and
the ``newc`` cpio archive (the format the kernel unpacks) from a list of entries.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "initramfs-init.sh"
BUSYBOX = Path("/bin/busybox")
# What mounting the root (virtiofs) and the shared directory (virtio-9p) needs; their
# dependencies come from modules.dep.
ROOT_MODULES = ("virtio_pci", "virtiofs", "9pnet_virtio", "9p")


class InitramfsError(Exception):
    """The initramfs cannot be built; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Entry:
    """One member of the archive: a directory, a regular file or a character device."""

    path: str  # relative, without a leading slash
    mode: int  # file type and permission bits, as st_mode
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node


def module_name(path: str) -> str:
    """``kernel/net/9p/9pnet_virtio.ko`` -> ``9pnet_virtio`` (modprobe spells - and _ alike)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """``modules.dep`` -> {name: (path, [dependency names])}."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        table[module_name(path)] = (path.strip(), [module_name(d) for d in deps.split()])
    return table


def load_order(
    wanted: Iterable[str], deps: Mapping[str, tuple[str, list[str]]]
) -> list[tuple[str, str]]:
    """(name, path) of ``wanted`` and everything they need, each after its dependencies.

    insmod, unlike modprobe, resolves nothing: a module loaded before one it uses fails with
    "Unknown symbol". Raises InitramfsError for a module this kernel does not have.
    """
    order: list[tuple[str, str]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name not in deps:
            raise InitramfsError(
                f"module {name} (needed by {' <- '.join(chain) or 'the guest'}) is not in"
                " this kernel's modules.dep: is it built in, or is linux-image-amd64 broken?"
            )
        seen.add(name)
        path, needs = deps[name]
        for dep in needs:
            visit(dep, (name, *chain))
        order.append((name, path))

    for name in wanted:
        visit(name.replace("-", "_"), ())
    return order


def _header(entry: Entry, ino: int, name: bytes) -> bytes:
    fields = (
        ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0,
        entry.rdev[0], entry.rdev[1], len(name) + 1, 0,
    )  # fmt: skip
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def cpio(entries: Sequence[Entry]) -> bytes:
    """A ``newc`` archive (cpio -H newc) of ``entries``, in order, with its trailer.

    Each member: a 110-byte header, the NUL-terminated name and the data, each padded to a
    multiple of 4 bytes. Parents must come before their members (the kernel creates in order).
    """
    out = bytearray()
    members = [*entries, Entry("TRAILER!!!", 0)]
    for ino, entry in enumerate(members, start=1):
        name = entry.path.encode()
        head = _header(entry, ino if entry.mode else 0, name) + name + b"\0"
        out += head + _pad(len(head)) + entry.data + _pad(len(entry.data))
    return bytes(out)


def directories(paths: Iterable[str]) -> list[Entry]:
    """Directory entries for every parent of ``paths``, parents first."""
    dirs: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return [Entry(d, stat.S_IFDIR | 0o755) for d in sorted(dirs, key=lambda d: d.count("/"))]


def build(release: str, modules_root: Path = Path("/lib/modules")) -> bytes:
    """The initramfs for kernel ``release``: busybox, the root's modules, /init, /modules."""
    moddir = modules_root / release
    try:
        deps = parse_modules_dep((moddir / "modules.dep").read_text())
        busybox = BUSYBOX.read_bytes()
    except OSError as exc:
        raise InitramfsError(
            f"{exc}: install linux-image-amd64 and busybox-static (tools/distro-deps.sh)"
        ) from exc
    order = load_order(ROOT_MODULES, deps)
    files = [
        Entry("init", stat.S_IFREG | 0o755, INIT_SCRIPT.read_bytes()),
        Entry("bin/busybox", stat.S_IFREG | 0o755, busybox),
        Entry("modules", stat.S_IFREG | 0o644, "".join(f"{n}\n" for n, _ in order).encode()),
        *(Entry(f"lib/{n}.ko", stat.S_IFREG | 0o644, (moddir / p).read_bytes()) for n, p in order),
    ]
    # The kernel gives init /dev/console as its stdio only if the node exists.
    nodes = [Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))]
    extra_dirs = [Entry(d, stat.S_IFDIR | 0o755) for d in ("proc", "sys", "newroot")]
    tree = [*files, *nodes]
    return cpio([*directories(e.path for e in tree), *extra_dirs, *tree])
