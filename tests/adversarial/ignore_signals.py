# Ignores SIGALRM (what signal-based harnesses use) and every catchable timer signal, then spins.
# Expected: Timeout anyway.
import signal

signal.signal(signal.SIGALRM, signal.SIG_IGN)
signal.signal(signal.SIGPROF, signal.SIG_IGN)
signal.signal(signal.SIGVTALRM, signal.SIG_IGN)
signal.signal(signal.SIGXCPU, signal.SIG_IGN)


def spin():
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
    while True:
        pass


def fine():
    return 2
