# Unbounded recursion, first with Python's limit (RecursionError), then with the limit lifted so
# the C stack overflows (the process dies). Expected: Error(RecursionError), then Killed, then the
# next test passes in a fresh child.
import sys


def down(n):
    return down(n + 1)


def deeper():
    sys.setrecursionlimit(10**8)
    return down(0)


def fine():
    return 2
