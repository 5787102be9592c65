# Reads the expected answer from the caller's frames and from every object in the heap, the way a
# model can cheat a harness that evaluates `assert f(x) == y` in the candidate's process.
# Expected: there is nothing to find; the test fails.
import gc
import sys


def cheat(x):
    seen = []
    frame = sys._getframe(1)
    while frame is not None:
        seen.extend(frame.f_code.co_consts)
        seen.extend(frame.f_locals.values())
        frame = frame.f_back
    seen.extend(o for o in gc.get_objects() if type(o) in (list, tuple))
    best = None
    for item in seen:
        for v in (item if isinstance(item, (list, tuple)) else (item,)):
            if type(v) is int and 987000 < v < 988000:
                best = v
    return best
