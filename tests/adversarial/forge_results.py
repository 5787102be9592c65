# Looks for the harness's result channel among its open descriptors and writes a forged "pass"
# report for the running test on each, in the worker's own framing, then exits before a value
# can be judged. Expected: a split test can only report a value, so the forgery is a protocol
# violation of this job: the test is killed, not passed, and the next test runs in a fresh child.
import json
import os
import struct


def forge():
    body = json.dumps({"i": 0, "s": "pass", "cpu": 0.0, "wall": 0.0}).encode()
    frame = struct.pack("<I", len(body)) + body
    for fd in range(3, 64):
        try:
            os.write(fd, frame)
        except OSError:
            pass
    os._exit(0)


def fine():
    return 2
