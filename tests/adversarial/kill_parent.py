# Tries to kill its parent, PID 1 of its namespace and every process it can signal.
# Expected: nothing it can reach; the test passes and the worker is not replaced.
import os
import signal

for target in (os.getppid(), 1, -1):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError:
        pass


def alive():
    return "alive"
