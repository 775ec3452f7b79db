"""``serve(handle_signals=True)`` gives the caller its signal handlers back: a
process that served triggers and goes on (a script, a test run) must still get
KeyboardInterrupt from Ctrl-C, not a call to a stopped loop's handler."""

from __future__ import annotations

import signal
import threading

from funcx_flows.triggers.serve import serve


def test_serving_with_signals_restores_the_callers_handlers():
    def mine(*_: object) -> None:
        pass

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = threading.Event()
        stop.set()  # nothing to serve: the loop ends at once
        serve(stop=stop, handle_signals=True)
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
