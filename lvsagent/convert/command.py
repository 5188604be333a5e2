"""The ``lvsagent convert`` verb: files in, TOML out, findings on stderr, a telling exit status.

Exit status: 0 when the TOML does everything the keepalived.conf did (notes may
still explain how), 3 when it was written with omissions (each listed, on
stderr and at the top of the TOML), 78 when the input was refused and nothing
was written.
"""

from __future__ import annotations

import os
import sys

from lvsagent.convert.conversion import convert
from lvsagent.convert.files import host_source
from lvsagent.convert.findings import EXIT_REFUSED

__all__ = ["cmd_convert", "default_config_id"]

EX_CANTCREAT = 73


def default_config_id() -> str:
    """keepalived's default: the node name up to its first dot."""
    return os.uname().nodename.split(".", 1)[0]


def cmd_convert(path: str, output: str | None, config_id: str | None) -> int:
    result = convert(path, host_source(), config_id or default_config_id())
    for finding in result.findings.sorted():
        print(finding, file=sys.stderr)
    if result.toml is None:
        errors = len(result.findings.of("error"))
        print(f"lvsagent: {path}: refused ({errors} error(s)); nothing was written",
              file=sys.stderr)
        return EXIT_REFUSED
    if output is None:
        sys.stdout.write(result.toml)
    else:
        try:
            with open(output, "w", encoding="utf-8") as file:
                file.write(result.toml)
        except OSError as exc:
            print(f"lvsagent: cannot write {output}: {exc.strerror}", file=sys.stderr)
            return EX_CANTCREAT
    omitted = len(result.findings.of("omitted"))
    where = output or "stdout"
    if omitted:
        print(f"lvsagent: {path}: converted to {where} WITH {omitted} setting(s) not converted "
              "(listed above); read them before you switch", file=sys.stderr)
    else:
        print(f"lvsagent: {path}: converted completely to {where}", file=sys.stderr)
    return result.exit_status
