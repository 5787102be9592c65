# Returns objects that claim to equal anything: a plain class and an int subclass.
# Expected: both fail against the expected value.
class AlwaysEqual:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __hash__(self):
        return 0

    def __bool__(self):
        return True


class EvilInt(int):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = int.__hash__


def solve(x):
    return AlwaysEqual()


def solve_int(x):
    return EvilInt(0)
