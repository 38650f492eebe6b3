"""Exactly once: kill mailpull at any point, run it again, and every message
is in the Maildir exactly once; at no point is a message missing from both
the server and the Maildir.

MAILPULL_CRASH_AT=N makes mailpull _exit(101) at its Nth durability step;
the random-time tests use SIGKILL. MAILPULL_TEST_SEED fixes the random
choices (the seed in use is printed); MAILPULL_KILL_RUNS sets how many
runs each random-SIGKILL test kills (default 20).
"""

import collections
import os
import random
import signal
import time

import pytest

from conftest import EX_OK, EX_CRASH, make_message, digest, report
from mprun import base_name, maildir_files

NMSG = 30
MAX_STEPS = 2000
KILL_RUNS = int(os.environ.get("MAILPULL_KILL_RUNS", "20"))
# Crash at every STRIDEth durability step only (the sanitizer pass samples).
STRIDE = max(1, int(os.environ.get("MAILPULL_CRASH_STRIDE", "1")))
SHARDS = 3


@pytest.fixture(scope="module")
def rng():
    seed = int(os.environ.get("MAILPULL_TEST_SEED", str(int(time.time()))))
    report(f"MAILPULL_TEST_SEED={seed}")
    return random.Random(seed)


class Scenario:
    """One mailbox of NMSG messages and one fresh Maildir and state."""

    def __init__(self, mp, name, size=1500, keep=False):
        self.mp = mp
        self.keep = keep
        self.user = mp.new_user("crash")
        self.msgs = [make_message(i, tag=self.user, size=size) for i in range(NMSG)]
        self.want = {digest(m) for m in self.msgs}
        mp.dc.add_messages(self.user, self.msgs)
        self.maildir = mp.path(name, "Maildir")
        self.state = mp.path(name, "state")
        self.config = mp.path(name, "mailpull.conf")
        os.makedirs(mp.path(name))
        mp.configure(mp.pop3_account(self.user, self.maildir, keep=keep), path=self.config,
                     state_dir=self.state)

    def start(self, crash_at=None):
        env = {"MAILPULL_CRASH_AT": str(crash_at)} if crash_at else None
        return self.mp.start(config=self.config, env=env)

    def run(self, crash_at=None):
        r = self.start(crash_at).finish(self.mp.timeout)
        assert not r.timed_out, str(r)
        return r

    def local(self):
        c = collections.Counter()
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            if not os.path.isdir(d):
                continue
            for n in os.listdir(d):
                with open(os.path.join(d, n), "rb") as f:
                    c[digest(f.read())] += 1
        return c

    def server(self):
        return {digest(b) for b in self.mp.dc.bodies(self.user)}

    def tmp(self):
        d = os.path.join(self.maildir, "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def check_safe(self, when):
        """After an interruption: nothing lost, nothing duplicated, nothing foreign."""
        local = self.local()
        dups = {h: n for h, n in local.items() if n > 1}
        assert not dups, f"{when}: duplicates in the Maildir: {dups}"
        foreign = set(local) - self.want
        assert not foreign, f"{when}: {len(foreign)} unexpected or damaged files in the Maildir"
        lost = self.want - set(local) - self.server()
        assert not lost, f"{when}: {len(lost)} messages neither on the server nor in the Maildir"

    def check_complete(self, when):
        local = self.local()
        assert local == collections.Counter({h: 1 for h in self.want}), \
            f"{when}: Maildir holds {sum(local.values())} files, " \
            f"{len(self.want - set(local))} missing, " \
            f"{sum(n - 1 for n in local.values() if n > 1)} duplicates"
        if self.keep:
            assert self.server() == self.want, f"{when}: keep = yes lost mail on the server"
        else:
            assert self.server() == set(), f"{when}: server not empty"
        assert self.tmp() == [], f"{when}: left in tmp/: {self.tmp()}"

    def finish(self, when):
        r = self.run()
        assert r.rc == EX_OK, f"{when}: the rerun failed:\n{r}"
        self.check_complete(when)


@pytest.mark.parametrize("shard", range(SHARDS))
def test_crash_at_every_step(mp, shard):
    """MAILPULL_CRASH_AT=1, 2, ... until a run needs fewer steps than that;
    after each crash, a plain rerun completes the job. The steps are dealt
    out to SHARDS tests, so parallel workers share them."""
    crashed, through = 0, None
    for n in range(1 + shard * STRIDE, MAX_STEPS + 1, STRIDE * SHARDS):
        sc = Scenario(mp, f"at{n}")
        r = sc.run(crash_at=n)
        if r.rc == EX_OK:
            sc.check_complete(f"MAILPULL_CRASH_AT={n} (no crash)")
            through = n
            break
        assert r.rc == EX_CRASH, f"MAILPULL_CRASH_AT={n}: expected exit {EX_CRASH}\n{r}"
        crashed += 1
        sc.check_safe(f"after crash at step {n}")
        sc.finish(f"rerun after crash at step {n}")
    assert through is not None, f"still crashing at step {MAX_STEPS}"
    assert crashed >= 1, "MAILPULL_CRASH_AT had no effect"
    report(f"crash steps, share {shard + 1} of {SHARDS}: {crashed} durability steps "
           f"for {NMSG} messages crashed and recovered (one in {STRIDE * SHARDS}, from step "
           f"{1 + shard * STRIDE}); step {through} ran through")


def test_repeated_crashes_then_rerun(mp, rng):
    """Crash, crash again during the recovery, ..., then complete."""
    probe = Scenario(mp, "probe")
    assert probe.run().rc == EX_OK
    for k in range(5):
        sc = Scenario(mp, f"chain{k}")
        points = []
        for _ in range(6):
            n = rng.randint(1, 60)
            points.append(n)
            r = sc.run(crash_at=n)
            assert r.rc in (EX_OK, EX_CRASH), f"crash points {points}:\n{r}"
            sc.check_safe(f"after crash points {points}")
            if r.rc == EX_OK:
                break
        sc.finish(f"rerun after crash points {points}")


@pytest.mark.parametrize("keep", [False, True], ids=["keep_no", "keep_yes"])
def test_sigkill_at_random_times(mp, rng, keep):
    """SIGKILL at random instants of a run (messages big enough for the run
    to last a while)."""
    size = 200 * 1024
    probe = Scenario(mp, "timing", size=size, keep=keep)
    t0 = time.monotonic()
    assert probe.run().rc == EX_OK
    duration = max(time.monotonic() - t0, 0.05)
    probe.check_complete("uninterrupted run")
    print(f"\nuninterrupted run: {duration:.3f} s")
    kills = 0
    for k in range(KILL_RUNS):
        sc = Scenario(mp, f"kill{k}", size=size, keep=keep)
        delay = rng.uniform(0, duration * 1.1)
        p = sc.start()
        time.sleep(delay)
        p.kill(signal.SIGKILL)
        r = p.finish(mp.timeout)
        if r.signal == signal.SIGKILL:
            kills += 1
        else:
            assert r.rc == EX_OK, f"run {k}:\n{r}"
            # Under load the probe can be slow; aim the next kills at the runs
            # actually seen, so most of them land mid-way.
            duration = min(duration, max(r.elapsed, 0.05))
        sc.check_safe(f"after SIGKILL at {delay:.3f} s")
        sc.finish(f"rerun after SIGKILL at {delay:.3f} s")
    report(f"POP3 keep={'yes' if keep else 'no'} SIGKILL: {kills} of {KILL_RUNS} runs killed "
           f"mid-way (an uninterrupted run: {duration:.3f} s)")
    assert kills >= KILL_RUNS // 4, f"only {kills} of {KILL_RUNS} runs were killed before finishing"


def test_rerun_publishes_what_was_recorded(mp):
    """A crash after the state recorded a message but before the rename into
    new/ leaves the tmp file; the next run publishes that very file, even
    when the server no longer has the message."""
    for n in range(1, MAX_STEPS + 1):
        sc = Scenario(mp, f"pub{n}")
        r = sc.run(crash_at=n)
        if r.rc == EX_OK:
            pytest.fail(f"no crash point between recording and publishing in {n - 1} steps")
        assert r.rc == EX_CRASH, str(r)
        tmp = set(sc.tmp())
        published = {base_name(p) for p in maildir_files(sc.maildir)}
        recorded = {name for _, _, name in sc.mp.journal_records(state_dir=sc.state)}
        pending = (recorded & tmp) - published
        if pending:
            break
    contents = {}
    for name in pending:
        with open(os.path.join(sc.maildir, "tmp", name), "rb") as f:
            contents[name] = f.read()
        assert digest(contents[name]) in sc.want, f"recorded tmp/{name} is not a whole message"
    # Take the messages away on the server: only recovery can bring them in now.
    sc.mp.dc.expunge_all(sc.user)
    r = sc.run()
    assert r.rc == EX_OK, str(r)
    for name, data in contents.items():
        now = [p for p in maildir_files(sc.maildir) if base_name(p) == name]
        assert len(now) == 1, f"recorded tmp/{name} was not published (found {now})"
        with open(now[0], "rb") as f:
            assert f.read() == data
    assert sc.tmp() == [], f"left in tmp/: {sc.tmp()}"
    local = sc.local()
    assert all(v == 1 for v in local.values()), "duplicates after recovery"
    report(f"crash at step {n}: {len(pending)} recorded messages published on the rerun")
