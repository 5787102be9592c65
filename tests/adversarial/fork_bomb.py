# A fork bomb bounded to 3000 forks, so a missing process cap fails the test instead of taking the
# machine down. Every child sleeps. Expected: far fewer than 3000 forks succeed, and no child
# survives the job.
import os
import time

forked = 0
for _ in range(3000):
    try:
        pid = os.fork()
    except OSError:
        continue
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    forked += 1


def forks():
    return forked
