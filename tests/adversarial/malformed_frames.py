# Writes reports that a careless reader would choke on: a CPU figure of 10**400, nesting 100,000
# deep, a length prefix of 4 GiB, bytes that are not UTF-8. Each goes to every descriptor the
# child holds, and the child exits. Expected: each is a protocol violation of this job alone (the
# test is killed); the worker survives and the next test runs in a fresh child.
import os
import struct


def _spray(body):
    frame = struct.pack("<I", len(body)) + body
    for fd in range(3, 64):
        try:
            os.write(fd, frame)
        except OSError:
            pass
    os._exit(0)


def huge_cpu():
    _spray(b'{"i": 0, "s": "pass", "cpu": 1' + b"0" * 400 + b"}")


def deep():
    _spray(b'{"i": 1, "s": "v", "v": ' + b"[" * 100000 + b"]" * 100000 + b"}")


def huge_length():
    for fd in range(3, 64):
        try:
            os.write(fd, struct.pack("<I", 0xFFFFFFFF) + b"{}")
        except OSError:
            pass
    os._exit(0)


def not_utf8():
    _spray(b'{"i": 3, "s": "v", "v": ["s", "\xff\xfe"]}')


def fine():
    return 2
