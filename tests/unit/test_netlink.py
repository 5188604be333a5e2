"""lvsagent.netlink.pyroute: pyroute2 without its import-everything __init__, nothing broken.

Each case runs in a fresh interpreter, since the point is what a process has imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_daemon_does_not_import_pyroute2_whole() -> None:
    out = run(
        """
        import sys
        import lvsagent.daemon.app, lvsagent.cli
        whole = [m for m in ("pyroute2.ndb.main", "pyroute2.ipdb", "pyroute2.conntrack",
                             "pyroute2.plan9.client", "sqlite3") if m in sys.modules]
        print(whole)
        """
    )
    assert out == "[]"


def test_the_names_are_pyroute2s_own_classes() -> None:
    out = run(
        """
        import lvsagent.netlink.pyroute as n
        import pyroute2.iproute.linux, pyroute2.ipvs, pyroute2.netlink.exceptions
        print(n.AsyncIPRoute is pyroute2.iproute.linux.AsyncIPRoute,
              n.AsyncIPVS is pyroute2.ipvs.AsyncIPVS,
              n.NetlinkError is pyroute2.netlink.exceptions.NetlinkError)
        """
    )
    assert out == "True True True"


def test_top_level_names_still_work_and_load_the_package_once() -> None:
    out = run(
        """
        import sys
        import lvsagent.netlink.pyroute as n
        from pyroute2 import config                      # a subpackage: stays lean
        lean = "pyroute2.ndb.main" not in sys.modules
        from pyroute2 import AsyncIPVS, IPRoute, NetlinkError  # runs the real __init__
        import pyroute2
        print(lean, AsyncIPVS is n.AsyncIPVS, NetlinkError is n.NetlinkError,
              IPRoute.__name__, "pyroute2.ndb.main" in sys.modules,
              pyroute2.__version__ != "unknown", config is pyroute2.config)
        try:
            pyroute2.NoSuchThing
        except AttributeError as exc:
            print("AttributeError", exc)
        """
    )
    lines = out.splitlines()
    assert lines[0] == "True True True IPRoute True True True"
    assert lines[1] == "AttributeError module 'pyroute2' has no attribute 'NoSuchThing'"


def test_a_process_that_imported_pyroute2_first_keeps_it() -> None:
    out = run(
        """
        import pyroute2
        whole = pyroute2
        import lvsagent.netlink.pyroute as n
        import sys
        print(sys.modules["pyroute2"] is whole, n.AsyncIPRoute is whole.AsyncIPRoute)
        """
    )
    assert out == "True True"


def test_the_logger_is_set_up_as_the_real_init_does() -> None:
    out = run(
        """
        import logging
        import lvsagent.netlink.pyroute
        print([type(h).__name__ for h in logging.getLogger("pyroute2").handlers])
        """
    )
    assert out == "['NullHandler']"
