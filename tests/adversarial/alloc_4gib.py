# Allocates 4 GiB. Expected: MemoryError under the address-space limit.
def hog():
    block = bytearray(4 << 30)
    return len(block)


def fine():
    return 2
