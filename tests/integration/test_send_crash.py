"""Nothing sent twice unnoticed, nothing queued lost (DESIGN invariant 7):
crash the send run at each durable step (MAILPULL_CRASH_AT=N makes mailpull
_exit(101) at its Nth durability step: after "submitting" is synced, after
"accepted" is synced, after the server's Sent copy is appended and before
"copied" is recorded, after the local copy, after the outbox removal), or
kill it with SIGKILL while the server holds back its answer to the final
dot, or at random instants of a 50-message run; then run it again until
the outbox is drained but for held messages, then `send --retry-held`.

Each message must reach the server exactly once, or be held and reported
"may have been sent" (and then it may have arrived twice: sent, held,
retried by the user); none is lost; the server's Sent copy (IMAP) and the
local copy in maildir/.Sent exist exactly once.

Allocation failures too (tests/failmalloc.c): one allocation of the send
run fails, at a sample of points (MAILPULL_OOM_POINTS, default 60): the run
ends with an error line and a status, never a signal, and the runs after it
keep the same promise.

MAILPULL_KILL_RUNS sets how many random SIGKILLs (default 5);
MAILPULL_TEST_SEED repeats the random instants (the seed is printed).
"""

import collections
import os
import random
import re
import signal
import time

import pytest

from conftest import EX_CRASH, EX_OK, VALGRIND, preload_lib, report
from test_send import EX_DATAERR, Sender, send_message

KILL_RUNS = int(os.environ.get("MAILPULL_KILL_RUNS", "5"))
OOM_POINTS = int(os.environ.get("MAILPULL_OOM_POINTS", "60"))
MAX_STEPS = 200


@pytest.fixture(scope="module")
def rng():
    seed = int(os.environ.get("MAILPULL_TEST_SEED", str(int(time.time()))))
    report(f"MAILPULL_TEST_SEED={seed}")
    return random.Random(seed)


MSGID = re.compile(rb"^Message-ID: (<[^>]*>)", re.M | re.I)


class Case:
    """A Sender with n messages queued and what every run said."""

    def __init__(self, mp, name, n, proto="pop3", **knobs):
        self.s = Sender(mp, name, proto=proto, **knobs)
        self.mp = mp
        self.proto = proto
        self.msgs = {}
        for i in range(n):
            m = send_message(i, tag=name, size=3000)
            base = self.s.queue(m)
            self.msgs[base] = m
        self.ids = {b: MSGID.search(m).group(1).decode() for b, m in self.msgs.items()}
        self.errs = []

    def run(self, *args, crash_at=None, env=None):
        env = dict(env or {})
        if crash_at:
            env["MAILPULL_CRASH_AT"] = str(crash_at)
        r = self.s.run("send", *args, env=env or None)
        self.errs.append(r.err)
        return r

    def reported_held(self):
        """Bases some run reported as "may have been sent"."""
        said = "\n".join(self.errs)
        return {b for b in self.msgs
                if re.search(re.escape(b) + r" \([^\n]*may have been sent", said)}

    def server_counts(self):
        c = collections.Counter()
        for data in self.s.received():
            m = MSGID.search(data)
            c[m.group(1).decode() if m else "?"] += 1
        return c

    def drain(self, when):
        """Runs until only held messages are left, then releases them."""
        for _ in range(4):
            r = self.run()
            assert r.rc in (EX_OK, EX_DATAERR), f"{when}: {r}"
            held = {b for b, (st, _) in self.s.records().items() if st == "held"}
            if set(self.s.outbox_bases()) <= held:
                break
        assert set(self.s.outbox_bases()) <= self.reported_held(), \
            f"{when}: left in the outbox, not reported held: {self.s.outbox_bases()}"
        r = self.run("--retry-held")
        assert r.rc == EX_OK, f"{when}: send --retry-held: {r}"

    def check_done(self, when):
        held = self.reported_held()
        counts = self.server_counts()
        for b, mid in self.ids.items():
            n = counts.get(mid, 0)
            assert n >= 1, f"{when}: {b} ({mid}) never reached the server: lost"
            if b not in held:
                assert n == 1, f"{when}: {b} ({mid}) reached the server {n} times, unnoticed"
            else:
                assert n <= 2, f"{when}: held {b} reached the server {n} times"
        assert self.s.outbox_bases() == [], f"{when}: outbox not drained"
        assert self.s.records() == {}, f"{when}: records left: {self.s.records()}"
        local = collections.Counter(MSGID.search(d).group(1).decode()
                                    for d in self.s.sent_local().values())
        assert local == collections.Counter(self.ids.values()), \
            f"{when}: maildir/.Sent is not each message once: {local}"
        assert sorted(self.s.sent_local().values()) == sorted(self.msgs.values())
        tmp = os.path.join(self.s.maildir, ".Sent", "tmp")
        assert not os.listdir(tmp), f"{when}: left in .Sent/tmp: {os.listdir(tmp)}"
        if self.proto == "imap":
            bodies = self.mp.dc.bodies(self.s.user, "Sent")
            ids = collections.Counter(MSGID.search(b).group(1).decode() for b in bodies)
            assert ids == collections.Counter(self.ids.values()), \
                f"{when}: the server's Sent copies are not each message once: {ids}"

    def close(self):
        self.s.close()


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_crash_at_every_step(mp, proto):
    """MAILPULL_CRASH_AT=1, 2, ... until a run goes through; after each
    crash, the reruns finish the job."""
    crashed, through = 0, None
    for n in range(1, MAX_STEPS + 1):
        c = Case(mp, f"{proto}{n}", 3, proto=proto)
        try:
            r = c.run(crash_at=n)
            if r.rc == EX_OK:
                c.check_done(f"MAILPULL_CRASH_AT={n} (no crash)")
                through = n
                break
            assert r.rc == EX_CRASH, f"MAILPULL_CRASH_AT={n}: expected exit {EX_CRASH}\n{r}"
            crashed += 1
            c.drain(f"after the crash at step {n}")
            c.check_done(f"after the crash at step {n}")
        finally:
            c.close()
    assert through is not None, f"still crashing at step {MAX_STEPS}"
    # submitting, accepted, (Sent copy,) local copy, removal: per message.
    per = 5 if proto == "imap" else 4
    assert crashed == 3 * per, f"{crashed} crash points for 3 messages, want {3 * per}"
    report(f"send {proto}: {crashed} crash points for 3 messages, each recovered")


def test_crash_after_submitting_is_held(mp):
    """A crash right after "submitting" is synced (nothing sent yet) cannot
    be told from one after the final dot: the message is held and
    reported, not sent; `send --retry-held` sends it."""
    c = Case(mp, "sub", 1)
    try:
        (base,) = c.msgs
        r = c.run(crash_at=1)
        assert r.rc == EX_CRASH, str(r)
        assert c.s.records()[base][0] == "submitting"
        r = c.run()
        assert r.rc == EX_DATAERR, str(r)
        assert "may have been sent" in r.err and "a crash interrupted" in r.err, r.err
        assert c.s.records()[base][0] == "held"
        assert c.s.transactions() == []
        r = c.run()
        assert r.rc == EX_OK and "held" in r.err, str(r)
        assert c.s.transactions() == []
        r = c.run("--retry-held")
        assert r.rc == EX_OK, str(r)
        c.check_done("after --retry-held")
    finally:
        c.close()


def wait_for(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_sigkill_after_dot_before_reply(mp):
    """SIGKILL while the server holds back its 250 to the final dot: the
    message was accepted, the state says submitting; the next run holds it
    and says so; --retry-held sends it a second time, noticed."""
    c = Case(mp, "dot", 1, slow_dot=30)
    try:
        (base,) = c.msgs
        p = mp.start("send", config=c.s.config)
        assert wait_for(lambda: os.path.exists(c.s.record) and c.s.transactions()), \
            "the message never reached the server"
        p.kill(signal.SIGKILL)
        r = p.finish(mp.timeout)
        assert r.signal == signal.SIGKILL, str(r)
        assert c.s.records()[base][0] == "submitting"
        c.s.srv.slow_dot = 0
        r = c.run()
        assert r.rc == EX_DATAERR and "may have been sent" in r.err, str(r)
        assert len(c.s.transactions()) == 1
        c.drain("after SIGKILL before the reply")
        c.check_done("after SIGKILL before the reply")
        assert c.server_counts()[c.ids[base]] == 2
    finally:
        c.close()


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_sigkill_at_random_times(mp, rng, proto):
    """SIGKILL at random instants of a run sending 50 messages."""
    probe = Case(mp, f"probe{proto}", 50, proto=proto)
    try:
        t0 = time.monotonic()
        r = probe.run()
        duration = max(time.monotonic() - t0, 0.05)
        assert r.rc == EX_OK, str(r)
        probe.check_done("uninterrupted run")
    finally:
        probe.close()
    kills = 0
    for k in range(KILL_RUNS):
        c = Case(mp, f"kill{proto}{k}", 50, proto=proto)
        try:
            delay = rng.uniform(0, duration * 1.1)
            p = mp.start("send", config=c.s.config)
            time.sleep(delay)
            p.kill(signal.SIGKILL)
            r = p.finish(mp.timeout)
            if r.signal == signal.SIGKILL:
                kills += 1
            else:
                assert r.rc == EX_OK, f"run {k}:\n{r}"
                duration = min(duration, max(r.elapsed, 0.05))
            c.drain(f"after SIGKILL at {delay:.3f} s")
            c.check_done(f"after SIGKILL at {delay:.3f} s")
        finally:
            c.close()
    report(f"send {proto} SIGKILL: {kills} of {KILL_RUNS} runs of 50 messages killed mid-way "
           f"(an uninterrupted run: {duration:.3f} s)")
    assert kills >= KILL_RUNS // 2, f"only {kills} of {KILL_RUNS} runs were killed before finishing"


@pytest.mark.skipif(VALGRIND, reason="valgrind replaces the allocator")
@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_allocation_failure(mp, proto, rng):
    """One allocation of a send run fails: an error and a status, never a
    signal; the next runs finish the job with nothing lost or sent twice
    unnoticed."""
    if mp.sanitized:
        pytest.skip("a sanitizer replaces the allocator")
    lib = preload_lib(mp, "MAILPULL_FAILMALLOC", "failmalloc.so")
    calib = Case(mp, f"oomcal{proto}", 2, proto=proto)
    log = os.path.join(calib.s.dir, "fm.log")
    try:
        r = calib.run(env={"LD_PRELOAD": lib, "FM_LOG": log, "FM_FAIL_AT": "0"})
        assert r.rc == EX_OK, str(r)
        calib.check_done("the run without a failure")
        with open(log) as f:
            total = int(f.read().split()[2])
    finally:
        calib.close()
    step = max(1.0, total / OOM_POINTS)
    off = rng.random()
    points = sorted({1 + int((i + off) * step) for i in range(min(total, OOM_POINTS))})
    points = [n for n in points if n <= total]
    failed = 0
    for n in points:
        c = Case(mp, f"oom{proto}{n}", 2, proto=proto)
        try:
            r = c.run(env={"LD_PRELOAD": lib, "FM_FAIL_AT": str(n)})
            when = f"allocation {n} of {total} failed"
            assert r.rc >= 0, f"{when}: mailpull died by signal {-r.rc}\n{r}"
            assert r.rc != EX_CRASH, str(r)
            if r.rc != EX_OK:
                failed += 1
                assert "mailpull: error" in r.err or "mailpull: warning" in r.err, \
                    f"{when}: exit {r.rc} without an error line\n{r}"
            c.drain(when)
            c.check_done(when)
        finally:
            c.close()
    report(f"send {proto} allocation failures: {len(points)} of {total} points tried, "
           f"{failed} runs failed cleanly, nothing lost")
    assert failed > 0, "no injected failure made a run fail"
