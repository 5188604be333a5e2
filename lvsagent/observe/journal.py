"""Logging: structured journal entries under systemd, plain stderr lines elsewhere.

Why both: an operator filters transitions with
``journalctl -u lvsagent LVSAGENT_INSTANCE=VI_1 LVSAGENT_STATE=MASTER``, which
needs fields, not text; a developer running ``lvsagent run`` in a terminal
wants readable lines.  systemd tells a service that its stderr goes to the
journal by putting stderr's ``device:inode`` in ``JOURNAL_STREAM``
(systemd.exec(5)); only when that matches do we switch, so a shell started
from a unit (which inherits the variable but not the stream) keeps stderr.

A log call adds fields with ``extra=fields(instance=..., state=...)`` (or any
``extra={"journal": {...}}``); the stderr format ignores them.

Each event type (``LVSAGENT_EVENT``) has a fixed MESSAGE_ID, as systemd's own
messages do (``journalctl MESSAGE_ID=...`` finds every transition whatever its
words): a UUID derived from the event's name under lvsagent's namespace UUID,
so it never changes and a new event type gets one without a table to keep.

Levels say who must act: WARNING and worse only for trouble (a server down,
quorum lost, FAULT, IPVS refusing changes), so ``journalctl -p warning -u
lvsagent`` lists only trouble; routine changes an operator still wants to see
(a transition to MASTER or BACKUP, a server back up, a reload's changes, a
drain) are NOTICE, a level between INFO and WARNING that syslog has and
Python's logging lacks (added here as 25).  Sending uses
systemd-python's ``journal.send``, which drops silently when journald is
absent (systemd-python 235) and so never blocks or raises on the way out.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import syslog
import uuid
from collections.abc import Callable, Mapping
from typing import Any

IDENTIFIER = "lvsagent"
STDERR_FORMAT = "%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s"
STDERR_DATEFMT = "%Y-%m-%dT%H:%M:%S"

# The fields the operator filters on; log calls name them through fields().
INSTANCE = "LVSAGENT_INSTANCE"  # VRRP instance name
STATE = "LVSAGENT_STATE"  # the state entered (MASTER, BACKUP, FAULT, INIT)
OLD_STATE = "LVSAGENT_OLD_STATE"
EVENT = "LVSAGENT_EVENT"  # transition, health, loop_guard, reload, ...
SERVICE = "LVSAGENT_SERVICE"  # virtual service label
RS = "LVSAGENT_RS"  # real server address:port
LOOP_GUARD = "LVSAGENT_LOOP_GUARD"
REASON = "LVSAGENT_REASON"

# syslog's NOTICE, between INFO (20) and WARNING (30): routine but worth reading.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

# Every event's MESSAGE_ID is uuid5(EVENT_NAMESPACE, event): fixed, and documented in README.
EVENT_NAMESPACE = uuid.UUID("5b0f6c55-2c1e-4bd8-9a7e-1f4f3c6d8a21")
MESSAGE_ID = "MESSAGE_ID"


def message_id(event: str) -> str:
    """The MESSAGE_ID of an LVSAGENT_EVENT type, in journald's form (32 hex digits)."""
    return uuid.uuid5(EVENT_NAMESPACE, event).hex


# Set from the record by the handler; a log call's extras must not replace them.
_OWN_FIELDS = frozenset(
    {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "LOGGER", "CODE_FILE", "CODE_LINE", "CODE_FUNC"}
)
_INVALID = re.compile(r"[^A-Z0-9_]")
_MAX_FIELD_NAME = 64  # journald refuses longer names
_HANDLER_NAME = "lvsagent"


def fields(**values: object) -> dict[str, dict[str, object]]:
    """``extra=`` for a log call: ``fields(instance="VI_1")`` -> LVSAGENT_INSTANCE=VI_1."""
    return {"journal": {f"LVSAGENT_{name.upper()}": value for name, value in values.items()}}


def field_name(key: str) -> str | None:
    """A journal field name for ``key``, or None when nothing valid is left.

    journald accepts upper-case ASCII letters, digits and underscores, not
    starting with a digit or an underscore (a leading underscore marks
    trusted fields that only journald itself may set), at most 64 bytes.
    """
    name = _INVALID.sub("_", key.upper()).lstrip("_0123456789")
    return name[:_MAX_FIELD_NAME] or None


def priority(levelno: int) -> int:
    """syslog(3) priority for a logging level, rounding in-between levels down to the next."""
    if levelno >= logging.CRITICAL:
        return syslog.LOG_CRIT
    if levelno >= logging.ERROR:
        return syslog.LOG_ERR
    if levelno >= logging.WARNING:
        return syslog.LOG_WARNING
    if levelno >= NOTICE:
        return syslog.LOG_NOTICE
    if levelno >= logging.INFO:
        return syslog.LOG_INFO
    return syslog.LOG_DEBUG


def journal_fields(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """Every field of one entry: the record's own, then its ``journal`` extras.

    Values go to journald as text (None is left out); CODE_LINE stays an int
    because journal.send formats it itself.
    """
    out: dict[str, Any] = {}
    extra = getattr(record, "journal", None)
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            name = field_name(str(key))
            if name is None or name in _OWN_FIELDS or value is None:
                continue
            out[name] = str(value)
    if EVENT in out and MESSAGE_ID not in out:
        out[MESSAGE_ID] = message_id(out[EVENT])
    out.update(
        MESSAGE=message,
        PRIORITY=str(priority(record.levelno)),
        SYSLOG_IDENTIFIER=IDENTIFIER,
        LOGGER=record.name,
        CODE_FILE=record.pathname,
        CODE_LINE=record.lineno,
        CODE_FUNC=record.funcName,
    )
    return out


def _journal_send(**entry: Any) -> None:
    import systemd.journal as journal  # imported late: only a journald run needs the C extension

    message = entry.pop("MESSAGE")
    journal.send(message, **entry)


class JournalHandler(logging.Handler):
    """Sends each record as one native journal entry (not a line on the stderr stream).

    ``send`` is replaceable so that tests can see the fields without journald.
    """

    def __init__(self, send: Callable[..., None] | None = None) -> None:
        super().__init__()
        self._send = send or _journal_send
        # The message text without time, logger or level: the journal has those as fields.
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(**journal_fields(record, self.format(record)))
        except Exception:
            self.handleError(record)


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int | None = None) -> bool:
    """True when systemd connected stderr to the journal (JOURNAL_STREAM names it)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno() if fd is None else fd)
    except (OSError, ValueError):  # stderr closed or replaced by something without a fd
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup_logging(
    level: str | int, *, journal: bool | None = None, stream: Any = None
) -> logging.Handler:
    """Configure the root logger once; returns the handler it installed.

    ``journal=None`` decides by :func:`stderr_is_journal`; True or False forces
    it (tests, or ``LVSAGENT_LOG=journal|stderr`` in the environment).
    """
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    if journal is None:
        forced = os.environ.get("LVSAGENT_LOG", "")
        journal = {"journal": True, "stderr": False}.get(forced, stderr_is_journal())
    handler: logging.Handler
    if journal:
        handler = JournalHandler()
    else:
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT, datefmt=STDERR_DATEFMT))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:  # ours from an earlier call; others are left alone
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pyroute2 logs every netlink message at debug; ours are the ones an operator needs.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    return handler
