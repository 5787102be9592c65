# Connects to a listener the test opened on 127.0.0.1:{{PORT}} (loopback only).
# Expected: the connection fails inside the sandbox and the listener never sees it.
import socket


def reach():
    try:
        with socket.create_connection(("127.0.0.1", {{PORT}}), timeout=2) as s:
            s.sendall(b"hello from the sandbox")
        return "connected"
    except OSError:
        return "blocked"
