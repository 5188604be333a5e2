"""The state directory (``state_dir``): files lvsagent must find again, written safely.

What lives there is trusted later: the saved sysctl originals are written back
into /proc/sys on a decommission.  So a file in it must be one lvsagent wrote,
and a write must land in it and nowhere else.  The rules, and why:

- The directory is opened once per operation (O_DIRECTORY | O_NOFOLLOW) and every
  file is reached relative to that descriptor, so a path swapped after the check
  (a symlink put in place of the directory or a file) is never followed.
- It must be owned by the user lvsagent runs as, or by root, and not writable by
  group or others: anyone else who can create files in it could plant the
  "originals" that a decommission restores, or a symlink where the temporary file
  goes.  This is ssh's StrictModes reasoning; a world-writable /tmp fails it.
- ``state_dir`` itself may be a symlink only if that symlink is owned by us or
  root: an operator's deliberate link (/run/lvsagent -> elsewhere) is honoured, a
  link someone else planted in a shared directory is not.
- Files are created 0600 whatever the umask (the saved values are ours alone), and
  written to a temporary name, fsync-ed and renamed over the old one, so a crash or
  a full disk never leaves a half-written file; a failed write removes its temporary.

Every failure is a StateDirError naming the directory or file, the errno and what
to do; the CLI exits 73 (EX_CANTCREAT) on it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = ["StateDirError", "open_lock_file", "read_private", "remove_private", "write_private"]

FILE_MODE = 0o600
DIR_MODE = 0o755
READ_LIMIT = 1 << 20  # bytes; the saved sysctls are a few hundred


class StateDirError(OSError):
    """The state directory or a file in it cannot be used safely; the message says why."""


def _advice(code: int | None) -> str:
    if code in (errno.EACCES, errno.EPERM):
        return f"it must be writable by the user lvsagent runs as (uid {os.geteuid()})"
    if code == errno.EROFS:
        return "that file system is read-only (under systemd only /run/lvsagent is writable)"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "that file system is full; free some space"
    return "set state_dir to a directory of lvsagent's own, such as /run/lvsagent"


def _fail(where: str, exc: OSError, doing: str) -> StateDirError:
    code = exc.errno
    name = errno.errorcode.get(code, "?") if code is not None else "?"
    return StateDirError(
        code, f"state_dir: cannot {doing} {where}: {exc.strerror} ({name}); {_advice(code)}"
    )


def _refuse(path: str, why: str) -> StateDirError:
    return StateDirError(
        errno.EPERM, f"state_dir {path} is not safe to use: {why}; lvsagent changed nothing"
    )


def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def _open_dir(path: str, create: bool) -> int | None:
    """The checked directory's descriptor; with ``create`` made (0755) if missing, else None."""
    if create:
        try:
            os.makedirs(path, DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise _fail(path, exc, "create") from exc
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:
        # A symlink fails O_NOFOLLOW with ELOOP, or O_DIRECTORY first with ENOTDIR.
        link = os.lstat(path)
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not stat.S_ISLNK(link.st_mode):
            raise _fail(path, exc, "open") from exc
        if not _trusted(link.st_uid):
            raise _refuse(
                path, f"it is a symlink owned by uid {link.st_uid}, neither lvsagent's nor root's"
            ) from exc
        try:
            fd = os.open(path, flags)
        except OSError as inner:
            raise _fail(path, inner, "open") from inner
    info = os.fstat(fd)
    if not _trusted(info.st_uid):
        os.close(fd)
        raise _refuse(
            path,
            f"it is owned by uid {info.st_uid}, neither lvsagent's ({os.geteuid()}) nor root's"
            f" (chown {os.geteuid()} {path}, or remove it and lvsagent makes a new one)",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        mode = stat.S_IMODE(info.st_mode)
        raise _refuse(path, f"group or others may write to it (mode {mode:04o}); chmod go-w")
    return fd


def write_private(directory: str, name: str, data: bytes) -> None:
    """Replace ``directory/name`` with ``data``, mode 0600, atomically."""
    fd = _open_dir(directory, create=True)
    assert fd is not None
    tmp = f"{name}.tmp"
    where = os.path.join(directory, name)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)  # left by a crash: O_EXCL below wants it gone
        try:
            out = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                FILE_MODE,
                dir_fd=fd,
            )
            try:
                os.fchmod(out, FILE_MODE)  # the umask may have taken bits away; exactly 0600
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
                os.fsync(out)
            finally:
                os.close(out)
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise _fail(where, exc, "write") from exc
    finally:
        os.close(fd)


def read_private(directory: str, name: str) -> bytes | None:
    """The contents of ``directory/name``; None if it does not exist."""
    fd = _open_dir(directory, create=False)
    if fd is None:
        return None
    where = os.path.join(directory, name)
    try:
        try:
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse(where, "it is a symlink, not a file lvsagent wrote") from exc
            raise _fail(where, exc, "read") from exc
        try:
            if not stat.S_ISREG(os.fstat(src).st_mode):
                raise _refuse(where, "it is not a regular file")
            with os.fdopen(src, "rb", closefd=False) as file:
                return file.read(READ_LIMIT)
        except OSError as exc:
            if isinstance(exc, StateDirError):
                raise
            raise _fail(where, exc, "read") from exc
        finally:
            os.close(src)
    finally:
        os.close(fd)


def remove_private(directory: str, name: str) -> None:
    """Remove ``directory/name`` if it exists (never what a symlink points at)."""
    fd = _open_dir(directory, create=False)
    if fd is None:
        return
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _fail(os.path.join(directory, name), exc, "remove") from exc
    finally:
        os.close(fd)


def open_lock_file(directory: str, name: str) -> tuple[int, bool]:
    """``directory/name`` opened for an flock, created 0644 if missing: (descriptor, writable).

    The directory passes the same checks as for the saved sysctls. A lock file left by a run
    as another user (root by hand, before the unit) is opened read-only: an flock needs no
    write access.
    """
    dfd = _open_dir(directory, create=True)
    assert dfd is not None
    where = os.path.join(directory, name)
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            return os.open(name, flags | os.O_CREAT | os.O_RDWR, 0o644, dir_fd=dfd), True
        except PermissionError as denied:
            try:
                return os.open(name, flags | os.O_RDONLY, dir_fd=dfd), False
            except OSError:
                raise _fail(where, denied, "open") from denied
    except StateDirError:
        raise
    except OSError as exc:
        raise _fail(where, exc, "open") from exc
    finally:
        os.close(dfd)
