"""Small helpers shared by the client tests."""

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], *, seconds: float = 30.0) -> bool:
    """Poll `condition`; the bound only keeps a broken test from hanging, it is not what is tested."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
