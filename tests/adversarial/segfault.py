# Reads kernel memory through ctypes (a guaranteed SIGSEGV, unlike address 0, which some hosts
# map). Expected: Killed; the next test passes.
import ctypes


def crash():
    return ctypes.string_at(0xFFFF800000000000, 16)


def fine():
    return 2
