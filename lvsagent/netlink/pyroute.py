"""The pyroute2 names lvsagent uses, imported without pyroute2's import-everything ``__init__``.

Why: ``import pyroute2`` (or ``from pyroute2 import AsyncIPRoute``) runs the package's
``__init__``, which imports every pyroute2 family (NDB with sqlite3, IPDB, conntrack,
ethtool, nl80211, plan9, unittest.mock through its mock sockets...): 373 modules and
22 MB of RSS, where the classes lvsagent needs cost 16 MB with their own modules. Issue #3
budgets the whole daemon at 60 MB with 1000 services x 10 real servers, and those 6 MB
are the difference (measured: `python -m tests.bench.ipvs`, rss_1000x10).

How: before the first pyroute2 import, ``pyroute2`` is registered as a bare package (its
path, without running ``__init__``), so ``pyroute2.iproute.linux`` and friends import on
their own. The package keeps working for anyone else in the process: the first access to a
top-level name that is not a submodule (``from pyroute2 import IPRoute`` in a test or a
plugin) runs the real ``__init__`` into the same module object, once. If pyroute2 was
imported in full before lvsagent, nothing changes.

The submodule paths below are those of every pyroute2 in pyproject.toml's range (0.9.5,
the first with AsyncIPVS, to 0.9.x); tests/unit/test_netlink.py fails if a release moves
them, and `make test-deps` runs it at both ends of the range.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PACKAGE = "pyroute2"


def _lean_package() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a package: the imports below raise the usual ImportError
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    loaded: list[bool] = []

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:  # a subpackage, as in pyroute2's own `from pyroute2 import config`
            return importlib.import_module(f"{PACKAGE}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{PACKAGE}.{name}":
                raise
        if not loaded:
            loaded.append(True)
            loader.exec_module(module)  # the real __init__, into this module: every name
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[PACKAGE] = module
    importlib.import_module(f"{PACKAGE}.config.log")  # the real __init__'s logger set-up


_lean_package()

# Imported after the lean package is in place (hence the noqa: E402).
from pyroute2.iproute.linux import AsyncIPRoute  # noqa: E402
from pyroute2.ipvs import AsyncIPVS  # noqa: E402
from pyroute2.netlink import (  # noqa: E402
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    nla,
)
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.generic import ipvs as genl_ipvs  # noqa: E402


@contextmanager
def os_errors() -> Iterator[None]:
    """Raise pyroute2's NetlinkError as the OSError it stands for, with the same errno.

    Why: in pyroute2 0.9.7 NetlinkError derives from Exception, not from OSError, so
    an ``except OSError`` around a pyroute2 call lets every kernel refusal through
    (an EBUSY from two dumps on one socket once stopped the daemon that way).  Every
    adapter wraps its pyroute2 calls in this, so that its callers handle one type.
    """
    try:
        yield
    except NetlinkError as exc:
        code = int(exc.code)
        message = exc.args[1] if len(exc.args) > 1 else os.strerror(code)
        raise OSError(code, str(message)) from exc


__all__ = [
    "NLM_F_ACK",
    "NLM_F_CREATE",
    "NLM_F_DUMP",
    "NLM_F_EXCL",
    "NLM_F_REQUEST",
    "AsyncIPRoute",
    "AsyncIPVS",
    "NetlinkError",
    "genl_ipvs",
    "nla",
    "os_errors",
]
