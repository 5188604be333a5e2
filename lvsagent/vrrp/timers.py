"""VRRP timer formulas, per version, quoted from the RFCs.

All values are seconds as floats; the wire carries centiseconds (v3) or whole
seconds (v2), converted at the codec.
"""

from __future__ import annotations


def skew_time(version: int, priority: int, master_adver_interval: float) -> float:
    """Skew_Time: how much sooner a better backup claims mastership.

    RFC 3768 (v2): "Skew_Time: Time to skew Master_Down_Interval in seconds.
    Calculated as: ( (256 - Priority) / 256 )".
    RFC 5798 (v3): "Skew_Time: Time to skew Master_Down_Interval in
    centiseconds.  Calculated as: (((256 - priority) * Master_Adver_Interval)
    / 256)".
    """
    if version == 2:
        return (256 - priority) / 256.0
    return ((256 - priority) * master_adver_interval) / 256.0


def master_down_interval(version: int, priority: int, master_adver_interval: float) -> float:
    """Master_Down_Interval = 3 * (Master_)Adver_Interval + Skew_Time (RFC 3768 / RFC 5798)."""
    return 3 * master_adver_interval + skew_time(version, priority, master_adver_interval)
