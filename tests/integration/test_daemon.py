"""mailpull --daemon: polls at start-up and on each interval, SIGUSR1 and
--poll-now, SIGHUP reloads (a bad file is refused, the old one kept), SIGTERM
stops cleanly even in the middle of a large fetch, sd_notify messages,
failing accounts back off and are logged once, and the pid file and the
account locks keep other runs out.

Every test bounds its waits; intervals are seconds long.
"""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

import mprun

from conftest import EX_OK, EX_TEMPFAIL, Raw, make_message, multiset
from dovecot import free_port
from fakepop3 import FakePOP3


def wait_for(cond, timeout, what, proc=None):
    deadline = time.monotonic() + timeout * mprun.TIME_SCALE
    while True:
        v = cond()
        if v:
            return v
        if proc is not None:
            r = proc.poll()
            assert r is None, f"the daemon ended while waiting for {what}:\n{r}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stderr_so_far(proc):
    """What the running program wrote to stderr up to now."""
    f = proc._err
    return os.pread(f.fileno(), 1 << 22, 0).decode("utf-8", "replace")


class Daemon:
    """mailpull --daemon with a private XDG_RUNTIME_DIR."""

    def __init__(self, mp, *args, env=None, config=None):
        self.mp = mp
        self.run_dir = mp.path("run")
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        self.env = {"XDG_RUNTIME_DIR": self.run_dir}
        self.env.update(env or {})
        self.config = config
        self.proc = mp.start("--daemon", *args, config=config, env=self.env)

    def poll_now(self, *args):
        return self.mp.run("--poll-now", *args, config=self.config, env=self.env, timeout=30)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def log(self):
        if self.proc.result is not None:
            return self.proc.result.err
        return stderr_so_far(self.proc)

    def wait_log(self, pattern, timeout=20, count=1):
        return wait_for(lambda: len(re.findall(pattern, self.log())) >= count, timeout,
                        f"{pattern!r} in the log", self.proc)

    def pidfiles(self):
        d = os.path.join(self.run_dir, "mailpull")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        r = self.proc.finish(timeout)
        assert not r.timed_out, f"the daemon did not stop on SIGTERM:\n{r}"
        return r


@pytest.fixture
def daemons():
    started = []
    yield started
    for d in started:
        d.proc.kill()
        d.proc.finish(10)


def start(mp, daemons, *args, **kw):
    d = Daemon(mp, *args, **kw)
    daemons.append(d)
    return d


def count_new(mp, maildir=None):
    return len(mp.messages(maildir))


def test_polls_at_start_and_on_interval(mp, daemons):
    user = mp.new_user("d")
    mp.dc.add_message(user, make_message(0, tag=user))
    mp.configure(mp.pop3_account(user, interval=Raw("2s")))
    d = start(mp, daemons)
    wait_for(lambda: count_new(mp) == 1, 20, "the start-up poll", d.proc)
    assert len(d.pidfiles()) == 1
    t0 = time.monotonic()
    mp.dc.add_message(user, make_message(1, tag=user))
    wait_for(lambda: count_new(mp) == 2, 20, "the interval poll", d.proc)
    assert time.monotonic() - t0 < 10 * mprun.TIME_SCALE
    r = d.stop()
    assert r.rc == EX_OK, str(r)
    assert d.pidfiles() == [], "the pid file was left behind"
    assert "mailpull: " in r.err and "stopped" in r.err, str(r)
    assert mp.dc.count(user) == 0


def test_sigusr1_and_poll_now(mp, daemons):
    user = mp.new_user("d")
    mp.configure(mp.pop3_account(user, interval=Raw("1h")))
    # No daemon yet: --poll-now says so and exits 75.
    os.makedirs(mp.path("run"), mode=0o700, exist_ok=True)
    r = mp.run("--poll-now", env={"XDG_RUNTIME_DIR": mp.path("run")}, timeout=30)
    assert r.rc == EX_TEMPFAIL, str(r)
    assert "no daemon runs for" in r.err and r.err.count("\n") == 1, str(r)

    d = start(mp, daemons)
    d.wait_log(r"daemon started")
    time.sleep(1.0)
    mp.dc.add_message(user, make_message(0, tag=user))
    d.signal(signal.SIGUSR1)
    wait_for(lambda: count_new(mp) == 1, 10, "the SIGUSR1 poll", d.proc)

    mp.dc.add_message(user, make_message(1, tag=user))
    r = d.poll_now()
    assert r.rc == EX_OK, str(r)
    wait_for(lambda: count_new(mp) == 2, 10, "the --poll-now poll", d.proc)
    # Another spelling of the same file finds the same daemon.
    r = mp.run("--poll-now", "-q", config=os.path.relpath(mp.config_path, mp.tmp),
               env=d.env, timeout=30)
    assert r.rc == EX_OK and r.err == "", str(r)
    # A second daemon of the same configuration is refused.
    r = mp.run("--daemon", env=d.env, timeout=30)
    assert r.rc == EX_TEMPFAIL, str(r)
    assert f"another daemon (pid {d.proc.pid}) runs for" in r.err, str(r)
    assert d.stop().rc == EX_OK


def test_reload(mp, daemons):
    u1, u2 = mp.new_user("d"), mp.new_user("d")
    mp.dc.add_message(u1, make_message(0, tag=u1))
    mp.dc.add_message(u2, make_message(0, tag=u2))
    md2 = mp.maildir("Maildir2")
    a1 = mp.pop3_account(u1, interval=Raw("1h"))
    mp.configure({"t1": a1})
    d = start(mp, daemons)
    wait_for(lambda: count_new(mp) == 1, 20, "the start-up poll", d.proc)

    # A valid new file: the new account is fetched at once.
    mp.configure({"t1": a1, "t2": mp.pop3_account(u2, md2, interval=Raw("1h"))})
    d.signal(signal.SIGHUP)
    wait_for(lambda: count_new(mp, md2) == 1, 20, "the new account's poll", d.proc)
    d.wait_log(r"reloaded .*: 2 accounts")

    # An invalid one: the error names file:line, the old configuration stays.
    with open(mp.config_path, "a") as f:
        f.write("account broken {\n    protocol = smtp\n}\n")
    line = sum(1 for _ in open(mp.config_path)) - 1
    d.signal(signal.SIGHUP)
    d.wait_log(re.escape(f"{mp.config_path}:{line}:") + r".*keeping the previous configuration")
    mp.dc.add_message(u2, make_message(1, tag=u2))
    d.signal(signal.SIGUSR1)
    wait_for(lambda: count_new(mp, md2) == 2, 20, "a poll after the refused reload", d.proc)
    assert d.stop().rc == EX_OK


def test_sigterm_during_large_fetch(mp, daemons):
    if mprun.TIME_SCALE > 1:
        pytest.skip("the daemon's 5 s grace before SIGKILL is shorter than a slowed-down "
                    "worker needs for a 20 MiB message")
    user = mp.new_user("big")
    msgs = [make_message(0, tag=user, size=20 * 1024 * 1024)]
    msgs += [make_message(i, tag=user, size=200 * 1024) for i in range(1, 40)]
    mp.dc.add_messages(user, msgs)
    mp.configure(mp.pop3_account(user, keep=False, interval=Raw("1h")))
    d = start(mp, daemons)
    # Stop once the transfer is under way: a file in tmp/ is being written.
    wait_for(lambda: mp.tmp_files(), 60, "the fetch to start", d.proc)
    time.sleep(0.2)
    t0 = time.monotonic()
    r = d.stop()
    assert r.rc == EX_OK, str(r)
    assert time.monotonic() - t0 < 10, "stopping took longer than the grace period"
    # Nothing partial in new/: whatever is there is one of the messages, whole.
    want = multiset(msgs)
    got = multiset(mp.messages())
    assert not (got - want), "a partial or foreign message in the Maildir"
    # The message being written when SIGTERM came was finished and kept.
    assert sum(got.values()) >= 1, "the message in progress at SIGTERM was not finished"
    # Nothing lost: a one-shot run completes the job.
    r = mp.run("-q")
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == want
    assert mp.dc.count(user) == 0
    assert mp.tmp_files() == []


class Notifications:
    """A NOTIFY_SOCKET as systemd binds it: AF_UNIX datagrams, one per sd_notify()."""

    def __init__(self, mp):
        self.path = mp.path("notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.msgs = []

    def pump(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def wait(self, needle, timeout=20, after=0):
        """Index of the first message from `after` on containing needle."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(after, len(self.msgs)):
                if needle in self.msgs[i]:
                    return i
            assert time.monotonic() < deadline, f"no {needle!r} notification in {self.msgs}"
            self.pump(0.1)

    def count(self, needle):
        return sum(needle in m for m in self.msgs)

    def close(self):
        self.sock.close()


def test_sd_notify(mp, daemons):
    user = mp.new_user("n")
    mp.dc.add_message(user, make_message(0, tag=user))
    mp.configure(mp.pop3_account(user, interval=Raw("1h")))
    n = Notifications(mp)
    try:
        d = start(mp, daemons, env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "1000000"})
        n.wait("READY=1")
        wait_for(lambda: count_new(mp) == 1, 20, "the start-up poll", d.proc)
        i = n.wait("STATUS=1 account, last poll ")
        assert "1 message fetched" in n.msgs[i], n.msgs
        # Pinged at half the 1 s watchdog period: about 4 times in 2 s.
        before = n.count("WATCHDOG=1")
        n.pump(2.0)
        assert n.count("WATCHDOG=1") - before >= 3, n.msgs
        d.signal(signal.SIGHUP)
        i = n.wait("RELOADING=1")
        assert re.search(r"MONOTONIC_USEC=\d+", n.msgs[i]), n.msgs[i]
        n.wait("READY=1", after=i + 1)
        d.signal(signal.SIGTERM)
        n.wait("STOPPING=1")
        assert d.stop().rc == EX_OK
    finally:
        n.close()


def test_watchdog_for_another_pid_is_ignored(mp, daemons):
    user = mp.new_user("n")
    mp.configure(mp.pop3_account(user, interval=Raw("1h")))
    n = Notifications(mp)
    try:
        d = start(mp, daemons, env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000",
                                    "WATCHDOG_PID": "1"})
        n.wait("READY=1")
        n.pump(1.0)
        assert n.count("WATCHDOG=1") == 0, n.msgs
        assert d.stop().rc == EX_OK
    finally:
        n.close()


def test_stderr_log_format(mp, daemons):
    bad_port = free_port()
    user = mp.new_user("f")
    mp.configure({"bad": mp.pop3_account(user, mp.maildir("Bad"), port=bad_port,
                                         interval=Raw("1h"))})
    d = start(mp, daemons)
    d.wait_log(r"account bad")
    r = d.stop()
    lines = [ln for ln in r.err.splitlines() if ln]
    assert lines and all(ln.startswith("mailpull: ") for ln in lines), r.err
    assert any(ln.startswith(f"mailpull: error: account bad (127.0.0.1:{bad_port}): ")
               for ln in lines), r.err

    # On a journal stream with log = stderr: "<N>" priority prefixes.
    mp.configure({"bad": mp.pop3_account(user, mp.maildir("Bad"), port=bad_port,
                                         interval=Raw("1h"))}, extra="log = stderr")
    errpath = mp.path("journal-stream.txt")
    with open(errpath, "wb") as ef:
        st = os.fstat(ef.fileno())
        env = dict(mp.env, XDG_RUNTIME_DIR=d.run_dir,
                   JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        p = subprocess.Popen(mp.command("-c", mp.config_path, "--daemon"), env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ef)
        try:
            wait_for(lambda: "account bad" in open(errpath).read(), 20, "the error line")
        finally:
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 0
    lines = [ln for ln in open(errpath).read().splitlines() if ln]
    assert all(re.match(r"<[0-7]>mailpull: ", ln) for ln in lines), lines
    assert any(ln.startswith("<3>mailpull: error: account bad") for ln in lines), lines


def stalling_pop3(mp, msgs):
    return FakePOP3(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                    capa=["USER", "UIDL", "TOP"], messages=msgs, stall_on=["RETR"],
                    password="daemon-secret", timeout=120)


def test_oneshot_while_daemon_works(mp, daemons):
    msgs = [make_message(i) for i in range(2)]
    with stalling_pop3(mp, msgs) as srv:
        mp.configure({
            "protocol": Raw("pop3"), "host": "127.0.0.1", "port": srv.port,
            "tls": Raw("implicit"), "tls_ca_file": mp.dc.ca_file, "user": "alice",
            "password": srv.password, "maildir": mp.maildir(), "keep": True,
            "timeout": Raw("60s"), "interval": Raw("1h"),
        })
        d = start(mp, daemons)
        try:
            wait_for(lambda: srv.stalled.is_set(), 30, "the daemon to reach RETR", d.proc)
            r = mp.run(timeout=30)
            assert r.rc == EX_TEMPFAIL, str(r)
            assert r.err.count("\n") == 1 and "t1" in r.err, str(r)
        finally:
            srv.release()
        wait_for(lambda: count_new(mp) == 2, 30, "the daemon's fetch", d.proc)
        assert d.stop().rc == EX_OK
    # The password never reaches the log.
    assert "daemon-secret" not in d.proc.result.err


def test_failing_account_backs_off(mp, daemons):
    good, bad = mp.new_user("g"), mp.new_user("b")
    bad_port = free_port()
    mp.dc.add_message(good, make_message(0, tag=good))
    mp.dc.add_message(bad, make_message(0, tag=bad))
    accounts = {
        "bad": mp.pop3_account(bad, mp.maildir("Bad"), port=bad_port, interval=Raw("2s")),
        "good": mp.pop3_account(good, mp.maildir("Good"), interval=Raw("2s")),
    }
    mp.configure(accounts, extra="parallel = 1")
    d = start(mp, daemons)
    t0 = time.monotonic()
    wait_for(lambda: count_new(mp, mp.maildir("Good")) == 1, 20, "the good account", d.proc)
    assert time.monotonic() - t0 < 10 * mprun.TIME_SCALE
    mp.dc.add_message(good, make_message(1, tag=good))
    wait_for(lambda: count_new(mp, mp.maildir("Good")) == 2, 20, "the good account's 2nd poll",
             d.proc)
    # Several retries by now (1 s, then 2 s apart), one error line.
    time.sleep(3)
    log = d.log()
    assert log.count("error: account bad") == 1, log
    assert "account good" not in log.replace("account good:", ""), log

    # Fixed: recovery is logged once.
    accounts["bad"]["port"] = mp.dc.pop3s_port
    mp.configure(accounts, extra="parallel = 1")
    d.signal(signal.SIGHUP)
    wait_for(lambda: count_new(mp, mp.maildir("Bad")) == 1, 20, "the repaired account", d.proc)
    d.wait_log(r"account bad .*working again after \d+ failed attempt")
    time.sleep(2.5)
    assert d.log().count("working again") == 1
    assert d.stop().rc == EX_OK


def test_idle_account_polls(mp, daemons):
    """idle = yes: fetched at start-up and on SIGUSR1, with or without IDLE."""
    user = mp.new_user("i")
    mp.dc.add_message(user, make_message(0, tag=user))
    mp.configure(mp.imap_account(user, idle=True, interval=Raw("1h")))
    d = start(mp, daemons)
    wait_for(lambda: count_new(mp) == 1, 20, "the start-up poll", d.proc)
    time.sleep(1.0)
    mp.dc.add_message(user, make_message(1, tag=user))
    d.signal(signal.SIGUSR1)
    wait_for(lambda: count_new(mp) == 2, 20, "new mail", d.proc)
    assert d.stop().rc == EX_OK
    assert d.log().count("instead of IDLE") <= 1
