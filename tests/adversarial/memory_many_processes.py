# Stays under the per-process address-space limit but not under the job's: three processes each
# touch 600 MB at once. Expected: the job's memory cgroup (1 GiB) stops it, so at most one of the
# three can finish, and the job's memory peak stays within its limit.
import os
import time


def hogs(n):
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                block = bytearray(600 << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(0.5)
                os._exit(0)
            except BaseException:
                os._exit(1)
        pids.append(pid)
    done = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            done += 1
    return done
