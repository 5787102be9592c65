# Starts a non-daemon thread that keeps running (and printing) after its test returned.
# Expected: both tests pass, the job ends promptly, no process survives.
import threading
import time


def start():
    def forever():
        while True:
            print("still here", flush=True)
            time.sleep(0.001)

    threading.Thread(target=forever).start()
    return 1


def later():
    time.sleep(0.05)
    return 2
