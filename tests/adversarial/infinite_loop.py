# Loops forever inside a test. Expected: that test times out (CPU budget), the next test
# (run in a fresh child after the kill) passes.
def spin(x):
    while True:
        x += 1


def fine():
    return 2
