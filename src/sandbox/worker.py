# ucoder-flow sandbox worker: a forkserver that runs untrusted Python one job at a time.
#
# Started by the Rust SandboxPool from the real interpreter with `-s -S -P`, an environment that
# holds only PYTHONHASHSEED, and one argument: a JSON config. It sets up its isolation once
# (PID, network and mount namespaces, a read-only file system view, a process cap), pre-imports
# the standard modules generated code uses, and then serves framed, versioned requests on fd 0,
# answering on fd 1. Per job it forks a child that drops to an unprivileged uid, gets its own
# session, rlimits and a private tmpfs as working directory, loads the program and runs the
# tests. Expected values never enter the child: tests written as `assert <expr> == <literal>`
# are split here with `ast`; the child sends back the value of <expr> as type-tagged plain data,
# and the Rust side compares it with the literal. The parent (this process) measures CPU time,
# drains and caps output, kills every process of the job when it ends, and resumes the job in a
# fresh child after a test that killed its process.

import ast
import errno
import gc
import json
import os
import select
import signal
import struct
import sys
import time

PROTOCOL = 1
MAGIC = b"UCSB"
HEADER = struct.Struct("<4sII")
MAX_FRAME = 256 << 20

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 1
MOUNT_ATTR_NOSUID = 2
MOUNT_ATTR_NODEV = 4

PREIMPORT = (
    "abc array bisect calendar cmath collections collections.abc copy dataclasses datetime "
    "decimal enum fractions functools hashlib heapq io itertools json math numbers operator "
    "random re resource statistics string textwrap typing unicodedata"
).split()

_libc = None
FEATURES = {}


def libc():
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret, what):
    if ret != 0:
        import ctypes

        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def feature(name, fn):
    """Runs one isolation step; records `ok` or why the host refused it."""
    try:
        fn()
        FEATURES[name] = "ok"
        return True
    except Exception as e:  # noqa: BLE001 - every refusal is reported, none is fatal
        FEATURES[name] = "refused: %s" % (e,)
        return False


# ---------------------------------------------------------------- framing


def read_exact(fd, n):
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            raise EOFError
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# Bound at import, before any candidate code runs: a program that replaces `json.dumps` or
# builtins does not change how its results are framed.
# The C encoder is used directly: JSONEncoder.encode itself calls `isinstance`, which a program
# may have replaced.
def _no_default(o):
    raise TypeError("not JSON data")


_c_encoder = json.encoder.c_make_encoder(
    None, _no_default, json.encoder.c_encode_basestring, None, ":", ",", False, False, True
)
_join = "".join


def _json_encode(obj):
    return _join(_c_encoder(obj, 0))


_header_pack = HEADER.pack
_bytes_len = len


def encode_frame(obj):
    data = _json_encode(obj).encode("utf-8")
    return _header_pack(MAGIC, PROTOCOL, _bytes_len(data)) + data


def read_frame(fd):
    magic, version, length = HEADER.unpack(read_exact(fd, HEADER.size))
    if magic != MAGIC or version != PROTOCOL or length > MAX_FRAME:
        raise ValueError("bad frame header %r v%d len %d" % (magic, version, length))
    return json.loads(read_exact(fd, length).decode("utf-8"))


def clean_text(s, limit=2000):
    s = s if len(s) <= limit else s[:limit] + "..."
    return s.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------- type-tagged values


def make_tagger(max_bytes, max_depth=64):
    """Returns tag(value) -> plain JSON data. Uses only references captured here, so a
    program that monkeypatches builtins cannot change how its values are described."""
    _type = type
    _issubclass = issubclass
    _len = len
    _isnan = float.__ne__
    f_repr = float.__repr__
    i_str = int.__repr__
    i_int = int.__int__
    f_float = float.__float__
    s_str = str.__str__
    s_enc = str.encode
    b_hex = bytes.hex
    ba_bytes = bytes
    l_iter = list.__iter__
    t_iter = tuple.__iter__
    set_iter = set.__iter__
    fs_iter = frozenset.__iter__
    d_items = dict.items
    c_real = complex.real.__get__
    c_imag = complex.imag.__get__
    _list = list
    _int, _float, _str, _bytes, _bytearray = int, float, str, bytes, bytearray
    _tuple, _set, _frozenset, _dict, _complex, _bool = tuple, set, frozenset, dict, complex, bool
    none_t = _type(None)
    _isnan  # (kept for clarity)

    class TooLarge(Exception):
        pass

    def tag(v):
        budget = [max_bytes]

        def spend(n):
            budget[0] -= n
            if budget[0] < 0:
                raise TooLarge

        def go(v, depth):
            if depth > max_depth:
                return ["o", "nesting deeper than %d" % max_depth]
            t = _type(v)
            spend(8)
            if t is none_t:
                return ["N"]
            if t is _bool:
                return ["b", v is True]
            if _issubclass(t, _bool):
                return ["o", "bool subclass"]
            if _issubclass(t, _int):
                try:
                    s = i_str(i_int(v))
                except ValueError:
                    return ["o", "int with too many digits"]
                spend(_len(s))
                return ["i", s]
            if _issubclass(t, _float):
                return ["f", f_repr(f_float(v))]
            if _issubclass(t, _complex):
                return ["c", f_repr(c_real(v)), f_repr(c_imag(v))]
            if _issubclass(t, _str):
                s = s_str(v)
                spend(_len(s))
                try:
                    s_enc(s, "utf-8")
                    return ["s", s]
                except UnicodeEncodeError:
                    return ["u", [ord(ch) for ch in s]]
            if _issubclass(t, _bytes) or _issubclass(t, _bytearray):
                b = ba_bytes(v) if _issubclass(t, _bytearray) else v
                spend(2 * _len(b))
                return ["y", b_hex(b)]
            if _issubclass(t, _list):
                return ["l", [go(x, depth + 1) for x in _list(l_iter(v))]]
            if _issubclass(t, _tuple):
                return ["t", [go(x, depth + 1) for x in _list(t_iter(v))]]
            if _issubclass(t, _frozenset):
                return ["F", [go(x, depth + 1) for x in _list(fs_iter(v))]]
            if _issubclass(t, _set):
                return ["S", [go(x, depth + 1) for x in _list(set_iter(v))]]
            if _issubclass(t, _dict):
                return ["d", [[go(k, depth + 1), go(x, depth + 1)] for k, x in _list(d_items(v))]]
            try:
                name = s_str(t.__qualname__) if _issubclass(_type(t.__qualname__), _str) else "?"
            except Exception:
                name = "?"
            return ["o", name[:200]]

        try:
            return go(v, 0)
        except TooLarge:
            return ["T", max_bytes]
        except RecursionError:
            return ["o", "nesting too deep"]

    return tag


# ---------------------------------------------------------------- splitting asserts


def _is_literal(node):
    try:
        ast.literal_eval(node)
        return True
    except Exception:
        return False


def _is_plain_call(node):
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, (ast.Name, ast.Attribute))
        and all(_is_literal(a) for a in node.args)
        and all(k.arg is not None and _is_literal(k.value) for k in node.keywords)
    )


def plan_test(test, tag):
    """Turns one test into (plan sent to the child, expected kept here)."""
    kind = test.get("kind")
    if kind == "call":
        fn = test.get("function")
        args = test.get("args")
        if not isinstance(fn, str) or not isinstance(args, str):
            return {"mode": "invalid", "why": "call test needs function and args strings"}, None
        try:
            ast.parse(fn, mode="eval")
            a = ast.literal_eval(args)
            if not isinstance(a, (list, tuple)):
                raise ValueError("args must be a list or tuple literal")
        except Exception as e:
            return {"mode": "invalid", "why": "args: %s" % clean_text(str(e), 300)}, None
        expected = None
        if test.get("expected") is not None:
            try:
                expected = {"cmp": "eq", "value": tag(ast.literal_eval(test["expected"]))}
            except Exception as e:
                return {"mode": "invalid", "why": "expected is not a Python literal: %s" % clean_text(str(e), 300)}, None
        return {"mode": "call", "fn_code": compile(fn, "<function>", "eval"), "args": a}, expected
    if kind != "assert" or not isinstance(test.get("source"), str):
        return {"mode": "invalid", "why": "unknown test kind"}, None
    source = test["source"]
    try:
        tree = ast.parse(source)
    except Exception as e:
        return {"mode": "invalid", "why": "assert does not parse: %s" % clean_text(str(e), 300)}, None
    body = tree.body
    try:
        child_only = {"mode": "assert", "code": compile(tree, "<test>", "exec")}
    except Exception as e:
        return {"mode": "invalid", "why": "assert does not compile: %s" % clean_text(str(e), 300)}, None
    if not body or not isinstance(body[-1], ast.Assert):
        return child_only, None
    setup = ast.unparse(ast.Module(body=body[:-1], type_ignores=[])) if len(body) > 1 else ""
    test_expr = body[-1].test
    split = None
    if isinstance(test_expr, ast.Compare) and len(test_expr.ops) == 1:
        op = test_expr.ops[0]
        left, right = test_expr.left, test_expr.comparators[0]
        cmp = {ast.Eq: "eq", ast.NotEq: "ne", ast.Is: "is", ast.IsNot: "isnot"}.get(type(op))
        if cmp:
            lit_l, lit_r = _is_literal(left), _is_literal(right)
            if lit_r and not lit_l:
                split = (left, cmp, right)
            elif lit_l and not lit_r:
                split = (right, cmp, left)
            if split and cmp in ("is", "isnot"):
                if not (isinstance(split[2], ast.Constant) and split[2].value in (None, True, False)):
                    split = None
    else:
        # `assert f(<literals>)` / `assert not f(<literals>)`: only the returned value is judged
        # outside. Any other expression would compute the verdict (and hold its expected values)
        # inside the child, so it stays an in-child assert.
        negated = isinstance(test_expr, ast.UnaryOp) and isinstance(test_expr.op, ast.Not)
        inner = test_expr.operand if negated else test_expr
        if _is_plain_call(inner):
            split = (inner, "falsy" if negated else "truthy", None)
    if split is None:
        return child_only, None
    value_node, cmp, lit = split
    expected = {"cmp": cmp, "value": None}
    if lit is not None:
        try:
            expected["value"] = tag(ast.literal_eval(lit))
        except Exception:
            return child_only, None
    try:
        setup_code = compile(setup, "<test setup>", "exec") if setup else None
        expr_code = compile(ast.Expression(body=value_node), "<test>", "eval")
    except Exception:
        return child_only, None
    return {"mode": "expr", "setup_code": setup_code, "expr_code": expr_code}, expected


PLAN_CACHE = {}
PLAN_CACHE_MAX = 16384


def plan_test_cached(test, tag):
    """Plans are pure functions of the test: a pipeline runs the same tests against many candidates."""
    try:
        key = (test.get("kind"), test.get("source"), test.get("function"), test.get("args"), test.get("expected"))
        hash(key)
    except TypeError:
        return plan_test(test, tag)
    hit = PLAN_CACHE.get(key)
    if hit is None:
        if len(PLAN_CACHE) >= PLAN_CACHE_MAX:
            PLAN_CACHE.clear()
        hit = PLAN_CACHE[key] = plan_test(test, tag)
    return hit


# ---------------------------------------------------------------- the job child


class SandboxTimeout(BaseException):
    pass


RESULTS_BYTES = 48 << 20
ASSERT_STATUSES = ("pass", "fail", "raised", "timeout")
VALUE_STATUSES = ("v", "raised", "timeout")
COUNTER = struct.Struct("<Q")


def child_main(plans, start, program, shm, tag, test_cpu, program_cpu):
    """Runs in the forked child after isolation is applied. Never returns."""
    _exit = os._exit
    _enc = encode_frame
    _pt = time.process_time
    _pc = time.perf_counter
    _setitimer = signal.setitimer
    ITIMER = signal.ITIMER_PROF
    _compile = compile
    _exec = exec
    _eval = eval
    _isinstance = isinstance
    _list_t, _tuple_t = list, tuple
    _type = type
    _str = str
    _ae = AssertionError
    _BE = BaseException
    _ST = SandboxTimeout
    _range, _len = range, len
    fired = [False]

    def on_prof(signum, frame):
        fired[0] = True
        raise _ST()

    signal.signal(signal.SIGPROF, on_prof)

    used = [COUNTER.size]
    _pack = COUNTER.pack_into
    _size = RESULTS_BYTES

    def send(obj):
        # Results go to a shared-memory region the parent reads: no syscall or wake-up per test.
        try:
            data = _enc(obj)
            if used[0] + _len(data) > _size - 4096:
                if "v" in obj:
                    obj["v"] = ["T", _size]
                data = _enc(obj)
                if used[0] + _len(data) > _size:
                    _exit(3)
            end = used[0] + _len(data)
            shm[used[0]:end] = data
            _pack(shm, 0, end)
            used[0] = end
        except _BE:
            _exit(3)

    def kind_of(e):
        try:
            return _str(_type(e).__name__)[:100]
        except _BE:
            return "?"

    g = {"__name__": "__candidate__", "__builtins__": __builtins__}
    fired[0] = False
    t0, c0 = _pc(), _pt()
    try:
        _setitimer(ITIMER, program_cpu)
        code = _compile(program, "<program>", "exec")
        _exec(code, g)
        _setitimer(ITIMER, 0)
    except _ST:
        _setitimer(ITIMER, 0)
        send({"p": "timeout"})
        _exit(0)
    except _BE as e:
        _setitimer(ITIMER, 0)
        msg = ""
        try:
            msg = clean_text(_str(e), 500)
        except _BE:
            pass
        send({"p": "error", "kind": kind_of(e), "msg": msg})
        _exit(0)
    if fired[0]:
        send({"p": "timeout"})
        _exit(0)
    send({"p": "ok", "cpu": _pt() - c0, "wall": _pc() - t0})
    for i in _range(start, _len(plans)):
        plan = plans[i]
        mode = plan["mode"]
        if mode == "invalid":
            continue  # already decided by the parent
        fired[0] = False
        t0, c0 = _pc(), _pt()
        out = None
        try:
            _setitimer(ITIMER, test_cpu)
            if mode == "call":
                fn = _eval(plan["fn_code"], g)
                v = fn(*plan["args"])
                _setitimer(ITIMER, 0)
                out = {"s": "v", "v": v}
            elif mode == "expr":
                if plan["setup_code"] is not None:
                    _exec(plan["setup_code"], g)
                v = _eval(plan["expr_code"], g)
                _setitimer(ITIMER, 0)
                out = {"s": "v", "v": v}
            else:
                _exec(plan["code"], g)
                _setitimer(ITIMER, 0)
                out = {"s": "pass"}
        except _ST:
            _setitimer(ITIMER, 0)
            out = {"s": "timeout"}
        except _ae:
            _setitimer(ITIMER, 0)
            out = {"s": "fail"} if mode == "assert" else {"s": "raised", "kind": "AssertionError"}
        except _BE as e:
            _setitimer(ITIMER, 0)
            out = {"s": "raised", "kind": kind_of(e)}
        cpu, wall = _pt() - c0, _pc() - t0
        if fired[0] and out["s"] != "timeout":
            out = {"s": "timeout"}
        if out["s"] == "v":
            try:
                out["v"] = tag(out["v"])
            except _BE as e:
                out = {"s": "raised", "kind": "Unserializable:" + kind_of(e)}
        out["i"] = i
        out["cpu"] = cpu
        out["wall"] = wall
        send(out)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except _BE:
        pass
    send({"done": True})
    _exit(0)


# ---------------------------------------------------------------- the forkserver


class Worker:
    def __init__(self, cfg):
        self.cfg = cfg
        self.uid = cfg.get("uid")
        self.pidns = False
        self.mountns = False
        self.cg_fd = None
        self.cg_read_path = None
        self.req_fd = 0
        self.resp_fd = 1
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.scratch = None
        self.statuses = {}

    # -- setup, once per worker

    def setup(self):
        # The protocol pipes move to high fds; fd 0-2 of this process become /dev/null (stderr stays).
        self.req_fd = os.dup(0)
        self.resp_fd = os.dup(1)
        os.dup2(self.devnull, 0)
        os.dup2(self.devnull, 1)
        cfg = self.cfg
        flags = 0
        cg = cfg.get("cgroup")
        if cg:
            def open_cg():
                self.cg_fd = os.open(os.path.join(cg, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
                self.cg_read_path = os.path.join(cg, "cgroup.procs")
            feature("pids cgroup", open_cg)
        else:
            FEATURES["pids cgroup"] = "refused: %s" % cfg.get("cgroup_why", "not available")
        if cfg.get("namespaces", True):
            if feature("pid namespace", lambda: _check(libc().unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")):
                flags |= CLONE_NEWPID
            feature("network namespace", lambda: _check(libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)"))
            if feature("mount namespace", lambda: _check(libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")):
                self.mountns = True
        else:
            for f in ("pid namespace", "network namespace", "mount namespace"):
                FEATURES[f] = "refused: disabled by configuration"
        if flags & CLONE_NEWPID:
            pid = os.fork()
            if pid:
                # The outer process only waits: the forkserver is PID 1 of the new namespace and
                # talks to Rust over the inherited pipes. Rust kills this process to kill the worker.
                for fd in (self.req_fd, self.resp_fd):
                    os.close(fd)
                while True:
                    try:
                        _, status = os.waitpid(pid, 0)
                        break
                    except ChildProcessError:
                        os._exit(1)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            self.pidns = True
            libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if self.cg_fd is not None:
            # The forkserver joins the worker's pids cgroup once; every job child inherits it, so
            # pids.max caps each job (plus this process) with no per-fork cost.
            if not feature("pids cgroup", lambda: os.write(self.cg_fd, b"0")):
                self.cg_fd = None
                self.cg_read_path = None
        else:
            libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if self.mountns:
            self.setup_mounts()
        else:
            FEATURES["read-only file system"] = "refused: no mount namespace"
            FEATURES["private tmpfs"] = "refused: no mount namespace"
        if self.uid is not None:
            if not feature("unprivileged uid", self.probe_uid):
                self.uid = None
        else:
            FEATURES["unprivileged uid"] = "refused: %s" % cfg.get("uid_why", "not root")
        if not self.mountns:
            import tempfile

            self.scratch = tempfile.mkdtemp(prefix="ucoder-sandbox-")
            if self.uid is not None:
                os.chown(self.scratch, self.uid, self.uid)
        for name in PREIMPORT:
            try:
                __import__(name)
            except Exception:
                pass
        self.tag = make_tagger(cfg["limits"]["value_bytes"])
        import mmap

        self.shm = mmap.mmap(-1, RESULTS_BYTES)
        gc.collect()
        gc.freeze()

    def setup_mounts(self):
        lc = libc()
        _check(lc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        if self.pidns:
            feature("private /proc", lambda: _check(
                lc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc"))
        if self.uid is not None:
            feature("interpreter exposed to uid", self.expose_interpreter)

        def ro():
            import ctypes

            attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
            r = lc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
            _check(0 if r == 0 else -1, "mount_setattr(/, RDONLY, AT_RECURSIVE)")

        feature("read-only file system", ro)
        FEATURES["private tmpfs"] = "ok"

    def expose_interpreter(self):
        """A non-root uid must read the interpreter's files: an ancestor like /root (0700) is
        replaced, in this mount namespace only, by an empty tmpfs holding just the prefix."""
        lc = libc()
        prefixes = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                           os.path.dirname(os.path.realpath(sys.executable)))})
        blocked = []
        for p in prefixes:
            parts = p.split("/")
            for k in range(2, len(parts) + 1):
                a = "/".join(parts[:k]) or "/"
                if not (os.stat(a).st_mode & 0o001):
                    blocked.append((a, p))
                    break
        if not blocked:
            return
        stash = "/tmp"
        _check(lc.mount(b"tmpfs", stash.encode(), b"tmpfs", 0, b"size=1m,mode=0700"), "mount stash")
        moved = []
        for n, (a, p) in enumerate(blocked):
            d = "%s/%d" % (stash, n)
            os.mkdir(d)
            _check(lc.mount(p.encode(), d.encode(), None, MS_BIND | MS_REC, None), "bind %s" % p)
            moved.append((a, p, d))
        for a in sorted({a for a, _, _ in moved}):
            _check(lc.mount(b"tmpfs", a.encode(), b"tmpfs", 0, b"size=1m,mode=0755"), "mount tmpfs on %s" % a)
        for a, p, d in moved:
            os.makedirs(p, mode=0o755, exist_ok=True)
            _check(lc.mount(d.encode(), p.encode(), None, MS_MOVE, None), "move %s" % p)
        _check(lc.umount2(stash.encode(), MNT_DETACH), "umount stash")

    def probe_uid(self):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(self.uid, self.uid, self.uid)
                os.setresuid(self.uid, self.uid, self.uid)
                os.listdir(os.path.dirname(os.__file__))
                with open(os.__file__, "rb") as f:
                    f.read(1)
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise OSError("uid %d cannot read the interpreter's standard library" % self.uid)

    # -- per job

    def job_dir_enter(self):
        if self.mountns:
            lc = libc()
            opts = ("size=%d,nr_inodes=4096,mode=1777" % self.limits["tmp_bytes"]).encode()
            _check(lc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mount job tmpfs")
            return "/tmp"
        import tempfile

        d = tempfile.mkdtemp(dir=self.scratch)
        if self.uid is not None:
            os.chown(d, self.uid, self.uid)
        return d

    def job_dir_leave(self, d):
        if self.mountns:
            libc().umount2(b"/tmp", MNT_DETACH)
        else:
            import shutil

            shutil.rmtree(d, ignore_errors=True)

    def kill_all(self, child_pid):
        """Kills every process of the job, escaped sessions and orphans included, and reaps them."""
        if self.pidns:
            # As PID 1 of the namespace, kill(-1) reaches every other process in it.
            for _ in range(10000):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
                if not self.reap():
                    time.sleep(0.0002)
        else:
            try:
                os.killpg(child_pid, signal.SIGKILL)
            except OSError:
                pass
            if self.cg_read_path:
                for _ in range(1000):
                    with open(self.cg_read_path) as f:
                        pids = [int(x) for x in f.read().split()]
                    pids = [p for p in pids if p != os.getpid()]
                    if not pids:
                        break
                    for p in pids:
                        try:
                            os.kill(p, signal.SIGKILL)
                        except OSError:
                            pass
                    self.reap()
            if self.uid is not None:
                k = os.fork()
                if k == 0:
                    try:
                        os.setresuid(self.uid, self.uid, self.uid)
                        for _ in range(10000):
                            os.kill(-1, signal.SIGKILL)
                    except BaseException:
                        pass
                    os._exit(0)
                os.waitpid(k, 0)
        self.reap()

    def reap(self):
        """Reaps every exited child; returns whether any was reaped."""
        any_reaped = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return any_reaped
            if pid == 0:
                return any_reaped
            any_reaped = True
            self.statuses[pid] = _

    def spawn_child(self, plans, start, program, job_dir):
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        lim = self.limits
        remaining_cpu = lim["program_cpu"] + lim["test_cpu"] * max(1, len(plans) - start) + 1
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                os.dup2(self.devnull, 0)
                os.dup2(w_out, 1)
                os.dup2(w_err, 2)
                os.closerange(3, 1 << 16)
                os.chdir(job_dir)
                import resource as R

                def lim_set(res, v):
                    R.setrlimit(res, (v, v))

                lim_set(R.RLIMIT_AS, lim["memory_bytes"])
                lim_set(R.RLIMIT_CPU, int(remaining_cpu) + 1)
                lim_set(R.RLIMIT_FSIZE, lim["file_bytes"])
                lim_set(R.RLIMIT_NOFILE, lim["open_files"])
                lim_set(R.RLIMIT_CORE, 0)
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                if self.uid is not None:
                    lim_set(R.RLIMIT_NPROC, lim["processes"])
                    os.setgroups([])
                    os.setresgid(self.uid, self.uid, self.uid)
                    os.setresuid(self.uid, self.uid, self.uid)
                libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
                os.environ.clear()
                os.environ["HOME"] = job_dir
                os.environ["TMPDIR"] = job_dir
                sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
                sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
            except BaseException as e:
                try:
                    data = encode_frame({"p": "setup", "msg": clean_text(repr(e))})
                    self.shm[8:8 + len(data)] = data
                    COUNTER.pack_into(self.shm, 0, 8 + len(data))
                finally:
                    os._exit(4)
            child_main(plans, start, program, self.shm, self.tag, lim["test_cpu"], lim["program_cpu"])
            os._exit(5)
        for fd in (w_out, w_err):
            os.close(fd)
        for fd in (r_out, r_err):
            os.set_blocking(fd, False)
        return pid, r_out, r_err

    def run_job(self, req):
        lim = dict(self.cfg["limits"])
        lim.update(req.get("limits") or {})
        self.limits = lim
        tests = req.get("tests") or []
        planned = [plan_test_cached(t, self.tag) if isinstance(t, dict) else ({"mode": "invalid", "why": "test is not an object"}, None) for t in tests]
        plans = [p for p, _ in planned]
        results = [None] * len(plans)
        for i, (p, _) in enumerate(planned):
            if p["mode"] == "invalid":
                results[i] = {"s": "invalid", "why": p["why"]}
        out = {"keep": lim["output_keep_bytes"], "stdout": bytearray(), "stderr": bytearray(), "total": 0}
        program_error = None
        program_cpu = None
        deadline = time.monotonic() + lim["job_wall"]
        job_dir = self.job_dir_enter()
        events = []
        try:
            start = 0
            loaded_once = False
            while True:
                while start < len(plans) and results[start] is not None:
                    start += 1
                if loaded_once and start >= len(plans):
                    break
                state = self.run_child(plans, start, req["program"], job_dir, results, out, deadline, events)
                if state.get("program_error") is not None:
                    program_error = state["program_error"]
                    break
                if program_cpu is None:
                    program_cpu = state.get("program_cpu")
                loaded_once = True
                if state.get("deadline"):
                    break
        finally:
            self.job_dir_leave(job_dir)
        tested = []
        for i, r in enumerate(results):
            if r is None:
                r = {"s": "killed", "why": "job wall deadline" if program_error is None else "program error"}
                if program_error is not None:
                    r = {"s": "program_error"}
            r["i"] = i
            r["child"] = plans[i]["mode"] == "assert"
            exp = planned[i][1]
            if exp is not None and r.get("s") == "v":
                r["cmp"] = exp["cmp"]
                r["expected"] = exp["value"]
            tested.append(r)
        return {
            "id": req.get("id"),
            "program_error": program_error,
            "program_cpu": program_cpu,
            "tests": tested,
            "stdout": out["stdout"].decode("utf-8", "replace"),
            "stderr": out["stderr"].decode("utf-8", "replace"),
            "output_bytes": out["total"],
            "events": events,
        }

    def run_child(self, plans, start, program, job_dir, results, out, deadline, events):
        """One child: load the program, run tests from `start`; fills `results` as frames arrive."""
        lim = self.limits
        COUNTER.pack_into(self.shm, 0, COUNTER.size)
        out["child"] = 0
        pid, r_out, r_err = self.spawn_child(plans, start, program, job_dir)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        poller = select.poll()
        fds = {r_out: "stdout", r_err: "stderr"}
        for fd in fds:
            poller.register(fd, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        parsed = COUNTER.size
        state = {}
        loaded = False
        current = start  # the test the child is running (or program load while not loaded)
        base_cpu = None  # child CPU when the parent first saw `current` running
        exited = False
        kill_reason = None
        status = None
        stat_path = "/proc/%d/stat" % pid
        tick = 0.05

        def child_cpu():
            try:
                with open(stat_path, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                return None

        def drain(fd, name):
            while True:
                try:
                    b = os.read(fd, 1 << 16)
                except BlockingIOError:
                    return True
                except OSError:
                    return False
                if not b:
                    return False
                out["total"] += len(b)
                out["child"] += len(b)
                keep = out["keep"] - len(out[name])
                if keep > 0:
                    out[name] += b[:keep]

        while True:
            now = time.monotonic()
            if now >= deadline:
                kill_reason = "deadline"
                break
            try:
                ready = poller.poll(int(min(tick, deadline - now) * 1000) + 1)
            except InterruptedError:
                continue
            progressed = False
            for fd, ev in ready:
                if fd == pidfd:
                    exited = True
                    continue
                name = fds.get(fd)
                if name in ("stdout", "stderr"):
                    if not drain(fd, name):
                        poller.unregister(fd)
                    continue
            if out["child"] > lim["max_output_bytes"]:
                kill_reason = "output limit"
                break
            if pidfd is None and not exited:
                try:
                    exited = os.waitpid(pid, os.WNOHANG)[0] == pid
                except ChildProcessError:
                    exited = True
            # Parse the complete frames the child has put in the shared region.
            violation = None
            used = COUNTER.unpack_from(self.shm, 0)[0]
            if used > RESULTS_BYTES or used < parsed:
                violation = "results region corrupted"
                used = parsed
            if used > parsed:
                progressed = True
            while used - parsed >= HEADER.size:
                magic, version, length = HEADER.unpack_from(self.shm, parsed)
                if magic != MAGIC or version != PROTOCOL or length > used - parsed - HEADER.size:
                    violation = "bad frame header"
                    break
                try:
                    msg = json.loads(self.shm[parsed + HEADER.size:parsed + HEADER.size + length].decode("utf-8"))
                except ValueError:
                    violation = "undecodable frame"
                    break
                parsed += HEADER.size + length
                if not isinstance(msg, dict):
                    violation = "frame is not an object"
                    break
                if not loaded:
                    p = msg.get("p")
                    if p == "ok":
                        loaded = True
                        state["program_cpu"] = msg.get("cpu") if isinstance(msg.get("cpu"), float) else None
                        base_cpu = None
                        continue
                    if p == "timeout":
                        state["program_error"] = {"kind": "Timeout", "msg": "program load exceeded its CPU budget"}
                    elif p == "error":
                        state["program_error"] = {"kind": str(msg.get("kind"))[:100], "msg": str(msg.get("msg"))[:2000]}
                    elif p == "setup":
                        state["program_error"] = {"kind": "SandboxSetup", "msg": str(msg.get("msg"))[:2000]}
                    else:
                        violation = "unexpected frame before program load"
                    break
                if msg.get("done") is True:
                    state["done"] = True
                    break
                if current >= len(plans):
                    allowed = ()
                else:
                    allowed = ASSERT_STATUSES if plans[current]["mode"] == "assert" else VALUE_STATUSES
                if msg.get("i") != current or msg.get("s") not in allowed:
                    # A split test can only come back as a value: a "pass" for it would be forged.
                    violation = "result frame out of order or of the wrong kind"
                    break
                r = {"s": msg["s"]}
                if msg["s"] == "v":
                    r["v"] = msg.get("v")
                if msg["s"] == "raised":
                    r["kind"] = str(msg.get("kind"))[:120]
                for k in ("cpu", "wall"):
                    if isinstance(msg.get(k), (int, float)):
                        r[k] = float(msg[k])
                results[current] = r
                current += 1
                while current < len(plans) and results[current] is not None:
                    current += 1
                base_cpu = None
            if violation:
                kill_reason = "protocol violation: " + violation
                break
            if state.get("done") or "program_error" in state:
                break
            if exited:
                break
            # CPU-time backstop for a test (or program load) that ignores or swallows its timer.
            if not progressed:
                cpu = child_cpu()
                if cpu is not None:
                    if base_cpu is None:
                        base_cpu = cpu
                    budget = lim["test_cpu"] if loaded else lim["program_cpu"]
                    if cpu - base_cpu > budget + 0.1:
                        kill_reason = "cpu"
                        break
        # End of this child: find how it ended, then kill every process of the job.
        try:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                status = st
        except ChildProcessError:
            pass
        self.statuses.clear()
        self.kill_all(pid)
        if status is None:
            status = self.statuses.get(pid)
        if status is None:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = None
        self.statuses.clear()
        for fd, name in ((r_out, "stdout"), (r_err, "stderr")):
            drain(fd, name)
        for fd in (r_out, r_err) + ((pidfd,) if pidfd is not None else ()):
            os.close(fd)
        if state.get("done") or "program_error" in state:
            return state
        if kill_reason == "deadline":
            state["deadline"] = True
            events.append("job wall deadline reached")
            if not loaded:
                state["program_error"] = {"kind": "Timeout", "msg": "job wall deadline during program load"}
            return state
        how = describe_status(status)
        if kill_reason:
            events.append("%s: killed (%s)" % ("test %d" % current if loaded else "program load", kill_reason))
        if not loaded:
            if kill_reason == "cpu":
                state["program_error"] = {"kind": "Timeout", "msg": "program load exceeded its CPU budget"}
            else:
                state["program_error"] = {"kind": "Died", "msg": kill_reason or how}
            return state
        if current < len(plans):
            if kill_reason == "cpu":
                results[current] = {"s": "timeout"}
            elif kill_reason:
                results[current] = {"s": "killed", "why": kill_reason}
            elif status is not None and os.WIFEXITED(status):
                results[current] = {"s": "raised", "kind": "ProcessExit(%d)" % os.WEXITSTATUS(status)}
            else:
                results[current] = {"s": "killed", "why": how}
        return state

    def serve(self):
        hello = {"hello": True, "protocol": PROTOCOL, "python": sys.version.split()[0],
                 "pid": os.getpid(), "features": FEATURES,
                 "hash_seed_fixed": sys.flags.hash_randomization == 0}
        write_all(self.resp_fd, encode_frame(hello))
        while True:
            try:
                req = read_frame(self.req_fd)
            except EOFError:
                os._exit(0)
            if req.get("shutdown"):
                os._exit(0)
            try:
                resp = self.run_job(req)
            except Exception as e:  # a bug here must surface as a failed job, never a pass
                import traceback

                resp = {"id": req.get("id"), "worker_error": clean_text(traceback.format_exc(), 4000)}
                del e
            write_all(self.resp_fd, encode_frame(resp))


def describe_status(status):
    if status is None:
        return "vanished"
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = str(os.WTERMSIG(status))
        return "killed by %s" % name
    if os.WIFEXITED(status):
        return "exited with status %d" % os.WEXITSTATUS(status)
    return "status %d" % status


def main():
    cfg = json.loads(sys.argv[1])
    if cfg.get("protocol") != PROTOCOL:
        sys.stderr.write("sandbox worker: protocol %r requested, this worker speaks %d\n" % (cfg.get("protocol"), PROTOCOL))
        os._exit(2)
    w = Worker(cfg)
    w.setup()
    w.serve()


if __name__ == "__main__":
    main()
