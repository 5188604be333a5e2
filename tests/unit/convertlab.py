"""keepalived.conf texts in memory for the converter's unit tests: a dict of files as the
converter's Source (includes and globs need no file system), and readers of its result.
"""

from __future__ import annotations

import fnmatch
import tomllib
from typing import Any

from lvsagent.config.loader import parse_config
from lvsagent.convert.conversion import Conversion, convert
from lvsagent.convert.lexer import Source

VRRP = """
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        192.0.2.100/24
    }
}
"""


def files_source(files: dict[str, str]) -> Source:
    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path].encode()

    def glob(pattern: str) -> list[str]:
        return sorted(p for p in files if fnmatch.fnmatchcase(p, pattern))

    return Source(read=read, glob=glob)


def run(text: str, config_id: str | None = None, **more: str) -> Conversion:
    files = {"/etc/keepalived/keepalived.conf": text, **more}
    result = convert("/etc/keepalived/keepalived.conf", files_source(files), config_id)
    if result.toml is not None:
        parse_config(result.toml, "converted.toml")  # always passes lvsagent check
    return result


def data(result: Conversion) -> dict[str, Any]:
    assert result.toml is not None, [str(f) for f in result.findings.sorted()]
    return tomllib.loads(result.toml)


def messages(result: Conversion, kind: str) -> list[str]:
    return [str(f) for f in result.findings.of(kind)]  # type: ignore[arg-type]
