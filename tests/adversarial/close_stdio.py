# Closes stdout and stderr (and stdin) before the tests run. Expected: results still arrive.
import os

os.close(0)
os.close(1)
os.close(2)


def square(x):
    return x * x
