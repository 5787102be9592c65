# Keeps the harness busy: a thread sends a plausible report for every test (so the run looks like
# it is progressing) while the main thread ignores the CPU-time signal and spins forever.
# Expected: each report is taken as the candidate's own claim (an error, never a pass), and once
# no test is left to report the job is killed by its CPU budget, measured over all of its
# processes: the job ends in about one test's budget, not at the wall deadline.
import json
import os
import signal
import struct
import threading
import time


def _reports(n):
    for i in range(n):
        body = json.dumps({"i": i, "s": "raised", "kind": "Forged", "cpu": 0.0, "wall": 0.0}).encode()
        os.write(3, struct.pack("<I", len(body)) + body)
        time.sleep(0.05)


def spin(n):
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
    threading.Thread(target=_reports, args=(n,), daemon=True).start()
    x = 0
    while True:
        x += 1
