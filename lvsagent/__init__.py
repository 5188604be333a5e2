"""lvsagent: VRRP and IPVS for the two-box LVS design.

The version lives here, not only in a package's metadata, because the Debian
package installs the code into a private directory without pip's metadata:
``lvsagent --version`` and the ``lvsagent_build_info`` series read it from here.
pyproject.toml reads it from here too.
"""

__version__ = "0.1.0"
