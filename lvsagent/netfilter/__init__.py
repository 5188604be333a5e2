"""The loop guard's kernel state: lvsagent's nftables table, the sysctls, the VIPs on lo.

ruleset.py and spec.py are pure (spec -> JSON transaction, readback -> table);
nft.py, sysctl.py and loopback.py are the adapters.  Which one the daemon calls
when: the bypass goes in before the VIP goes, and out after the gratuitous ARP
(README, "Loop guard").
"""

from lvsagent.netfilter.nft import NftError, NftGuard
from lvsagent.netfilter.ruleset import TABLE, TABLE_LABEL
from lvsagent.netfilter.spec import GuardedService, GuardMode, GuardSpec, desired_sysctls
from lvsagent.netfilter.sysctl import (
    DEFAULT_SAVED_PATH,
    Change,
    SysctlError,
    apply_sysctls,
    restore_sysctls,
)

__all__ = [
    "DEFAULT_SAVED_PATH",
    "TABLE",
    "TABLE_LABEL",
    "Change",
    "GuardMode",
    "GuardSpec",
    "GuardedService",
    "NftError",
    "NftGuard",
    "SysctlError",
    "apply_sysctls",
    "desired_sysctls",
    "restore_sysctls",
]
