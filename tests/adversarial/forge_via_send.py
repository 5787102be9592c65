# Uses the child's own `send` (found by walking up the stack) to claim that the program loaded and
# that every test passed, then exits. Expected: split tests can only come back as values, so each
# forged "pass" is a protocol violation: every test is killed, none passes.
import sys, os


def _forge():
    f = sys._getframe(1)
    while f is not None and "send" not in f.f_locals:
        f = f.f_back
    if f is None:
        return
    send = f.f_locals["send"]
    send({"p": "ok"})
    for i in range(8):
        send({"i": i, "s": "pass"})
    send({"done": True})
    os._exit(0)


_forge()


def solve(x):
    return None
