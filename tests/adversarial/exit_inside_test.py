# Calls os._exit(0) and sys.exit(0) from inside the tested function. Expected: errors, never a pass.
import os
import sys


def leave_hard():
    os._exit(0)


def leave_soft():
    sys.exit(0)


def fine():
    return 2
