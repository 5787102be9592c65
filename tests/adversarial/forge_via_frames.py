# The reproducer of issue 13: walks up the stack to the harness's child_main for its `send`, and
# further up to run_job for the planned tests with their expected values, then reports every test
# as passed with the expected value. With expected values outside the child there is no run_job
# (nor any plan with an expected value) above the candidate: the walk runs off the stack.
# Expected: the program fails to load (AttributeError); every test is a program error.
import sys, os


def _forge():
    f = sys._getframe(1)
    while f.f_code.co_name != "child_main":
        f = f.f_back
    L = f.f_locals
    g = f
    while g.f_code.co_name != "run_job":
        g = g.f_back
    L["send"]({"p": "ok"})
    for i, (plan, exp) in enumerate(g.f_locals["planned"]):
        if plan["mode"] == "assert":
            L["send"]({"i": i, "s": "pass"})
        else:
            L["send"]({"i": i, "s": "v", "v": exp["value"] if exp["cmp"] == "eq" else ["b", exp["cmp"] == "truthy"]})
    L["send"]({"done": True})
    os._exit(0)


_F = _forge()


def solve(*a, **k):
    return None
