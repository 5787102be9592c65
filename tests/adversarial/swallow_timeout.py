# Catches BaseException around a busy loop, so an in-process timeout exception is swallowed.
# Expected: Timeout from the parent's CPU-time backstop; the next test still passes.
def stubborn():
    while True:
        try:
            while True:
                pass
        except BaseException:
            continue


def fine():
    return 2
