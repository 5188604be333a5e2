"""Logging: journal fields from records, the JOURNAL_STREAM check, the unchanged stderr format."""

from __future__ import annotations

import io
import logging
import os
import re
import syslog
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsagent.observe import journal
from lvsagent.observe.journal import (
    JournalHandler,
    field_name,
    fields,
    journal_fields,
    message_id,
    setup_logging,
    stderr_is_journal,
)


@pytest.fixture
def sent() -> Iterator[tuple[logging.Logger, list[dict[str, Any]]]]:
    """A logger whose records go to a JournalHandler that records what it would send."""
    entries: list[dict[str, Any]] = []
    logger = logging.getLogger("lvsagent.test-journal")
    handler = JournalHandler(send=lambda **kw: entries.append(kw))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, entries
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("LVSAGENT_INSTANCE", "LVSAGENT_INSTANCE"),
        ("lvsagent_rs", "LVSAGENT_RS"),
        ("lvsagent-loop.guard", "LVSAGENT_LOOP_GUARD"),
        ("_PID", "PID"),  # trusted fields are journald's alone
        ("9LIVES", "LIVES"),
        ("é", None),  # nothing valid left... "_" stripped
        ("X" * 70, "X" * 64),
    ],
)
def test_field_names_are_valid_journal_names(key: str, expected: str | None) -> None:
    assert field_name(key) == expected


def test_a_transition_carries_its_fields(sent: tuple[logging.Logger, list[dict[str, Any]]]) -> None:
    logger, entries = sent
    logger.warning(
        "%s: %s -> %s (%s)", "VI_1", "BACKUP", "MASTER", "no advert",
        extra=fields(instance="VI_1", state="MASTER", old_state="BACKUP", event="transition"),
    )  # fmt: skip
    (entry,) = entries
    assert entry["MESSAGE"] == "VI_1: BACKUP -> MASTER (no advert)"
    assert entry["LVSAGENT_INSTANCE"] == "VI_1"
    assert entry["LVSAGENT_STATE"] == "MASTER"
    assert entry["LVSAGENT_OLD_STATE"] == "BACKUP"
    assert entry["LVSAGENT_EVENT"] == "transition"
    assert entry["PRIORITY"] == str(syslog.LOG_WARNING)
    assert entry["SYSLOG_IDENTIFIER"] == "lvsagent"
    assert entry["LOGGER"] == "lvsagent.test-journal"
    assert entry["CODE_FILE"] == __file__
    assert entry["CODE_FUNC"] == "test_a_transition_carries_its_fields"
    assert isinstance(entry["CODE_LINE"], int)


def test_extras_cannot_replace_the_records_own_fields(
    sent: tuple[logging.Logger, list[dict[str, Any]]],
) -> None:
    logger, entries = sent
    extra = {"message": "forged", "PRIORITY": "0", "syslog_identifier": "x", "rs": None, "n": 3}
    logger.info("real", extra={"journal": extra})
    (entry,) = entries
    assert entry["MESSAGE"] == "real"
    assert entry["PRIORITY"] == str(syslog.LOG_INFO)
    assert entry["SYSLOG_IDENTIFIER"] == "lvsagent"
    assert "RS" not in entry  # None is left out
    assert entry["N"] == "3"  # values are text


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, syslog.LOG_DEBUG),
        (logging.INFO, syslog.LOG_INFO),
        (logging.WARNING, syslog.LOG_WARNING),
        (logging.ERROR, syslog.LOG_ERR),
        (logging.CRITICAL, syslog.LOG_CRIT),
        (logging.INFO + 5, syslog.LOG_NOTICE),  # NOTICE: routine, yet worth reading
        (logging.INFO + 2, syslog.LOG_INFO),
    ],
)
def test_priorities(
    sent: tuple[logging.Logger, list[dict[str, Any]]], level: int, priority: int
) -> None:
    logger, entries = sent
    logger.log(level, "x")
    assert entries[0]["PRIORITY"] == str(priority)


def test_an_exception_goes_into_the_message(
    sent: tuple[logging.Logger, list[dict[str, Any]]],
) -> None:
    logger, entries = sent
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("task died")
    message = entries[0]["MESSAGE"]
    assert message.startswith("task died\nTraceback")
    assert "RuntimeError: boom" in message


def test_the_default_sender_is_systemd_journal_send(monkeypatch: pytest.MonkeyPatch) -> None:
    import systemd.journal

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(systemd.journal, "send", lambda *a, **kw: calls.append((a, kw)))
    handler = setup_logging("info", journal=True)
    try:
        logging.getLogger("lvsagent.vrrp").warning("hello", extra=fields(instance="VI_1"))
    finally:
        logging.getLogger().removeHandler(handler)
    (args, kwargs) = calls[-1]
    assert args == ("hello",)
    assert kwargs["LVSAGENT_INSTANCE"] == "VI_1"
    assert kwargs["LOGGER"] == "lvsagent.vrrp"
    assert "MESSAGE" not in kwargs


def test_stderr_lines_keep_the_run_format() -> None:
    out = io.StringIO()
    handler = setup_logging("info", journal=False, stream=out)
    try:
        logging.getLogger("lvsagent.vrrp").warning("VI_1: BACKUP -> MASTER", extra=fields(x=1))
        logging.getLogger("lvsagent.vrrp").debug("not shown at info")
    finally:
        logging.getLogger().removeHandler(handler)
    line = out.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} lvsagent\.vrrp WARNING VI_1: BACKUP -> MASTER\n",
        line,
    ), line


def test_a_second_setup_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    first = setup_logging("info", journal=False, stream=io.StringIO())
    second = setup_logging("debug", journal=False, stream=io.StringIO())
    try:
        assert first not in root.handlers
        assert root.handlers == [*before, second]
        assert root.level == logging.DEBUG
    finally:
        root.removeHandler(second)


def _identity(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_stream_must_name_stderr_itself(tmp_path: Path) -> None:
    stream, other = tmp_path / "stream", tmp_path / "other"
    stream.write_text("")
    other.write_text("")
    with open(stream, "w") as f:
        fd = f.fileno()
        assert stderr_is_journal({"JOURNAL_STREAM": _identity(stream)}, fd)
        # Inherited by a child whose stderr went elsewhere: not the journal.
        assert not stderr_is_journal({"JOURNAL_STREAM": _identity(other)}, fd)
        assert not stderr_is_journal({}, fd)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, fd)
        assert not stderr_is_journal({"JOURNAL_STREAM": "1:x"}, fd)
    assert not stderr_is_journal({"JOURNAL_STREAM": _identity(stream)}, 987654)  # closed fd


@pytest.mark.parametrize(("forced", "kind"), [("journal", JournalHandler), ("stderr", None)])
def test_lvsagent_log_forces_a_mode(
    monkeypatch: pytest.MonkeyPatch, forced: str, kind: type | None
) -> None:
    monkeypatch.setenv("LVSAGENT_LOG", forced)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    handler = setup_logging(logging.INFO)
    try:
        if kind is None:
            assert type(handler) is logging.StreamHandler
        else:
            assert isinstance(handler, kind)
    finally:
        logging.getLogger().removeHandler(handler)


def test_fields_prefixes_names() -> None:
    assert fields(instance="VI_1", rs="10.0.0.1:80") == {
        "journal": {"LVSAGENT_INSTANCE": "VI_1", "LVSAGENT_RS": "10.0.0.1:80"}
    }
    assert journal.INSTANCE == "LVSAGENT_INSTANCE"


def test_each_event_type_has_a_fixed_message_id() -> None:
    record = logging.LogRecord("lvsagent.vrrp", 25, __file__, 1, "VI_1: BACKUP -> MASTER", (), None)
    record.journal = {"LVSAGENT_EVENT": "vrrp_transition"}
    entry = journal_fields(record, record.getMessage())
    # Documented in README: the same on every box and in every release.
    documented = "fdeb33b33d3f5a06aba137370c2d434f"
    assert entry["MESSAGE_ID"] == documented == message_id("vrrp_transition")
    assert entry["PRIORITY"] == str(syslog.LOG_NOTICE)
    assert message_id("health") != message_id("ipvs")
    plain = logging.LogRecord("lvsagent", logging.INFO, __file__, 1, "started", (), None)
    assert "MESSAGE_ID" not in journal_fields(plain, "started")
