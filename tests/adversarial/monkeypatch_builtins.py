# Replaces builtins and library functions a harness might use to check results, then returns a
# wrong answer. Expected: the wrong answer fails, a right one still passes.
import builtins
import json

builtins.isinstance = lambda *a: True
builtins.type = lambda *a: int
builtins.repr = lambda *a: "42"
builtins.str = lambda *a: "42"
builtins.len = lambda *a: 0
builtins.range = lambda *a: iter(())
builtins.AssertionError = KeyboardInterrupt
builtins.BaseException = KeyboardInterrupt
json.dumps = lambda *a, **k: '{"s": "pass"}'


def wrong():
    return 41


def right():
    return [1, 2]
