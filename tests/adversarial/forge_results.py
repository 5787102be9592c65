# Finds the harness's result channel (a shared-memory region referenced from a caller's frame)
# and writes a forged "pass" for the running test, then exits before a value can be judged.
# Expected: the forgery is rejected (a split test can only report a value): not a pass.
import json
import mmap
import os
import struct
import sys


def forge():
    frame = sys._getframe(1)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if type(value) is mmap.mmap:
                used = struct.unpack_from("<Q", value, 0)[0]
                body = json.dumps({"i": 0, "s": "pass", "cpu": 0.0, "wall": 0.0}).encode()
                forged = struct.pack("<4sII", b"UCSB", 1, len(body)) + body
                value[used:used + len(forged)] = forged
                struct.pack_into("<Q", value, 0, used + len(forged))
                os._exit(0)
        frame = frame.f_back
    return "channel not found"


def fine():
    return 2
