"""GracefulStop: first signal sets a flag, second abandons; handlers restored."""

from __future__ import annotations

import os
import signal
import time

import pytest

from heretic.errors import ExitCode, InterruptedRun
from heretic.lifecycle.signals import GracefulStop


def wait_for(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_first_signal_requests_stop_and_check_raises() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        stop.check()  # nothing requested yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_for(lambda: stop.requested)
        with pytest.raises(InterruptedRun) as err:
            stop.check()
        assert err.value.exit_code == ExitCode.INTERRUPTED
        assert "SIGTERM" in err.value.message
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_signal_abandons_now() -> None:
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert wait_for(lambda: stop.requested)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            wait_for(lambda: False, 5.0)  # the handler raises while we wait


def test_outside_main_thread_installs_nothing() -> None:
    import threading

    result: dict[str, object] = {}

    def body() -> None:
        with GracefulStop() as stop:
            result["requested"] = stop.requested

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    assert result == {"requested": False}
    assert signal.getsignal(signal.SIGTERM) is before
