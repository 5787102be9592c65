# Looks for a secret the test put in the pool's own environment: os.environ, /proc/*/environ,
# /proc/*/cmdline. Expected: nothing found.
import os


def find_secret():
    marker = "UCODER_TEST_SECRET"
    if marker in os.environ:
        return os.environ[marker]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for name in ("environ", "cmdline"):
            try:
                with open("/proc/%s/%s" % (pid, name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if marker.encode() in data:
                return data.decode("latin-1")[:200]
    return None
