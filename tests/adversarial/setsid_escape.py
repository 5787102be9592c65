# Double-forks a grandchild that calls setsid to leave the job's session and process group,
# then sleeps and would write a file much later. Expected: the test passes, and the grandchild
# does not survive the job.
import os
import time


def escape():
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(120)
            open("/tmp/ucoder_sandbox_late.txt", "w").write("late")
        os._exit(0)
    os.waitpid(pid, 0)
    return "escaped?"
