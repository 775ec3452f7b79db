"""The temporary Prefect API server's own process, tethered to the process that started it.

::

    trigger / demo process ----- Popen ----->  python -m funcx_flows.prefect.api_process
       (owner, pid P)                            |- tether: PR_SET_PDEATHSIG(SIGTERM) [Linux,
                                                 |          when started from P's main thread]
                                                 |- watch thread: getppid() != P -> SIGTERM self,
                                                 |                then exit hard after GRACE_S
                                                 `- uvicorn: Prefect's API app (ephemeral mode)

A server started the usual way (Prefect's ``SubprocessASGIServer``) outlives an
owner killed with SIGKILL: nothing tells it, and it keeps ~200 MB and its port.
Here the kernel signals it when the owner dies (the death signal), and the watch
thread covers what that cannot: an owner whose starting thread ended, a platform
without ``prctl``, a server too busy to shut down gracefully.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_S = 0.25
GRACE_S = 10.0


def tether(parent: int, death_signal: bool) -> None:
    """End this process when ``parent`` dies (even by SIGKILL)."""
    if death_signal and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM),
                                                    0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was armed
        sys.exit(0)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="owner-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_S)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down gracefully ...
    time.sleep(GRACE_S)
    os._exit(1)  # ... or not at all: no one is left to stop it


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--owner", type=int, required=True, help="pid of the owning process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--death-signal", action="store_true",
                        help="arm PR_SET_PDEATHSIG (only if started from the owner's main "
                             "thread: the kernel fires it when the starting thread ends)")
    args = parser.parse_args(argv)
    tether(args.owner, args.death_signal)
    import uvicorn
    from prefect.server.api.server import create_app

    # As Prefect's own temporary server: no UI, only the services an ephemeral API needs.
    uvicorn.run(create_app(ephemeral=True, final=True), host="127.0.0.1", port=args.port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    main()
