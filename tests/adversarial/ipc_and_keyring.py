# Leaves state for a later job where a sandbox often forgets to look: a SysV shared-memory
# segment, message queue and semaphore set under fixed keys, and a key in the user keyring.
# `leave` reports what it managed to create; `find` (run in a later job) reports what it can
# still see. Expected: the keyring calls are refused (EPERM), the IPC objects exist only in the
# worker's own IPC namespace and are gone before the next job; nothing reaches the host.
import ctypes
import errno

KEY = 0x5EED5EED
IPC_CREAT = 0o1000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p


def _add_key():
    # add_key("user", "ucoder-leak", "secret", 6, KEY_SPEC_USER_KEYRING)
    nr = {"x86_64": 248, "aarch64": 217}.get(__import__("platform").machine())
    r = _libc.syscall(nr, b"user", b"ucoder-leak", b"secret", 6, -4)
    return "created" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")


def leave():
    made = {}
    shm = _libc.shmget(KEY, 4096, IPC_CREAT | 0o666)
    made["shm"] = shm >= 0
    if shm >= 0:
        addr = _libc.shmat(shm, None, 0)
        if addr is not None and addr != ctypes.c_void_p(-1).value:
            ctypes.memmove(addr, b"secret", 6)
    made["msg"] = _libc.msgget(KEY, IPC_CREAT | 0o666) >= 0
    made["sem"] = _libc.semget(KEY, 1, IPC_CREAT | 0o666) >= 0
    made["key"] = _add_key()
    return made


def find():
    seen = {
        "shm": _libc.shmget(KEY, 0, 0) >= 0,
        "msg": _libc.msgget(KEY, 0) >= 0,
        "sem": _libc.semget(KEY, 0, 0) >= 0,
    }
    # request_key("user", "ucoder-leak", NULL, 0)
    nr = {"x86_64": 249, "aarch64": 218}.get(__import__("platform").machine())
    r = _libc.syscall(nr, b"user", b"ucoder-leak", None, 0)
    seen["key"] = "found" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    return seen
