# Patches what an in-child tolerance, membership or exception check would call (builtins.abs,
# math.isclose, tuple.__contains__ is not patchable, so a value with an always-true __eq__ and a
# module-level `abs`) and returns garbage. Expected: those forms are decided outside the child,
# where the patches do not exist: every test fails, none decided in child.
import builtins
import math

builtins.abs = lambda x: 0
math.isclose = lambda *a, **k: True


def abs(x):
    return 0


class Anything:
    def __eq__(self, other):
        return True

    def __hash__(self):
        return 0

    def __sub__(self, other):
        return 0

    def __rsub__(self, other):
        return 0

    def __float__(self):
        return 3.5


def area(r):
    return -1.0


def pick(x):
    return Anything()


def check_positive(x):
    return x
