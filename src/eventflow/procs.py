"""Process-wide settings: children that do not outlive their parent, and the
garbage collector of a long-running service."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys

PR_SET_PDEATHSIG = 1

_heap_frozen = False


def signal_on_parent_death(sig: int) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies, however
    it dies (Linux; elsewhere nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)


def freeze_startup_heap() -> None:
    """Exempt every object alive now from later garbage collections.

    Called once a service has started: its modules, application, schemas and
    connection pools live as long as the process. Without this, each full
    collection walks all of them (tens of milliseconds with the API or a worker
    loaded, seen as end-to-end latency spikes every few seconds); after it, a full
    collection walks only what was allocated since. Collected first, so no garbage
    is frozen. Once per process: objects of a later start may become garbage."""
    global _heap_frozen
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect()
    gc.freeze()
