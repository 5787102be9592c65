# Writes 1 GB to stdout (and some to stderr). Expected: killed at the output limit quickly, the
# pipe never stalls the child, the next test passes.
import sys


def flood():
    chunk = "x" * (1 << 20)
    for _ in range(1024):
        sys.stdout.write(chunk)
        sys.stderr.write("y")
    return 1


def fine():
    return 2
