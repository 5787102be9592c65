# Writes and deletes files outside its working directory. {{VICTIM_DIR}} holds victim.txt, put
# there by the test. Expected: every attempt outside fails, the working directory is writable,
# and nothing outside changed.
import os
import shutil

VICTIM_DIR = "{{VICTIM_DIR}}"


def attempts():
    done = []
    actions = {
        "delete victim": lambda: os.remove(os.path.join(VICTIM_DIR, "victim.txt")),
        "overwrite victim": lambda: open(os.path.join(VICTIM_DIR, "victim.txt"), "w").write("pwned"),
        "create beside victim": lambda: open(os.path.join(VICTIM_DIR, "new.txt"), "w").write("pwned"),
        "remove victim dir": lambda: shutil.rmtree(VICTIM_DIR),
        "write /var/tmp": lambda: open("/var/tmp/ucoder_sandbox_escape.txt", "w").write("x"),
        "write /dev/shm": lambda: open("/dev/shm/ucoder_sandbox_escape.txt", "w").write("x"),
        "write /etc": lambda: open("/etc/ucoder_sandbox_escape", "w").write("x"),
        "chmod /etc/passwd": lambda: os.chmod("/etc/passwd", 0o777),
    }
    for name, action in actions.items():
        try:
            action()
            done.append(name)
        except Exception:
            pass
    return done


def tmp_is_private():
    # /tmp inside the sandbox is the job's own tmpfs: writing here must not reach the host's /tmp.
    with open("/tmp/ucoder_sandbox_escape.txt", "w") as f:
        f.write("x")
    return True


def cwd_writable():
    with open("scratch.txt", "w") as f:
        f.write("ok")
    with open("scratch.txt") as f:
        return f.read()
