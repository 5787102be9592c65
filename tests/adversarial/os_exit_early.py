# Leaves with os._exit(0) before any assert can run. Expected: a program error, no pass.
import os


def answer():
    return 42


os._exit(0)
