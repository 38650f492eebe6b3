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
import re

import pytest

from conftest import EX_OK, VALGRIND, make_message, digest, report
from mprun import maildir_files

# Allocation points tried per case: every one when a run makes fewer, else
# an even sample over the whole run. Memory that stays gone is sampled more
# thinly: most of its paths are the single failure's.
KINDS = {"one": ("FM_FAIL_AT", int(os.environ.get("MAILPULL_OOM_POINTS", "160"))),
         "all-after": ("FM_FAIL_FROM", int(os.environ.get("MAILPULL_OOM_FROM_POINTS", "30")))}
SHARDS = 3
NMSG = 4


def failmalloc_lib(mp):
    lib = os.environ.get("MAILPULL_FAILMALLOC")
    if not lib:
        lib = os.path.join(os.path.dirname(mp.bin), "tests", "failmalloc.so")
    if not os.path.exists(lib):
        if os.environ.get("MAILPULL_FAILMALLOC"):
            pytest.fail(f"MAILPULL_FAILMALLOC={lib} does not exist")
        pytest.skip(f"no allocation failure library at {lib} (make {os.path.relpath(lib)})")
    return lib


class Case:
    def __init__(self, mp, proto, keep, name):
        self.mp = mp
        self.keep = keep
        self.user = mp.new_user("oom")
        self.msgs = [make_message(i, tag=self.user, size=3000) for i in range(NMSG)]
        self.want = collections.Counter(digest(m) for m in self.msgs)
        mp.dc.add_messages(self.user, self.msgs)
        self.maildir = mp.path(name, "Maildir")
        self.state = mp.path(name, "state")
        self.cfg = mp.path(name, "mailpull.conf")
        os.makedirs(mp.path(name))
        if proto == "pop3":
            acct = mp.pop3_account(self.user, self.maildir, keep=keep)
        else:
            acct = mp.imap_account(self.user, self.maildir, keep=keep)
        mp.configure(acct, path=self.cfg, state_dir=self.state)
        self.log = mp.path(name, "fm.log")

    def run(self, lib=None, fail_at=0, var="FM_FAIL_AT"):
        env = None
        if lib:
            env = {"LD_PRELOAD": lib, "FM_LOG": self.log, var: str(fail_at)}
        r = self.mp.start(config=self.cfg, env=env).finish(60)
        assert not r.timed_out, f"mailpull hung (allocation {fail_at} failed)\n{r}"
        return r

    def log_lines(self):
        with open(self.log) as f:
            return [ln.split() for ln in f.read().splitlines()]

    def local(self):
        c = collections.Counter()
        for p in maildir_files(self.maildir):
            with open(p, "rb") as f:
                c[digest(f.read())] += 1
        return c

    def server(self):
        return collections.Counter(digest(b) for b in self.mp.dc.bodies(self.user))

    def check_safe(self, when):
        local = self.local()
        assert all(n == 1 for n in local.values()), f"{when}: duplicates {local}"
        assert set(local) <= set(self.want), f"{when}: damaged or foreign files in the Maildir"
        lost = set(self.want) - set(local) - set(self.server())
        assert not lost, f"{when}: {len(lost)} messages neither on the server nor here"

    def check_complete(self, when):
        assert self.local() == self.want, f"{when}: the Maildir is not every message once"
        srv = self.server()
        assert srv == (self.want if self.keep else collections.Counter()), \
            f"{when}: the server holds {sum(srv.values())} messages"


MODES = {"pop3-keep-no": ("pop3", False), "imap-keep-no": ("imap", False),
         "imap-keep-yes": ("imap", True)}


@pytest.mark.skipif(VALGRIND, reason="valgrind replaces the allocator")
@pytest.mark.parametrize("share", range(SHARDS))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_allocation_failure(mp, kind, mode, share):
    if mp.sanitized:
        pytest.skip("a sanitizer replaces the allocator")
    lib = failmalloc_lib(mp)
    proto, keep = MODES[mode]
    var, max_points = KINDS[kind]

    # A whole run counts the allocations it makes.
    calib = Case(mp, proto, keep, "calib")
    r = calib.run(lib)
    assert r.rc == EX_OK, f"the run without a failure failed:\n{r}"
    calib.check_complete("the run without a failure")
    total = int(calib.log_lines()[0][2])
    assert total > 50, f"only {total} allocations counted: is the library working?"

    if total <= max_points:
        points = list(range(1, total + 1))
    else:
        step = total / max_points
        points = sorted({1 + int(i * step) for i in range(max_points)})
    points = points[share::SHARDS]

    failed_runs = 0
    codes = collections.Counter()
    odd = []
    for n in points:
        c = Case(mp, proto, keep, f"at{n}")
        r = c.run(lib, n, var)
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
    report(f"{mode} allocation failures ({kind}), share {share + 1} of {SHARDS}: {len(points)} of "
           f"{total} points tried, {failed_runs} runs failed cleanly (exit "
           f"{', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))}), nothing lost")
    assert failed_runs > 0, "no injected failure made a run fail"
    assert not odd, f"{mode}: not told as a lack of memory:\n" + "\n".join(odd)
