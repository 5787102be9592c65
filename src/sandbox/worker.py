# ucoder-flow sandbox worker: runs untrusted Python one job at a time.
#
# Started by the Rust SandboxPool from the real interpreter with `-s -S -P`, an environment that
# holds only PYTHONHASHSEED, and one argument: a JSON config. Three roles, three processes:
#
# - The SUPERVISOR (PID 1 of the worker's PID namespace when the host allows one) sets up the
#   isolation once (PID, network, mount and IPC namespaces, a read-only file system view), then
#   serves framed, versioned requests from Rust on fd 0 and answers on fd 1. It plans every test:
#   a test of a form it can judge (`assert E == L`, `abs(E - L) < eps`, `math.isclose(E, L)`,
#   `E in (L, ...)`, `E is None`, `assert f(...)`, an expected exception) is split into the part
#   the child must run (E) and the expected part, which stays here and goes to Rust with the
#   child's value. It never runs candidate code and no job process is ever forked from it.
# - The ZYGOTE is forked from the supervisor at the end of set-up, before any job exists: it has
#   the pre-imported modules and the value tagger, and has never held a program, a test, an
#   expected value or a result channel. It applies `no_new_privs` and the seccomp filter once
#   (every child inherits them), keeps one SPARE child forked ahead (so the fork of a job's child
#   overlaps the job before it), passes the spare's hand-off socket to the supervisor, and
#   reports each child's exit status. The supervisor hands a job to the spare directly: only the
#   job's limits and file descriptors (job input, result pipe, stdout, stderr). The zygote sits
#   in the worker's job cgroups (pids, memory, CPU accounting), so every job process inherits
#   them with no migration cost.
# - The CHILD (under the zygote's seccomp filter: no keyring, ptrace or cross-process memory
#   calls; in its own session), once its job arrives, drops to an unprivileged uid, gets rlimits
#   and the job's private tmpfs as working directory, reads its job (the program and the parts
#   of the tests it must run, never an expected value) from a memfd, and reports each test's value or status as
#   length-prefixed JSON on a pipe made for this job alone. The supervisor reads that pipe with
#   strict limits: anything malformed is a protocol violation of that job, never a crash of the
#   worker. A spare keeps root until its job arrives, so no job (under the same uid) can signal
#   or trace the next job's child before it starts.
#
# The supervisor measures CPU from the job's cgroup, drains and caps output, kills every process
# of the job when it ends, empties the worker's SysV IPC namespace, remounts the job tmpfs unless
# the job left it empty, and resumes the job in a fresh child after a test that killed its
# process. A job may ask to stop early (`stop_below_ran`): once fewer of its tests can still run
# to their end, the rest are skipped, decided here in report order, so the same candidate always
# stops at the same test.

import ast
import errno
import fcntl
import gc
import json
import marshal
import os
import select
import signal
import socket
import struct
import sys
import time

PROTOCOL = 2
MAGIC = b"UCSB"
HEADER = struct.Struct("<4sII")
MAX_FRAME = 256 << 20
CHILD_LEN = struct.Struct("<I")

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 1
MOUNT_ATTR_NOSUID = 2
MOUNT_ATTR_NODEV = 4
IPC_RMID = 0
F_SETPIPE_SZ = 1031

# Room in the job's memory cgroup for the zygote's own pages (it sits in the cgroup too).
ZYGOTE_MEMORY = 64 << 20

# Child fds: 0 /dev/null, 1 stdout pipe, 2 stderr pipe, 3 result pipe, 4 job memfd.
RESULT_FD = 3
JOB_FD = 4

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


def set_name(name):
    try:
        libc().prctl(PR_SET_NAME, name, 0, 0, 0)
    except Exception:
        pass


# ---------------------------------------------------------------- framing (Rust <-> supervisor)


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


def encode_frame(obj):
    data = json.dumps(obj, separators=(",", ":"), allow_nan=True).encode("utf-8")
    return HEADER.pack(MAGIC, PROTOCOL, len(data)) + data


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
    _ord = ord
    _int, _float, _str, _bytes, _bytearray = int, float, str, bytes, bytearray
    _tuple, _set, _frozenset, _dict, _complex, _bool = tuple, set, frozenset, dict, complex, bool
    none_t = _type(None)

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
                    return ["u", [_ord(ch) for ch in s]]
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


# ---------------------------------------------------------------- planning (supervisor only)
#
# A plan is (child_part, judge). `child_part` is what the child runs, as plain data with code
# objects (marshalled into the job's input); `judge` is what decides the verdict from the
# child's report, kept here and sent to Rust with it. Test forms that cannot be split run in the
# child as a whole (`("assert", code)`, judge None) and are labelled "decided in child".


_FOLD_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
             ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
_FOLD_CALLS = {"tuple": tuple, "list": list, "set": set, "frozenset": frozenset}


def _fold(node, depth=0):
    """The value of a constant expression the supervisor can compute itself, without running
    any of the test's or the candidate's code: literals, + - * / on numbers (`2.0/3.0`,
    `3 + 5 + 7`), and tuple()/list()/set()/frozenset() of such, nested in containers.
    Raises ValueError for anything else."""
    if depth > 64:
        raise ValueError("too deep")
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _fold(node.operand, depth + 1)
        if type(v) not in (int, float, complex):
            raise ValueError("sign of a non-number")
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in _FOLD_OPS:
        a, b = _fold(node.left, depth + 1), _fold(node.right, depth + 1)
        if type(a) not in (int, float, complex) or type(b) not in (int, float, complex):
            raise ValueError("arithmetic on a non-number")
        try:
            v = _FOLD_OPS[type(node.op)](a, b)
        except ArithmeticError as e:
            raise ValueError(str(e)) from None
        if type(v) is int and v.bit_length() > 4096:
            raise ValueError("too large")
        return v
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_fold(e, depth + 1) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("dict unpacking")
        return {_fold(k, depth + 1): _fold(v, depth + 1) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FOLD_CALLS
            and len(node.args) <= 1 and not node.keywords):
        arg = _fold(node.args[0], depth + 1) if node.args else ()
        if type(arg) not in (list, tuple, set, frozenset, str, dict):
            raise ValueError("not an iterable constant")
        return _FOLD_CALLS[node.func.id](arg)
    raise ValueError("not a constant expression")


def _literal(node):
    """(True, value) when `node` is a constant expression (see `_fold`)."""
    try:
        return True, _fold(node)
    except (ValueError, TypeError):  # TypeError: an unhashable set element or dict key
        return False, None


def _is_literal(node):
    return _literal(node)[0]


def _is_plain_call(node):
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, (ast.Name, ast.Attribute))
        and all(_is_literal(a) for a in node.args)
        and all(k.arg is not None and _is_literal(k.value) for k in node.keywords)
    )


def _number(value):
    return type(value) in (int, float) and value == value


def _split_eq(test_expr):
    """`E == L`, `E != L`, `E is None/True/False`, `E is not ...` (either side literal)."""
    if not (isinstance(test_expr, ast.Compare) and len(test_expr.ops) == 1):
        return None
    op = test_expr.ops[0]
    left, right = test_expr.left, test_expr.comparators[0]
    cmp = {ast.Eq: "eq", ast.NotEq: "ne", ast.Is: "is", ast.IsNot: "isnot",
           ast.In: "in", ast.NotIn: "notin"}.get(type(op))
    if cmp is None:
        return None
    lit_l, val_l = _literal(left)
    lit_r, val_r = _literal(right)
    if cmp in ("in", "notin"):
        # Membership in a literal container (list, tuple, set, frozenset, dict keys, substring).
        if lit_r and not lit_l and type(val_r) in (list, tuple, set, frozenset, dict, str, bytes):
            return left, {"cmp": cmp, "value": val_r}
        return None
    if lit_r and not lit_l:
        expr, lit = left, val_r
    elif lit_l and not lit_r:
        expr, lit = right, val_l
    else:
        return None
    if cmp in ("is", "isnot") and not (lit is None or lit is True or lit is False):
        return None
    return expr, {"cmp": cmp, "value": lit}


def _abs_diff(node):
    """`abs(E - L)` or `abs(L - E)` with numeric literal L -> (E, L)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "abs"
            and len(node.args) == 1 and not node.keywords):
        return None
    inner = node.args[0]
    if not (isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub)):
        return None
    lit_l, val_l = _literal(inner.left)
    lit_r, val_r = _literal(inner.right)
    if lit_r and not lit_l and _number(val_r):
        return inner.left, val_r
    if lit_l and not lit_r and _number(val_l):
        return inner.right, val_l
    return None


def _split_approx(test_expr):
    """`abs(E - L) < eps` (or <=, or mirrored) and `math.isclose(E, L, rel_tol=, abs_tol=)`."""
    if isinstance(test_expr, ast.Compare) and len(test_expr.ops) == 1:
        op = type(test_expr.ops[0])
        left, right = test_expr.left, test_expr.comparators[0]
        mirrored = {ast.Gt: ast.Lt, ast.GtE: ast.LtE}
        if op in mirrored:
            left, right, op = right, left, mirrored[op]
        if op in (ast.Lt, ast.LtE):
            diff = _abs_diff(left)
            ok, tol = _literal(right)
            if diff and ok and _number(tol):
                expr, lit = diff
                return expr, {"cmp": "absdiff", "value": lit, "tol": float(tol),
                              "strict": op is ast.Lt}
        return None
    if not isinstance(test_expr, ast.Call):
        return None
    f = test_expr.func
    named = (isinstance(f, ast.Attribute) and f.attr == "isclose" and isinstance(f.value, ast.Name)
             and f.value.id == "math") or (isinstance(f, ast.Name) and f.id == "isclose")
    if not named or len(test_expr.args) != 2:
        return None
    tols = {"rel_tol": 1e-9, "abs_tol": 0.0}
    for k in test_expr.keywords:
        ok, v = _literal(k.value)
        if k.arg not in tols or not ok or not _number(v) or v < 0:
            return None
        tols[k.arg] = float(v)
    a, b = test_expr.args
    lit_a, val_a = _literal(a)
    lit_b, val_b = _literal(b)
    if lit_b and not lit_a and _number(val_b):
        expr, lit = a, val_b
    elif lit_a and not lit_b and _number(val_a):
        expr, lit = b, val_a
    else:
        return None
    return expr, {"cmp": "isclose", "value": lit, "rel_tol": tols["rel_tol"], "abs_tol": tols["abs_tol"]}


def _split_truth(test_expr):
    """`assert f(<literals>)` / `assert not f(<literals>)`: only the returned value is judged
    outside. Any other bare expression would compute its verdict inside the child."""
    negated = isinstance(test_expr, ast.UnaryOp) and isinstance(test_expr.op, ast.Not)
    inner = test_expr.operand if negated else test_expr
    if _is_plain_call(inner) or _is_literal(inner):
        return inner, {"cmp": "falsy" if negated else "truthy"}
    return None


def _exception_names(node):
    """`ValueError` or `(ValueError, TypeError)` -> names, else None."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return [node.attr]
    if isinstance(node, ast.Tuple) and node.elts:
        names = [_exception_names(e) for e in node.elts]
        if all(n and len(n) == 1 for n in names):
            return [n[0] for n in names]
    return None


def _is_assert_false(stmt):
    return isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant) and not stmt.test.value


def _split_raises(stmt):
    """An expected exception, as a statement:
        try: E [; assert False]  except X[ as e]: pass  [else: assert False]
        with pytest.raises(X): E
    -> (the statement the child runs, the exception class names)."""
    if isinstance(stmt, ast.Try) and len(stmt.handlers) == 1 and not stmt.finalbody:
        h = stmt.handlers[0]
        body = list(stmt.body)
        fails_after = False
        if len(body) == 2 and _is_assert_false(body[1]):
            body = body[:1]
            fails_after = True
        if stmt.orelse:
            if len(stmt.orelse) == 1 and _is_assert_false(stmt.orelse[0]):
                fails_after = True
            else:
                return None
        if not fails_after or len(body) != 1 or not isinstance(body[0], (ast.Expr, ast.Assign)):
            return None
        if h.type is None or not all(isinstance(s, ast.Pass) for s in h.body):
            return None
        names = _exception_names(h.type)
        if not names or "BaseException" in names:
            return None
        return body[0], names
    if isinstance(stmt, ast.With) and len(stmt.items) == 1 and len(stmt.body) == 1:
        ctx = stmt.items[0].context_expr
        if (isinstance(ctx, ast.Call) and isinstance(ctx.func, ast.Attribute) and ctx.func.attr == "raises"
                and isinstance(ctx.func.value, ast.Name) and ctx.func.value.id == "pytest"
                and len(ctx.args) == 1 and not ctx.keywords and stmt.items[0].optional_vars is None
                and isinstance(stmt.body[0], (ast.Expr, ast.Assign))):
            names = _exception_names(ctx.args[0])
            if names and "BaseException" not in names:
                return stmt.body[0], names
    return None


def _judge(spec, tag):
    """The judge sent to Rust: the comparison with its expected value as tagged data."""
    out = dict(spec)
    if "value" in out:
        out["value"] = tag(out["value"])
    return out


def plan_test(test, tag):
    """Turns one test into (child part, judge). Invalid tests get ("invalid", why) and no judge."""
    kind = test.get("kind")
    if kind == "call":
        fn = test.get("function")
        args = test.get("args")
        if not isinstance(fn, str) or not isinstance(args, str):
            return ("invalid", "call test needs function and args strings"), None
        try:
            fn_code = compile(ast.Expression(body=ast.parse(fn, mode="eval").body), "<function>", "eval")
            a = ast.literal_eval(args)
            if not isinstance(a, (list, tuple)):
                raise ValueError("args must be a list or tuple literal")
        except Exception as e:
            return ("invalid", "args: %s" % clean_text(str(e), 300)), None
        judge = None
        if test.get("expected") is not None:
            try:
                judge = _judge({"cmp": "eq", "value": ast.literal_eval(test["expected"])}, tag)
            except Exception as e:
                return ("invalid", "expected is not a Python literal: %s" % clean_text(str(e), 300)), None
        return ("call", fn_code, tuple(a)), judge
    if kind != "assert" or not isinstance(test.get("source"), str):
        return ("invalid", "unknown test kind"), None
    source = test["source"]
    try:
        tree = ast.parse(source)
    except Exception as e:
        return ("invalid", "assert does not parse: %s" % clean_text(str(e), 300)), None
    try:
        whole = ("assert", compile(tree, "<test>", "exec"))
    except Exception as e:
        return ("invalid", "assert does not compile: %s" % clean_text(str(e), 300)), None
    body = tree.body
    if not body:
        return whole, None
    try:
        setup = compile(ast.Module(body=body[:-1], type_ignores=[]), "<test setup>", "exec") if len(body) > 1 else None
        last = body[-1]
        if isinstance(last, ast.Assert):
            split = _split_eq(last.test) or _split_approx(last.test) or _split_truth(last.test)
            if split is None:
                return whole, None
            expr, spec = split
            judge = _judge(spec, tag)
            return ("expr", setup, compile(ast.Expression(body=expr), "<test>", "eval")), judge
        raises = _split_raises(last)
        if raises is not None:
            stmt, names = raises
            code = compile(ast.Module(body=[stmt], type_ignores=[]), "<test>", "exec")
            return ("raises", setup, code), {"cmp": "raises", "names": names}
    except Exception:
        return whole, None
    return whole, None


class Planner:
    """Plans are pure functions of the test: a pipeline runs the same tests against many
    candidates. The cache lives in the supervisor only."""

    MAX = 16384

    def __init__(self, tag):
        self.tag = tag
        self.cache = {}

    def plan(self, test):
        if not isinstance(test, dict):
            return ("invalid", "test is not an object"), None
        try:
            key = (test.get("kind"), test.get("source"), test.get("function"), test.get("args"), test.get("expected"))
            hash(key)
        except TypeError:
            return plan_test(test, self.tag)
        hit = self.cache.get(key)
        if hit is None:
            if len(self.cache) >= self.MAX:
                self.cache.clear()
            hit = self.cache[key] = plan_test(test, self.tag)
        return hit


# ---------------------------------------------------------------- the job child


class SandboxTimeout(BaseException):
    pass


ASSERT_STATUSES = ("pass", "fail", "raised", "timeout")
VALUE_STATUSES = ("v", "raised", "timeout")
RAISES_STATUSES = ("raised", "returned", "timeout")


def child_main(tag):
    """Runs in the job's child after isolation is applied. Never returns."""
    # The job's input: read fully, then the descriptor is closed.
    chunks = []
    while True:
        b = os.read(JOB_FD, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.close(JOB_FD)
    job = marshal.loads(b"".join(chunks))
    del chunks
    run_in_child(tag, job, RESULT_FD)
    os._exit(0)


def run_in_child(tag, job, result_fd):
    """Loads the job's program and runs its tests from `start`, reporting each on `result_fd`
    (the last report is `done`, unless the program failed to load). Returns; exits only when a
    report cannot be written."""
    _exit = os._exit
    _write = os.write
    _pack = CHILD_LEN.pack
    def _no_default(o):
        raise TypeError("not JSON data")

    # The C encoder, bound before the program runs: a program that replaces `json.dumps` or
    # builtins does not change how its reports are framed.
    _dumps = json.encoder.c_make_encoder(
        None, _no_default, json.encoder.c_encode_basestring, None, ":", ",", False, False, True)
    _join = "".join
    _pt = time.process_time
    _pc = time.perf_counter
    _setitimer = signal.setitimer
    ITIMER = signal.ITIMER_PROF
    _exec = exec
    _eval = eval
    _type = type
    _str = str
    _ae = AssertionError
    _BE = BaseException
    _ST = SandboxTimeout
    _range, _len = range, len
    _mro = type.__dict__["__mro__"].__get__
    _name = type.__dict__["__name__"].__get__
    fired = [False]

    def send(obj):
        try:
            data = _join(_dumps(obj, 0)).encode("utf-8")
            view = memoryview(_pack(_len(data)) + data)
            while view:
                n = _write(result_fd, view)
                view = view[n:]
        except _BE:
            _exit(3)

    def on_prof(signum, frame):
        fired[0] = True
        raise _ST()

    signal.signal(signal.SIGPROF, on_prof)
    program, plans, start, test_cpu, program_cpu = job
    del job

    def kind_of(e):
        try:
            return _str(_name(_type(e)))[:100]
        except _BE:
            return "?"

    def mro_of(e):
        try:
            return [_str(_name(c))[:100] for c in _mro(_type(e))][:32]
        except _BE:
            return []

    g = {"__name__": "__candidate__", "__builtins__": __builtins__}
    t0, c0 = _pc(), _pt()
    try:
        _setitimer(ITIMER, program_cpu)
        code = compile(program, "<program>", "exec")
        del program
        _exec(code, g)
        _setitimer(ITIMER, 0)
    except _ST:
        _setitimer(ITIMER, 0)
        send({"p": "timeout"})
        return
    except _BE as e:
        _setitimer(ITIMER, 0)
        msg = ""
        try:
            msg = clean_text(_str(e), 500)
        except _BE:
            pass
        send({"p": "error", "kind": kind_of(e), "msg": msg})
        return
    if fired[0]:
        send({"p": "timeout"})
        return
    send({"p": "ok", "cpu": _pt() - c0, "wall": _pc() - t0})
    for i in _range(start, _len(plans)):
        plan = plans[i]
        mode = plan[0]
        if mode == "invalid":
            continue  # already decided by the supervisor
        fired[0] = False
        t0, c0 = _pc(), _pt()
        out = None
        try:
            _setitimer(ITIMER, test_cpu)
            if mode == "call":
                fn = _eval(plan[1], g)
                v = fn(*plan[2])
                _setitimer(ITIMER, 0)
                out = {"s": "v", "v": v}
            elif mode == "expr":
                if plan[1] is not None:
                    _exec(plan[1], g)
                v = _eval(plan[2], g)
                _setitimer(ITIMER, 0)
                out = {"s": "v", "v": v}
            elif mode == "raises":
                if plan[1] is not None:
                    _exec(plan[1], g)
                _exec(plan[2], g)
                _setitimer(ITIMER, 0)
                out = {"s": "returned"}
            else:
                _exec(plan[1], g)
                _setitimer(ITIMER, 0)
                out = {"s": "pass"}
        except _ST:
            _setitimer(ITIMER, 0)
            out = {"s": "timeout"}
        except _ae as e:
            _setitimer(ITIMER, 0)
            if mode == "assert":
                out = {"s": "fail"}
            else:
                out = {"s": "raised", "kind": "AssertionError", "mro": mro_of(e)}
        except _BE as e:
            _setitimer(ITIMER, 0)
            out = {"s": "raised", "kind": kind_of(e), "mro": mro_of(e)}
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


# ---------------------------------------------------------------- seccomp


def seccomp_program():
    """A BPF filter that answers EPERM to the keyring, ptrace and cross-process memory calls and
    kills a process that uses another syscall ABI; None where the architecture is unknown."""
    import ctypes
    import platform

    machine = platform.machine()
    if machine == "x86_64":
        arch, blocked, x32 = 0xC000003E, (248, 249, 250, 101, 310, 311), True  # keyctl is 250
    elif machine == "aarch64":
        arch, blocked, x32 = 0xC00000B7, (217, 218, 219, 117, 270, 271), False  # keyctl is 219
    else:
        return None

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    LD_W_ABS, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
    ALLOW, KILL, EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | errno.EPERM
    ins = [(LD_W_ABS, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, KILL), (LD_W_ABS, 0, 0, 0)]
    if x32:
        ins += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, KILL)]
    for nr in blocked:
        ins += [(JEQ, 0, 1, nr), (RET, 0, 0, EPERM)]
    ins.append((RET, 0, 0, ALLOW))
    arr = (SockFilter * len(ins))(*[SockFilter(*i) for i in ins])
    prog = SockFprog(len(ins), ctypes.cast(arr, ctypes.POINTER(SockFilter)))
    return prog, arr, blocked[2]  # `arr` keeps the instructions alive; blocked[2] is keyctl


def restrict(seccomp):
    """`no_new_privs`, then the seccomp filter (when the architecture has one), for this process
    and everything it forks."""
    lc = libc()
    _check(lc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if seccomp is not None:
        import ctypes

        _check(lc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(seccomp[0]), 0, 0), "seccomp")


# ---------------------------------------------------------------- the zygote


class Zygote:
    """Forks job children from a state that has never held job data (see the file's head).

    Its socket to the supervisor carries one message per datagram (SOCK_SEQPACKET):
    - from the supervisor, `F`: the spare was handed its job; fork the next one;
    - to the supervisor, `P<pid>` with the spare's hand-off socket attached: a new spare, which
      the supervisor hands its job to directly (the zygote is not on a job's path);
    - to the supervisor, `S<pid> <status>`: a child of the zygote ended (its wait status).
    """

    def __init__(self, sock, devnull, uid, seccomp, cgroup_fds):
        self.sock = sock
        self.devnull = devnull
        self.uid = uid
        self.seccomp = seccomp
        self.cgroup_fds = cgroup_fds
        self.wake_r = self.wake_w = -1

    def serve(self, tag):
        set_name(b"ucsb-zygote")
        # `no_new_privs` and the seccomp filter, once: every child inherits them. (Neither keeps
        # a spare, still root, from dropping to the job's uid.)
        restrict(self.seccomp)
        for fd in self.cgroup_fds:
            try:
                os.write(fd, b"0")
            except OSError:
                pass
        # Child exits wake the loop through a pipe written by the SIGCHLD handler.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        gc.collect()
        gc.freeze()
        # One spare child is always forked ahead, already isolated and waiting for a job, so a
        # job's fork happens while the previous job runs rather than before the next one.
        self.offer_spare(tag)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        sock_fd = self.sock.fileno()
        while True:
            try:
                ready = poller.poll()
            except InterruptedError:
                continue
            for fd, _ in ready:
                if fd == sock_fd:
                    try:
                        msg = self.sock.recv(16)
                    except InterruptedError:
                        continue
                    except OSError:
                        os._exit(0)
                    if msg != b"F":
                        os._exit(0)
                    self.offer_spare(tag)
                else:
                    try:
                        while os.read(self.wake_r, 256):
                            pass
                    except OSError:
                        pass
            self.report_exits()

    def report_exits(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            self.sock.send(b"S%d %d" % (pid, status))

    def offer_spare(self, tag):
        """Forks the next job child and passes its hand-off socket to the supervisor."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            self.child(theirs, tag)
        theirs.close()
        socket.send_fds(self.sock, [b"P%d" % pid], [ours.fileno()])
        ours.close()

    def child(self, handoff, tag):
        """A job child: isolates itself, waits for its job's descriptors, runs the job."""
        try:
            set_name(b"ucsb-spare")
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            # Only the hand-off socket stays open (moved to JOB_FD + 1); 0-2 are /dev/null.
            keep = JOB_FD + 1
            os.dup2(handoff.fileno(), keep)
            handoff.detach()
            handoff = socket.socket(fileno=keep)
            for fd in (0, 1, 2):
                os.dup2(self.devnull, fd)
            os.closerange(3, keep)
            os.closerange(keep + 1, 1 << 16)
            import resource as R

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.environ.clear()
            # Bound to fds 1 and 2, which become the job's pipes when it arrives.
            sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
            sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)

            # While it waits, the spare runs a fixed job of its own (its reports go to /dev/null):
            # the pages any job writes (interpreter state, allocator pools, hot objects' reference
            # counts) get their copy-on-write copies now, not on the job's time.
        except BaseException:
            os._exit(6)
        # Wait for the job: its limits and directory, and its descriptors.
        try:
            msg, fds, _, _ = socket.recv_fds(handoff, 4096, 8)
        except BaseException:
            os._exit(7)
        if not msg or len(fds) != 4:
            os._exit(7)
        try:
            set_name(b"ucsb-job")
            req = json.loads(msg)
            # The received descriptors may sit on the numbers they must move to: lift them first.
            lifted = []
            for k, fd in enumerate(fds):
                os.dup2(fd, 100 + k)
                os.close(fd)
                lifted.append(100 + k)
            job_fd, result_fd, out_fd, err_fd = lifted
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            os.dup2(result_fd, RESULT_FD)
            os.dup2(job_fd, JOB_FD)
            handoff.close()
            os.closerange(JOB_FD + 1, 1 << 16)
            os.chdir(req["dir"])

            def lim_set(res, v):
                R.setrlimit(res, (v, v))

            lim_set(R.RLIMIT_AS, req["memory_bytes"])
            lim_set(R.RLIMIT_CPU, int(req["cpu_seconds"]) + 1)
            lim_set(R.RLIMIT_FSIZE, req["file_bytes"])
            lim_set(R.RLIMIT_NOFILE, req["open_files"])
            lim_set(R.RLIMIT_CORE, 0)
            # Privileges go only now: a spare that waited under the job uid could be killed (or
            # traced) by the job before it, and so break the next job.
            if self.uid is not None:
                lim_set(R.RLIMIT_NPROC, req["processes"])
                os.setgroups([])
                os.setresgid(self.uid, self.uid, self.uid)
                os.setresuid(self.uid, self.uid, self.uid)
            os.environ["HOME"] = req["dir"]
            os.environ["TMPDIR"] = req["dir"]
            del req, fds, msg
            self.sock = None
        except BaseException as e:
            try:
                data = json.dumps({"p": "setup", "msg": clean_text(repr(e))}).encode()
                os.write(RESULT_FD, CHILD_LEN.pack(len(data)) + data)
            finally:
                os._exit(4)
        child_main(tag)
        os._exit(5)


# ---------------------------------------------------------------- the supervisor


class Violation(Exception):
    pass


class ChildChannel:
    """Reads the child's length-prefixed JSON reports from its result pipe. Anything malformed
    raises Violation; nothing the child writes can raise anything else here."""

    def __init__(self, fd, frame_limit, total_limit):
        self.fd = fd
        self.buf = bytearray()
        self.frame_limit = frame_limit
        self.total_limit = total_limit
        self.total = 0
        self.eof = False

    def fill(self):
        while True:
            try:
                b = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                self.eof = True
                return
            if not b:
                self.eof = True
                return
            self.total += len(b)
            if self.total > self.total_limit:
                raise Violation("more result data than the job's tests can produce")
            self.buf += b

    def messages(self):
        while len(self.buf) >= CHILD_LEN.size:
            (n,) = CHILD_LEN.unpack_from(self.buf, 0)
            if n > self.frame_limit:
                raise Violation("result frame of %d bytes is over the limit" % n)
            if len(self.buf) < CHILD_LEN.size + n:
                return
            raw = bytes(self.buf[CHILD_LEN.size:CHILD_LEN.size + n])
            del self.buf[:CHILD_LEN.size + n]
            try:
                msg = json.loads(raw.decode("utf-8"))
            except BaseException:  # ValueError, RecursionError, MemoryError, ...
                raise Violation("undecodable result frame") from None
            if type(msg) is not dict:
                raise Violation("result frame is not an object")
            yield msg


def _seconds(x):
    """A sane CPU/wall figure from the child, or None."""
    if type(x) is float and 0.0 <= x < 1e7:
        return x
    return None


def _valid_value(v, max_depth=70):
    """Checks the shape of a tagged value (every node a list led by a one-letter tag)."""
    stack = [(v, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth or type(node) is not list or not node or type(node[0]) is not str:
            return False
        t = node[0]
        if t in ("l", "t", "S", "F"):
            if len(node) != 2 or type(node[1]) is not list:
                return False
            stack.extend((x, depth + 1) for x in node[1])
        elif t == "d":
            if len(node) != 2 or type(node[1]) is not list:
                return False
            for kv in node[1]:
                if type(kv) is not list or len(kv) != 2:
                    return False
                stack.extend((x, depth + 1) for x in kv)
        elif t == "u":
            if len(node) != 2 or type(node[1]) is not list or any(type(c) is not int for c in node[1]):
                return False
        elif t in ("N",):
            if len(node) != 1:
                return False
        elif t == "b":
            if len(node) != 2 or type(node[1]) is not bool:
                return False
        elif t == "c":
            if len(node) != 3 or type(node[1]) is not str or type(node[2]) is not str:
                return False
        elif t == "T":
            if len(node) != 2 or type(node[1]) is not int:
                return False
        elif t in ("i", "f", "s", "y", "o"):
            if len(node) != 2 or type(node[1]) is not str:
                return False
        else:
            return False
    return True


class Cgroup:
    """The worker's job cgroups as the supervisor reads and resets them. Every descriptor is
    opened before the mount namespace exists: a file held open for writing would stop the
    read-only remount, and after it nothing could be opened for writing."""

    def __init__(self, cfg):
        self.cpu_fd = None
        self.mem = {}
        self.mem_limit = None
        self.procs = {}  # feature name -> O_WRONLY fd of cgroup.procs (the zygote joins)
        self.why = {}
        for name, key in (("pids cgroup per job", "cgroup_pids"), ("memory cgroup per job", "cgroup_memory"),
                          ("cpu accounting cgroup per job", "cgroup_cpuacct")):
            path = cfg.get(key)
            if not path:
                self.why[name] = cfg.get(key + "_why") or "not available"
                continue
            try:
                self.procs[name] = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
                if key == "cgroup_cpuacct":
                    self.cpu_fd = os.open(os.path.join(path, "cpuacct.usage"), os.O_RDONLY)
                if key == "cgroup_memory":
                    for f, mode in (("memory.limit_in_bytes", os.O_WRONLY), ("memory.memsw.limit_in_bytes", os.O_WRONLY),
                                    ("memory.max_usage_in_bytes", os.O_RDWR), ("memory.oom_control", os.O_RDONLY),
                                    ("memory.failcnt", os.O_RDONLY)):
                        try:
                            self.mem[f] = os.open(os.path.join(path, f), mode)
                        except OSError:
                            if f != "memory.memsw.limit_in_bytes":  # absent without swap accounting
                                raise
            except OSError as e:
                self.why[name] = str(e)
                self.procs.pop(name, None)
                if key == "cgroup_memory":
                    self.mem = {}
                if key == "cgroup_cpuacct":
                    self.cpu_fd = None

    def report(self):
        for name in ("pids cgroup per job", "memory cgroup per job", "cpu accounting cgroup per job"):
            FEATURES[name] = "ok" if name in self.procs else "refused: %s" % self.why.get(name, "not available")

    def close_procs(self):
        for fd in self.procs.values():
            os.close(fd)
        self.procs = {}

    def cpu_seconds(self):
        if self.cpu_fd is None:
            return None
        try:
            return int(os.pread(self.cpu_fd, 64, 0)) / 1e9
        except (OSError, ValueError):
            return None

    def _write(self, name, value):
        fd = self.mem.get(name)
        if fd is not None:
            os.write(fd, str(value).encode())

    def _read(self, name):
        return os.pread(self.mem[name], 4096, 0).decode()

    def set_memory(self, limit):
        if not self.mem or limit == self.mem_limit:
            return
        # memory.memsw.limit_in_bytes (memory + swap) must stay >= memory.limit_in_bytes.
        for name in ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            try:
                self._write(name, limit)
            except OSError:
                pass
        self.mem_limit = limit

    def memory_start(self):
        if self.mem:
            try:
                self._write("memory.max_usage_in_bytes", 0)
            except OSError:
                pass

    def oom_kills(self):
        if not self.mem:
            return None
        try:
            for line in self._read("memory.oom_control").splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
            return int(self._read("memory.failcnt"))
        except (OSError, ValueError):
            return None

    def memory_peak(self):
        if not self.mem:
            return None
        try:
            return int(self._read("memory.max_usage_in_bytes"))
        except (OSError, ValueError):
            return None


class Worker:
    def __init__(self, cfg):
        self.cfg = cfg
        self.uid = cfg.get("uid")
        self.pidns = False
        self.mountns = False
        self.ipcns = False
        self.cg_read_path = None
        self.req_fd = 0
        self.resp_fd = 1
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.scratch = None
        self.tmp_mounted = None  # size of the job tmpfs now mounted on /tmp, if any
        self.zygote_pid = None
        self.zsock = None
        self.spare = None  # (pid, hand-off socket) of the zygote's waiting child
        self.exits = {}  # pid -> wait status, as the zygote reported them
        self.cgroup = Cgroup(cfg)

    # -- setup, once per worker

    def setup(self):
        # The protocol pipes move to high fds; fd 0-2 of this process become /dev/null (stderr stays).
        self.req_fd = os.dup(0)
        self.resp_fd = os.dup(1)
        os.dup2(self.devnull, 0)
        os.dup2(self.devnull, 1)
        cfg = self.cfg
        flags = 0
        if cfg.get("namespaces", True):
            if feature("pid namespace", lambda: _check(libc().unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")):
                flags |= CLONE_NEWPID
            feature("network namespace", lambda: _check(libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)"))
            if feature("mount namespace", lambda: _check(libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")):
                self.mountns = True
            self.ipcns = feature("ipc namespace, emptied after every job",
                                 lambda: _check(libc().unshare(CLONE_NEWIPC), "unshare(CLONE_NEWIPC)"))
        else:
            for f in ("pid namespace", "network namespace", "mount namespace", "ipc namespace, emptied after every job"):
                FEATURES[f] = "refused: disabled by configuration"
        if flags & CLONE_NEWPID:
            pid = os.fork()
            if pid:
                # The outer process only waits: the supervisor is PID 1 of the new namespace and
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
        else:
            libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        set_name(b"ucsb-supervisor")
        # Not dumpable: a job process of the same uid (no uid drop) cannot ptrace this process or
        # read its memory through /proc.
        feature("supervisor not dumpable", lambda: _check(libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "PR_SET_DUMPABLE"))
        self.cgroup.report()
        if self.cfg.get("cgroup_pids"):
            self.cg_read_path = os.path.join(cfg["cgroup_pids"], "cgroup.procs")
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
            # Created only here, where there is no private tmpfs; the pool removes it.
            self.scratch = cfg["scratch"]
            os.mkdir(self.scratch, 0o700)
            if self.uid is not None:
                os.chown(self.scratch, self.uid, self.uid)
        for name in PREIMPORT:
            try:
                __import__(name)
            except Exception:
                pass
        tag = make_tagger(cfg["limits"]["value_bytes"])
        self.planner = Planner(tag)
        seccomp = None
        try:
            seccomp = seccomp_program()
            FEATURES["seccomp: no keyring, ptrace or cross-process memory"] = (
                "ok" if seccomp is not None else "refused: unknown architecture")
        except Exception as e:  # noqa: BLE001
            FEATURES["seccomp: no keyring, ptrace or cross-process memory"] = "refused: %s" % (e,)
        if seccomp is not None:
            ok = self.probe_seccomp(seccomp)
            if ok is not True:
                FEATURES["seccomp: no keyring, ptrace or cross-process memory"] = "refused: %s" % ok
                seccomp = None
        # The zygote: forked now, before any job data exists in this process.
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.collect()
        pid = os.fork()
        if pid == 0:
            parent_sock.close()
            for fd in (self.req_fd, self.resp_fd):
                os.close(fd)
            libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            z = Zygote(child_sock, self.devnull, self.uid, seccomp, list(self.cgroup.procs.values()))
            try:
                z.serve(tag)
            finally:
                os._exit(1)
        child_sock.close()
        self.cgroup.close_procs()
        self.zygote_pid = pid
        self.zsock = parent_sock
        gc.collect()
        gc.freeze()

    def probe_seccomp(self, seccomp):
        """Applies the filter in a throwaway child and checks that the keyring is refused."""
        import ctypes

        pid = os.fork()
        if pid == 0:
            try:
                restrict(seccomp)
                lc = libc()
                r = lc.syscall(seccomp[2], 0, -3, 0, 0, 0)  # keyctl(GET_KEYRING_ID, @s)
                os._exit(0 if r == -1 and ctypes.get_errno() == errno.EPERM else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        if status == 0:
            return True
        return "the filter did not load or did not block keyctl (status %d)" % status

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

    def job_dir_enter(self, lim):
        if self.mountns:
            # A job's tmpfs is reused only if the last job left it empty and it has the size this
            # job asks for; otherwise a fresh one is mounted.
            if self.tmp_mounted != lim["tmp_bytes"]:
                if self.tmp_mounted is not None:
                    libc().umount2(b"/tmp", MNT_DETACH)
                    self.tmp_mounted = None
                opts = ("size=%d,nr_inodes=4096,mode=1777" % lim["tmp_bytes"]).encode()
                _check(libc().mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mount job tmpfs")
                self.tmp_mounted = lim["tmp_bytes"]
            return "/tmp"
        import tempfile

        d = tempfile.mkdtemp(dir=self.scratch)
        if self.uid is not None:
            os.chown(d, self.uid, self.uid)
        return d

    def job_dir_leave(self, d):
        """Called once every process of the job is gone."""
        if self.mountns:
            try:
                empty = not os.listdir("/tmp")
            except OSError:
                empty = False
            if not empty:
                libc().umount2(b"/tmp", MNT_DETACH)
                self.tmp_mounted = None
        else:
            import shutil

            shutil.rmtree(d, ignore_errors=True)

    def empty_ipc(self):
        """Removes every SysV object a job left in the worker's own IPC namespace."""
        if not self.ipcns:
            return
        lc = libc()
        for name, rm in (("shm", lambda i: lc.shmctl(i, IPC_RMID, None)),
                         ("msg", lambda i: lc.msgctl(i, IPC_RMID, None)),
                         ("sem", lambda i: lc.semctl(i, 0, IPC_RMID))):
            try:
                with open("/proc/sysvipc/" + name) as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 1:
                    try:
                        rm(int(fields[1]))
                    except (ValueError, OSError):
                        pass

    def is_spare(self, pid):
        """The zygote's own child (the spare waiting for the next job) belongs to the worker.
        Called after the job's child was reaped, so no other child of the zygote exists."""
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                return int(f.read().rsplit(b")", 1)[1].split()[1]) == self.zygote_pid
        except (OSError, ValueError, IndexError):
            return False

    def leftovers(self):
        """Processes of the finished job that are still around."""
        if self.pidns:
            pids = {int(e) for e in os.listdir("/proc") if e.isdigit()}
        else:
            pids = set()
            if self.cg_read_path:
                with open(self.cg_read_path) as f:
                    pids.update(int(x) for x in f.read().split())
            if self.uid is not None:
                pids.update(self.pids_of_uid(self.uid))
        pids.discard(1 if self.pidns else os.getpid())
        pids.discard(self.zygote_pid)
        return [p for p in pids if not self.is_spare(p)]

    def end_child(self, child_pid, exited):
        """Kills every process of the job (escaped sessions and orphans included) and returns
        the job child's wait status as the zygote reaped it (None if unknown)."""
        if not exited:
            try:
                os.kill(child_pid, signal.SIGKILL)
            except OSError:
                pass
        if not self.pidns:
            try:
                os.killpg(child_pid, signal.SIGKILL)
            except OSError:
                pass
        status = self.exit_status(child_pid, 10)
        for _ in range(10000):
            pids = self.leftovers()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            if not self.reap():
                time.sleep(0.0002)
        self.reap()
        return status

    @staticmethod
    def pids_of_uid(uid):
        out = []
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    with open("/proc/%s/status" % e) as f:
                        for line in f:
                            if line.startswith("Uid:"):
                                if int(line.split()[1]) == uid:
                                    out.append(int(e))
                                break
                except (OSError, ValueError, IndexError):
                    pass
        return out

    def reap(self):
        """Reaps every exited child that is not the zygote; returns whether any was reaped."""
        any_reaped = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return any_reaped
            if pid == 0:
                return any_reaped
            if pid == self.zygote_pid:
                raise RuntimeError("the zygote died")
            any_reaped = True

    def zygote_message(self, timeout):
        """Reads one message from the zygote: a new spare (`P`) or a child's exit (`S`)."""
        r, _, _ = select.select([self.zsock], [], [], timeout)
        if not r:
            raise RuntimeError("the zygote did not answer")
        msg, fds, _, _ = socket.recv_fds(self.zsock, 64, 1)
        if not msg:
            raise RuntimeError("the zygote closed its socket")
        if msg[:1] == b"P" and len(fds) == 1:
            if self.spare is not None:
                self.spare[1].close()
            self.spare = (int(msg[1:]), socket.socket(fileno=fds[0]))
        elif msg[:1] == b"S" and not fds:
            pid, status = msg[1:].split()
            self.exits[int(pid)] = int(status)
        else:
            raise RuntimeError("unexpected message from the zygote: %r" % msg[:32])

    def exit_status(self, pid, timeout):
        """The wait status of the zygote's child `pid` once it has ended (None if unknown)."""
        deadline = time.monotonic() + timeout
        while pid not in self.exits:
            self.zygote_message(max(0.0, deadline - time.monotonic()))
        return self.exits.pop(pid)

    def take_spare(self, timeout):
        """The waiting spare, now owned by the caller; the zygote forks the next one."""
        deadline = time.monotonic() + timeout
        while self.spare is None:
            self.zygote_message(max(0.0, deadline - time.monotonic()))
        spare, self.spare = self.spare, None
        self.exits.clear()  # earlier children's: of no interest any more
        self.zsock.send(b"F")
        return spare

    def send(self, obj):
        write_all(self.resp_fd, encode_frame(obj))

    def run_job(self, req):
        lim = dict(self.cfg["limits"])
        lim.update(req.get("limits") or {})
        job_id = req.get("id")
        tests = req.get("tests") or []
        planned = [self.planner.plan(t) for t in tests]
        job = JobState(job_id, planned, lim, req.get("stop_below_ran"))
        for i, (p, _) in enumerate(planned):
            if p[0] == "invalid":
                job.decide(i, {"s": "invalid", "why": p[1]})
        self.cgroup.set_memory(lim["memory_bytes"] + ZYGOTE_MEMORY)
        self.cgroup.memory_start()
        oom_before = self.cgroup.oom_kills()
        deadline = time.monotonic() + lim["job_wall"]
        job_dir = self.job_dir_enter(lim)
        child_plans = [p for p, _ in planned]
        try:
            loaded_once = False
            while not job.hopeless():
                start = job.next_open(0)
                if loaded_once and start >= len(planned):
                    break
                state = self.run_child(job, child_plans, start, req["program"], job_dir, deadline)
                if state.get("program_error") is not None:
                    job.program_error = state["program_error"]
                    break
                if job.program_cpu is None:
                    job.program_cpu = state.get("program_cpu")
                loaded_once = True
                if state.get("deadline"):
                    job.wall_deadline = True
                    break
        finally:
            self.job_dir_leave(job_dir)
            self.empty_ipc()
        oom_after = self.cgroup.oom_kills()
        if oom_before is not None and oom_after is not None and oom_after > oom_before:
            job.events.append("the job hit its memory cgroup limit (%d bytes)" % lim["memory_bytes"])
        for i in range(len(planned)):
            if job.results[i] is None:
                if job.program_error is not None:
                    job.decide(i, {"s": "program_error"})
                elif job.stopped:
                    job.decide(i, {"s": "skipped"})
                else:
                    job.decide(i, {"s": "killed", "why": "job wall deadline"})
        return {
            "id": job_id,
            "end": True,
            "results": job.results,
            "program_error": job.program_error,
            "program_cpu": job.program_cpu,
            "stdout": job.out["stdout"].decode("utf-8", "replace"),
            "stderr": job.out["stderr"].decode("utf-8", "replace"),
            "output_bytes": job.out["total"],
            "events": job.events,
            "memory_peak": self.cgroup.memory_peak(),
            "stopped": job.stopped,
            "wall_deadline": job.wall_deadline,
        }

    def spawn_child(self, job, plans, start, program, job_dir):
        lim = job.lim
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        r_res, w_res = os.pipe()
        payload = marshal.dumps((program, plans, start, float(lim["test_cpu"]), float(lim["program_cpu"])))
        mfd = os.memfd_create("job", os.MFD_CLOEXEC)
        write_all(mfd, payload)
        os.lseek(mfd, 0, os.SEEK_SET)
        remaining_cpu = lim["program_cpu"] + lim["test_cpu"] * max(1, len(plans) - start) + 1
        req = {"dir": job_dir, "memory_bytes": lim["memory_bytes"], "cpu_seconds": remaining_cpu,
               "file_bytes": lim["file_bytes"], "open_files": lim["open_files"], "processes": lim["processes"]}
        msg = json.dumps(req).encode()
        try:
            for _ in range(2):
                pid, handoff = self.take_spare(10)
                try:
                    socket.send_fds(handoff, [msg], [mfd, w_res, w_out, w_err])
                    break
                except OSError:
                    # The spare is gone (a job without a uid of its own can signal it): the next
                    # one takes the job; if that one fails too, its exit status tells why.
                    pass
                finally:
                    handoff.close()
        finally:
            for fd in (mfd, w_res, w_out, w_err):
                os.close(fd)
        for fd in (r_out, r_err, r_res):
            os.set_blocking(fd, False)
        return pid, r_out, r_err, r_res

    def run_child(self, job, plans, start, program, job_dir, deadline):
        """One child: load the program, run tests from `start`; decides results as reports arrive."""
        lim = job.lim
        out = job.out
        out["child"] = 0
        pid, r_out, r_err, r_res = self.spawn_child(job, plans, start, program, job_dir)
        value_bytes = int(lim["value_bytes"])
        channel = ChildChannel(r_res, frame_limit=value_bytes * 8 + (1 << 16),
                               total_limit=(value_bytes * 8 + (1 << 16)) * (len(plans) - start + 3))
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        poller = select.poll()
        fds = {r_out: "stdout", r_err: "stderr"}
        for fd in fds:
            poller.register(fd, select.POLLIN)
        if pidfd is not None:
            # Reports are read when something else wakes the loop (the child's exit, output, the
            # tick), not one wake per report: the child runs on while its reports queue up.
            poller.register(pidfd, select.POLLIN)
            try:
                fcntl.fcntl(r_res, F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
        else:
            poller.register(r_res, select.POLLIN)
        state = {}
        loaded = False
        current = start  # the test the child is running (or program load while not loaded)
        exited = False
        kill_reason = None
        status = None
        stat_path = "/proc/%d/stat" % pid
        tick = 0.05
        cpu_base = None

        def cpu_now():
            c = self.cgroup.cpu_seconds()
            if c is not None:
                return c
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

        cpu_base = cpu_now()
        res_open = True
        try:
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
                    elif fd == r_res:
                        pass
                    else:
                        name = fds.get(fd)
                        if name and not drain(fd, name):
                            poller.unregister(fd)
                if out["child"] > lim["max_output_bytes"]:
                    kill_reason = "output limit"
                    break
                if pidfd is None and not exited:
                    # The child is the zygote's, not ours to wait for: gone or a zombie is exited.
                    try:
                        with open(stat_path, "rb") as f:
                            exited = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
                    except (OSError, IndexError):
                        exited = True
                try:
                    if res_open:
                        channel.fill()
                        if channel.eof:
                            if pidfd is None:
                                poller.unregister(r_res)
                            res_open = False
                    for msg in channel.messages():
                        progressed = True
                        if not loaded:
                            p = msg.get("p")
                            if p == "ok":
                                loaded = True
                                state["program_cpu"] = _seconds(msg.get("cpu"))
                                continue
                            if p == "timeout":
                                state["program_error"] = {"kind": "Timeout", "msg": "program load exceeded its CPU budget"}
                            elif p == "error":
                                state["program_error"] = {"kind": clean_text(str(msg.get("kind")), 100),
                                                          "msg": clean_text(str(msg.get("msg")), 2000)}
                            elif p == "setup":
                                state["program_error"] = {"kind": "SandboxSetup", "msg": clean_text(str(msg.get("msg")), 2000)}
                            else:
                                raise Violation("unexpected report before the program loaded")
                            break
                        if msg.get("done") is True:
                            if current < len(plans):
                                raise Violation("done before every test reported")
                            state["done"] = True
                            break
                        job.decide_from_child(current, msg)
                        current = job.next_open(current + 1)
                        if job.hopeless():
                            kill_reason = "stopped"
                            break
                    if kill_reason == "stopped":
                        break
                except Violation as v:
                    kill_reason = "protocol violation: %s" % v
                    break
                if state.get("done") or "program_error" in state:
                    break
                if exited:
                    # The child is gone and what it wrote was read above (a process it left behind
                    # may still hold the pipe open: it is not waited for).
                    break
                if progressed:
                    cpu_base = None
                    continue
                # CPU-time backstop for the current test (or program load), from the job's cgroup
                # where there is one: every process of the job counts, and only a report for the
                # current test (each test reports once) moves the base, to the first quiet poll
                # after it (so reports that stream in cost no cgroup read each).
                cpu = cpu_now()
                if cpu_base is None:
                    cpu_base = cpu
                elif cpu is not None:
                    budget = lim["test_cpu"] if loaded else lim["program_cpu"]
                    if cpu - cpu_base > budget + 0.1:
                        kill_reason = "cpu"
                        break
        finally:
            # End of this child: kill every process of the job, learning how the child ended.
            status = self.end_child(pid, exited)
            for fd, name in ((r_out, "stdout"), (r_err, "stderr")):
                drain(fd, name)
            for fd in (r_out, r_err, r_res) + ((pidfd,) if pidfd is not None else ()):
                os.close(fd)
        if state.get("done") or "program_error" in state:
            return state
        if kill_reason == "stopped":
            job.events.append("stopped early after test %d: too few tests can still run to their end" % (current - 1))
            return state
        if kill_reason == "deadline":
            state["deadline"] = True
            job.events.append("job wall deadline reached")
            if not loaded:
                state["program_error"] = {"kind": "Timeout", "msg": "job wall deadline during program load"}
            return state
        how = describe_status(status)
        if kill_reason:
            job.events.append("%s: killed (%s)" % ("test %d" % current if loaded else "program load", kill_reason))
        if not loaded:
            if kill_reason == "cpu":
                state["program_error"] = {"kind": "Timeout", "msg": "program load exceeded its CPU budget"}
            else:
                state["program_error"] = {"kind": "Died", "msg": kill_reason or how}
            return state
        if current < len(plans):
            if kill_reason == "cpu":
                job.decide(current, {"s": "timeout"})
            elif kill_reason:
                job.decide(current, {"s": "killed", "why": kill_reason})
            elif status is not None and os.WIFEXITED(status):
                job.decide(current, {"s": "raised", "kind": "ProcessExit(%d)" % os.WEXITSTATUS(status)})
            else:
                job.decide(current, {"s": "killed", "why": how})
        return state

    def serve(self):
        hello = {"hello": True, "protocol": PROTOCOL, "python": sys.version.split()[0],
                 "pid": os.getpid(), "features": FEATURES,
                 "hash_seed_fixed": sys.flags.hash_randomization == 0}
        self.send(hello)
        while True:
            try:
                req = read_frame(self.req_fd)
            except EOFError:
                os._exit(0)
            if not isinstance(req, dict) or req.get("shutdown"):
                os._exit(0)
            try:
                resp = self.run_job(req)
            except Exception:  # a bug here must surface as a failed job, never a pass
                import traceback

                resp = {"id": req.get("id"), "end": True, "worker_error": clean_text(traceback.format_exc(), 4000)}
            self.send(resp)
            if "worker_error" in resp:
                os._exit(1)  # the pool starts a fresh worker


class JobState:
    """What the supervisor knows of one job: per-test results (decided as reports are read),
    output, events. The results go to Rust in the job's closing frame."""

    def __init__(self, job_id, planned, lim, stop_below_ran):
        self.id = job_id
        # Early stop: once fewer than this many tests can still run to their end.
        self.stop_below_ran = stop_below_ran if type(stop_below_ran) is int else None
        self.planned = planned
        self.lim = lim
        self.results = [None] * len(planned)
        self.open = len(planned)  # tests not decided yet
        self.ran = 0  # decided tests that may have run to their end
        self.out = {"keep": lim["output_keep_bytes"], "stdout": bytearray(), "stderr": bytearray(), "total": 0}
        self.events = []
        self.program_error = None
        self.program_cpu = None
        self.stopped = False
        self.wall_deadline = False

    def next_open(self, i):
        while i < len(self.results) and self.results[i] is not None:
            i += 1
        return i

    def decide(self, i, r):
        p, judge = self.planned[i]
        r["i"] = i
        r["child"] = p[0] == "assert"
        if judge is not None and r.get("s") in ("v", "raised", "returned"):
            r["judge"] = judge
        self.results[i] = r
        self.open -= 1
        self.ran += self.may_have_run(r)

    def decide_from_child(self, current, msg):
        """Checks one report from the child for the test it is running; raises Violation."""
        if current >= len(self.planned):
            raise Violation("report after the last test")
        i = msg.get("i")
        if type(i) is not int or i != current:
            raise Violation("report out of order")
        mode = self.planned[current][0][0]
        s = msg.get("s")
        allowed = {"assert": ASSERT_STATUSES, "raises": RAISES_STATUSES}.get(mode, VALUE_STATUSES)
        if s not in allowed:
            # A split test can only come back as a value: a "pass" for it would be forged.
            raise Violation("report of the wrong kind for test %d" % current)
        r = {"s": s}
        if s == "v":
            v = msg.get("v")
            if not _valid_value(v):
                raise Violation("malformed value for test %d" % current)
            r["v"] = v
        elif s == "raised":
            r["kind"] = clean_text(str(msg.get("kind")), 120)
            mro = msg.get("mro")
            if type(mro) is list and len(mro) <= 64 and all(type(m) is str and len(m) <= 200 for m in mro):
                r["mro"] = mro
        for k in ("cpu", "wall"):
            x = _seconds(msg.get(k))
            if x is not None:
                r[k] = x
        self.decide(current, r)

    def may_have_run(self, r):
        """Whether a decided test can count as one that ran to its end (Pass or Fail): judged
        optimistically, so a stop never depends on a comparison made later in Rust."""
        s = r.get("s")
        if s in ("pass", "fail", "returned"):
            return True
        if s == "v":
            v = r.get("v")
            return not (type(v) is list and v and v[0] == "T")
        if s == "raised":
            judge = r.get("judge")
            return bool(judge and judge.get("cmp") == "raises"
                        and any(n in judge.get("names", ()) for n in r.get("mro", ())))
        return False

    def hopeless(self):
        """True (and the job marked stopped) once the early-stop count is out of reach."""
        if self.stop_below_ran is None or self.stopped:
            return self.stopped
        if self.ran + self.open < self.stop_below_ran:
            self.stopped = True
        return self.stopped


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
