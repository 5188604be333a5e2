"""keepalived's rise/fall counter of a vrrp_script (pure).

keepalived keeps one number per script, 0 .. rise + fall - 1, and calls the script
OK while it is at least ``rise``.  A success below ``rise - 1`` counts up; any
other success jumps to the top.  A failure above ``rise`` counts down; any other
failure drops to 0.  So an OK script goes KO after ``fall`` failures in a row,
and a KO one OK after ``rise`` successes in a row, whatever came before.

At start the number sits at ``rise`` with the verdict unknown: the first result
decides alone (a success is OK, a failure KO), which is keepalived's reading of
a script that has not run.  ``init_fail`` starts at 0 instead: KO until ``rise``
successes.
"""

from __future__ import annotations

__all__ = ["RiseFall"]


class RiseFall:
    def __init__(self, rise: int, fall: int, init_fail: bool = False) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be at least 1, got {rise} and {fall}")
        self.rise, self.fall = rise, fall
        self.count = 0 if init_fail else rise
        # None: no result yet (and no init_fail): neither OK nor KO.
        self.ok: bool | None = False if init_fail else None

    def record(self, success: bool) -> bool:
        """One run's result; True if the verdict changed (from unknown too)."""
        top = self.rise + self.fall - 1
        if success:
            self.count = self.count + 1 if self.count < self.rise - 1 else top
        else:
            self.count = self.count - 1 if self.count > self.rise else 0
        before, self.ok = self.ok, self.count >= self.rise
        return before != self.ok
