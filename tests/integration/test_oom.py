"""Allocation failure: one allocation made by mailpull's own code fails
(tests/failmalloc.c), at every point a whole run reaches (or an even sample
of them); and, at a sample of points, that one and every later one, as
when memory has run out for good. Each time mailpull must end with an error message and an exit
status, never a signal or a hang; nothing may be lost or duplicated, and
the next run, with memory back, must complete.

Runs with the plain build only: under a sanitizer or valgrind another
allocator sits in front of the preloaded one.
"""

import collections
import os
import random
import re
import time

import pytest

from conftest import EX_OK, VALGRIND, FetchCase, preload_lib, report

# Allocation points tried per case: every one when a run makes fewer, else
# an even sample over the whole run whose offset the seed picks, so that
# runs with other seeds try other points (`make oomtest` tries them all).
# Memory that stays gone is sampled more thinly: most of its paths are the
# single failure's.
KINDS = {"one": ("FM_FAIL_AT", int(os.environ.get("MAILPULL_OOM_POINTS", "48"))),
         "all-after": ("FM_FAIL_FROM", int(os.environ.get("MAILPULL_OOM_FROM_POINTS", "12")))}
SEED = int(os.environ.get("MAILPULL_TEST_SEED", str(int(time.time()))))
SHARDS = 3
NMSG = 4


class Case(FetchCase):
    def __init__(self, mp, proto, keep, name):
        super().__init__(mp, proto, keep, name, nmsg=NMSG, tag="oom")
        self.log = mp.path(name, "fm.log")

    def fail(self, lib, n, var):
        """A run with allocation n failing (var: FM_FAIL_AT or FM_FAIL_FROM)."""
        return self.run(env={"LD_PRELOAD": lib, "FM_LOG": self.log, var: str(n)})

    def log_lines(self):
        with open(self.log) as f:
            return [ln.split() for ln in f.read().splitlines()]


MODES = {"pop3-keep-no": ("pop3", False), "imap-keep-no": ("imap", False),
         "imap-keep-yes": ("imap", True)}


@pytest.mark.skipif(VALGRIND, reason="valgrind replaces the allocator")
@pytest.mark.parametrize("share", range(SHARDS))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_allocation_failure(mp, kind, mode, share):
    if mp.sanitized:
        pytest.skip("a sanitizer replaces the allocator")
    lib = preload_lib(mp, "MAILPULL_FAILMALLOC", "failmalloc.so")
    proto, keep = MODES[mode]
    var, max_points = KINDS[kind]

    # A whole run counts the allocations it makes.
    calib = Case(mp, proto, keep, "calib")
    r = calib.fail(lib, 0, "FM_FAIL_AT")
    assert r.rc == EX_OK, f"the run without a failure failed:\n{r}"
    calib.check_complete("the run without a failure")
    total = int(calib.log_lines()[0][2])
    assert total > 50, f"only {total} allocations counted: is the library working?"

    if total <= max_points:
        points = list(range(1, total + 1))
    else:
        step = total / max_points
        frac = random.Random(f"{SEED} {mode} {kind}").random()
        points = sorted({1 + int((i + frac) * step) for i in range(max_points)})
    points = points[share::SHARDS]

    failed_runs = 0
    codes = collections.Counter()
    odd = []
    for n in points:
        c = Case(mp, proto, keep, f"at{n}")
        r = c.fail(lib, n, var)
        when = f"{mode}: allocation {n} of {total} failed" + \
            (" and every one after it" if kind == "all-after" else "")
        lines = c.log_lines()
        fired = any(ln[4] == "1" for ln in lines)
        # A signal shows as a negative status: never acceptable.
        assert r.rc >= 0, f"{when}: mailpull died by signal {-r.rc}\n{r}"
        assert r.rc != 101, f"{when}: crash point reached\n{r}"
        if not fired:
            # Fewer allocations this time (timing: a shorter read loop).
            assert r.rc == EX_OK, f"{when}: no allocation failed, yet the run failed\n{r}"
            c.check_complete(when + " (never reached)")
            continue
        if r.rc == EX_OK:
            # Success is a claim that the job is done.
            c.check_complete(when + " (exit 0)")
        else:
            failed_runs += 1
            codes[r.rc] += 1
            err = r.err.strip()
            assert err, f"{when}: exit {r.rc} without a message\n{r}"
            assert re.search(r"mailpull: (error|warning)", err), f"{when}: no error line\n{r}"
            if r.rc != 75 or not re.search(r"out of memory|Cannot allocate memory", err):
                odd.append(f"allocation {n} (at {[ln[6] for ln in lines if ln[4] == '1']}): "
                           f"exit {r.rc}: {err}")
        c.check_safe(when)
        r2 = c.run()
        assert r2.rc == EX_OK, f"{when}: the next run failed\n{r2}"
        c.check_complete(f"{when}, after the next run")
    report(f"{mode} allocation failures ({kind}, seed {SEED}), share {share + 1} of {SHARDS}: {len(points)} of "
           f"{total} points tried, {failed_runs} runs failed cleanly (exit "
           f"{', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))}), nothing lost")
    assert failed_runs > 0, "no injected failure made a run fail"
    assert not odd, f"{mode}: not told as a lack of memory:\n" + "\n".join(odd)
