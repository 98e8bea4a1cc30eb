"""Child processes that do not outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import sys

PR_SET_PDEATHSIG = 1


def signal_on_parent_death(sig: int) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies, however
    it dies (Linux; elsewhere nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
