"""Fixtures for mailpull's integration tests.

MAILPULL_BIN names the binary under test (default: build/mailpull of this
tree; the tests are skipped when neither exists). One private Dovecot serves
the whole session; each test uses fresh user names, so tests do not see each
other's mail.

Tests marked @pytest.mark.servers run once per real server: against the
Dovecot and against a private Cyrus IMAP (one per session too, started when
the first such test runs), both reached as mp.dc. Give the marker names to
run on fewer ("dovecot", "cyrus").
"""

import collections
import hashlib
import os
import tempfile
import sys

import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from dovecot import Dovecot  # noqa: E402
import cyrus as cyrus_mod  # noqa: E402
import postfix as postfix_mod  # noqa: E402
import mprun  # noqa: E402
from mprun import Raw  # noqa: E402

EX_OK = 0
EX_USAGE = 64
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78
EX_CRASH = 101


# Measurements tests want shown even when they pass (peak RSS, step counts),
# printed at the end of the run. Parallel workers append to one file that the
# process which created it prints and removes.
def pytest_configure(config):
    config.addinivalue_line("markers", "servers(*names): run the test against each real "
                            "server named (default: dovecot and cyrus), as mp.dc")
    if not os.environ.get("MAILPULL_REPORT_FILE"):
        fd, path = tempfile.mkstemp(prefix="mailpull-report-")
        os.close(fd)
        os.environ["MAILPULL_REPORT_FILE"] = path
        config.mailpull_report_owner = True


def report(line):
    with open(os.environ["MAILPULL_REPORT_FILE"], "a") as f:
        f.write(line + "\n")
    print("\n" + line)


def pytest_terminal_summary(terminalreporter, config):
    if not getattr(config, "mailpull_report_owner", False):
        return
    path = os.environ.pop("MAILPULL_REPORT_FILE")
    with open(path) as f:
        lines = f.read().splitlines()
    os.unlink(path)
    if lines:
        terminalreporter.section("mailpull measurements")
        for line in lines:
            terminalreporter.write_line(line)


def _find_bin():
    b = os.environ.get("MAILPULL_BIN")
    if b:
        return os.path.abspath(b)
    return os.path.join(ROOT, "build", "mailpull")


@pytest.fixture(scope="session")
def mailpull_bin():
    b = _find_bin()
    if not os.access(b, os.X_OK):
        if os.environ.get("MAILPULL_BIN"):
            pytest.fail(f"MAILPULL_BIN={b} is not an executable file")
        pytest.skip(f"no mailpull binary at {b} (set MAILPULL_BIN)")
    return b


# MAILPULL_VALGRIND=1 runs every mailpull under valgrind memcheck, one log
# per process in the test's directory; a test fails when any log shows an
# error or a definite leak (see the mp fixture).
VALGRIND = bool(os.environ.get("MAILPULL_VALGRIND"))
if VALGRIND and "MAILPULL_TIME_SCALE" not in os.environ:
    mprun.TIME_SCALE = 5.0


def binary_is_sanitized(path):
    """Whether the binary was built with AddressSanitizer (memory use is then
    no measure of mailpull's own)."""
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


@pytest.fixture(scope="session")
def dovecot():
    # Its own directory under /tmp: pytest's tmp dirs are 0700, and the mail
    # user must reach the mail. The LMTP and auth listeners serve the
    # worker's Postfix (the postfix fixture), started only when a test asks.
    # Every test logs in from 127.0.0.1: no login is slowed down by another
    # test's wrong password (auth_delays).
    dc = Dovecot(lmtp=True, auth_inet=True, auth_delays=False)
    dc.start()
    yield dc
    if os.environ.get("MAILPULL_KEEP_DOVECOT"):
        dc.stop()
        print(f"\nDovecot files kept in {dc.workdir}")
    else:
        dc.cleanup()


SERVERS = ("dovecot", "cyrus")


@pytest.fixture(scope="session")
def cyrus():
    """A private Cyrus IMAP. make integration names its unpacked packages
    (MAILPULL_CYRUS_ROOT), so their absence then is a failure, not a skip."""
    why = cyrus_mod.unavailable()
    if why:
        if os.environ.get("MAILPULL_CYRUS_ROOT"):
            pytest.fail(why)
        pytest.skip(why)
    cy = cyrus_mod.Cyrus()
    cy.start()
    report(f"Cyrus ({', '.join(cyrus_mod.versions())}) started in {cy.start_seconds:.2f} s")
    yield cy
    if os.environ.get("MAILPULL_KEEP_DOVECOT"):
        cy.stop()
        print(f"\nCyrus files kept in {cy.workdir}")
    else:
        cy.cleanup()


def _start_postfix(dc, **kw):
    why = postfix_mod.unavailable()
    if why:
        pytest.fail(why)
    return postfix_mod.Postfix(dc, **kw).start()


def _end_postfix(pf):
    if os.environ.get("MAILPULL_KEEP_DOVECOT"):
        pf.stop()
        print(f"\nPostfix files kept in {pf.workdir}")
    else:
        pf.cleanup()


@pytest.fixture(scope="session")
def postfix(dovecot):
    """The worker's private Postfix: submission with implicit TLS on
    postfix.smtps_port and mandatory STARTTLS on postfix.submission_port,
    AUTH by the session Dovecot (any user, dovecot.password), delivering
    USER@mail.test into USER's INBOX of that Dovecot (tests/postfix.py).
    A missing Postfix is a failure, not a skip: tests/deps.sh installs it."""
    pf = _start_postfix(dovecot)
    report(f"Postfix ({postfix_mod.version()}) started in {pf.start_seconds:.2f} s")
    yield pf
    _end_postfix(pf)


@pytest.fixture
def make_postfix(dovecot):
    """Starts further private Postfix instances with other main.cf settings
    (make_postfix(main={"message_size_limit": "20000"})), each stopped at
    the end of the test."""
    started = []

    def make(**kw):
        pf = _start_postfix(dovecot, **kw)
        started.append(pf)
        return pf
    yield make
    for pf in started:
        _end_postfix(pf)


@pytest.fixture
def server_name():
    """Which real server mp.dc is; tests marked servers are parametrized over it."""
    return "dovecot"


def pytest_generate_tests(metafunc):
    m = metafunc.definition.get_closest_marker("servers")
    if m is not None and "server_name" in metafunc.fixturenames:
        metafunc.parametrize("server_name", m.args or SERVERS)


def make_message(i, body=None, size=None, subject=None, tag="m"):
    """A distinct message (LF line ends) with Message-ID <tag-i@test>."""
    subject = subject or f"test message {i}"
    head = (f"From: Sender {i} <sender{i}@example.org>\n"
            f"To: rcpt@example.org\n"
            f"Subject: {subject}\n"
            f"Date: Tue, 25 Nov 2025 10:00:00 +0000\n"
            f"Message-ID: <{tag}-{i}@test>\n\n").encode()
    if body is None:
        body = f"Body of message {i}.\n".encode()
        if size:
            line = (f"{i:06d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2 + "\n").encode()
            body += line * max(1, (size - len(head)) // len(line))
    return head + body


def digest(data):
    return hashlib.sha256(data).hexdigest()


def multiset(messages):
    return collections.Counter(digest(m) for m in messages)


class MailPull:
    """Per-test helper: a private directory, config writing, runs."""

    def __init__(self, binary, tmp, dc):
        self.bin = binary
        self.tmp = str(tmp)
        self.dc = dc
        self.state_dir = os.path.join(self.tmp, "state")
        self.config_path = os.path.join(self.tmp, "mailpull.conf")
        self.sanitized = binary_is_sanitized(binary)
        # Under valgrind, too, memory and time are no measure of mailpull's own.
        self.slow = self.sanitized or VALGRIND
        self.vg_dir = os.path.join(self.tmp, "valgrind")
        home = os.path.join(self.tmp, "home")
        os.makedirs(home, exist_ok=True)
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": home,
            "XDG_STATE_HOME": os.path.join(self.tmp, "xdg-state"),
            "XDG_CONFIG_HOME": os.path.join(self.tmp, "xdg-config"),
            "LANG": "C.UTF-8",
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
            "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1"),
        }
        # Sanitized builds and valgrind are several times slower.
        self.timeout = 240.0 if self.slow else 60.0

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def maildir(self, name="Maildir"):
        return self.path(name)

    def new_user(self, prefix="u"):
        return self.dc.new_user(prefix)

    def pop3_account(self, user, maildir=None, **over):
        return mprun.dovecot_pop3_account(self.dc, user, maildir or self.maildir(), **over)

    def imap_account(self, user, maildir=None, **over):
        return mprun.dovecot_imap_account(self.dc, user, maildir or self.maildir(), **over)

    def sending_account(self, user, pf, maildir=None, smtp_tls="implicit", **over):
        """An IMAPS account of the Dovecot that also sends through the
        Postfix pf: implicit TLS on pf.smtps_port or STARTTLS on
        pf.submission_port; smtp_user and the password default to the
        account's, tls_ca_file (the test CA) serves both servers."""
        a = self.imap_account(user, maildir, **over)
        a.setdefault("smtp_host", pf.host)
        a.setdefault("smtp_port",
                     pf.smtps_port if smtp_tls == "implicit" else pf.submission_port)
        a.setdefault("smtp_tls", Raw(smtp_tls))
        return a

    def configure(self, accounts, path=None, mode=0o600, state_dir=True, extra=""):
        """accounts: one account's settings (named "t1") or {name: settings}."""
        if "protocol" in accounts or "host" in accounts:
            accounts = {"t1": accounts}
        sd = self.state_dir if state_dir is True else state_dir
        return mprun.write_config(path or self.config_path, accounts, sd, mode, extra)

    def command(self, *args, leak_check=True):
        """argv for running mailpull with args (under valgrind when asked)."""
        cmd = [self.bin] + list(args)
        if VALGRIND:
            os.makedirs(self.vg_dir, exist_ok=True)
            leaks = (["--leak-check=full", "--show-leak-kinds=definite",
                      "--errors-for-leak-kinds=definite"] if leak_check else ["--leak-check=no"])
            cmd = ["valgrind", "--quiet", *leaks, "--track-origins=yes",
                   "--child-silent-after-fork=no",
                   f"--log-file={self.vg_dir}/%p.log"] + cmd
        return cmd

    def valgrind_findings(self):
        """Text of every non-empty valgrind log of this test."""
        found = []
        if os.path.isdir(self.vg_dir):
            for name in sorted(os.listdir(self.vg_dir)):
                with open(os.path.join(self.vg_dir, name), errors="replace") as f:
                    text = f.read().strip()
                if text:
                    found.append(f"{name}:\n{text}")
        return found

    def start(self, *args, config=None, env=None, measure_rss=False, stdin=None):
        """stdin: bytes fed to the program (through a file), else /dev/null."""
        e = dict(self.env)
        if env:
            e.update(env)
        # A simulated crash (_exit at a durability step) leaves memory
        # behind by design; only memory errors count in such a run.
        cmd = self.command(leak_check="MAILPULL_CRASH_AT" not in e)
        if config is not False:
            cmd += ["-c", config or self.config_path]
        cmd += list(args)
        if stdin is None:
            return mprun.Proc(cmd, env=e, cwd=self.tmp, measure_rss=measure_rss)
        fd, path = tempfile.mkstemp(prefix="stdin-", dir=self.tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(stdin)
        with open(path, "rb") as f:
            return mprun.Proc(cmd, env=e, cwd=self.tmp, measure_rss=measure_rss, stdin=f)

    def run(self, *args, timeout=None, **kw):
        r = self.start(*args, **kw).finish(timeout or self.timeout)
        assert not r.timed_out, f"mailpull did not finish in time:\n{r}"
        return r

    def messages(self, maildir=None):
        return mprun.maildir_messages(maildir or self.maildir())

    def tmp_files(self, maildir=None):
        d = os.path.join(maildir or self.maildir(), "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def state_file(self, account="t1"):
        return os.path.join(self.state_dir, f"{account}.state")

    def journal_file(self, account="t1"):
        return os.path.join(self.state_dir, f"{account}.journal")

    def journal_records(self, account="t1", state_dir=None):
        """(time, key, maildir_name) of every complete "+" and "L" journal line."""
        recs = []
        path = os.path.join(state_dir or self.state_dir, f"{account}.journal")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return recs
        for line in data.split(b"\n")[:-1]:    # a torn last line has no newline
            parts = line.decode("utf-8", "replace").split(" ")
            if len(parts) >= 4 and parts[0] in ("+", "L"):
                recs.append((parts[1], parts[2], parts[3]))
        return recs


@pytest.fixture
def mp(mailpull_bin, server_name, request, tmp_path):
    m = MailPull(mailpull_bin, tmp_path, request.getfixturevalue(server_name))
    yield m
    if VALGRIND:
        found = m.valgrind_findings()
        assert not found, "valgrind:\n" + "\n".join(found)


def preload_lib(mp, var, name):
    """A test library (tests/NAME.c) for LD_PRELOAD: named by the
    environment variable var (make integration sets it, so a missing file
    then is a failure), else looked for beside the binary (skip if absent)."""
    lib = os.environ.get(var)
    if not lib:
        lib = os.path.join(os.path.dirname(mp.bin), "tests", name)
    if not os.path.exists(lib):
        if os.environ.get(var):
            pytest.fail(f"{var}={lib} does not exist")
        pytest.skip(f"no {name} at {lib} (make {os.path.relpath(lib)})")
    return lib


class FetchCase:
    """A fresh user with nmsg messages on the private Dovecot, and a
    Maildir, state directory and configuration of its own under name/:
    one run of the fault tests and what they check after it."""

    def __init__(self, mp, proto, keep, name, nmsg=4, size=3000, tag="case", run_timeout=60,
                 **acct):
        self.mp, self.proto, self.keep, self.name = mp, proto, keep, name
        self.acct = acct
        self.run_timeout = run_timeout
        self.user = mp.new_user(tag)
        self.msgs = [make_message(i, tag=self.user, size=size) for i in range(nmsg)]
        self.want = collections.Counter(digest(m) for m in self.msgs)
        mp.dc.add_messages(self.user, self.msgs)
        self.maildir = mp.path(name, "Maildir")
        self.state = mp.path(name, "state")
        os.makedirs(mp.path(name))

    def run(self, port=None, env=None):
        """One run; port: through a proxy there instead of Dovecot's TLS port."""
        mp = self.mp
        if self.proto == "pop3":
            a = mp.pop3_account(self.user, self.maildir, keep=self.keep, **self.acct)
            a["port"] = port or mp.dc.pop3s_port
        else:
            a = mp.imap_account(self.user, self.maildir, keep=self.keep, **self.acct)
            a["port"] = port or mp.dc.imaps_port
        cfg = mp.path(self.name, "proxy.conf" if port else "mailpull.conf")
        mp.configure({"t1": a}, path=cfg, state_dir=self.state)
        r = mp.start(config=cfg, env=env).finish(self.run_timeout)
        assert not r.timed_out, f"mailpull hung:\n{r}"
        return r

    def local(self):
        c = collections.Counter()
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            for n in (os.listdir(d) if os.path.isdir(d) else []):
                with open(os.path.join(d, n), "rb") as f:
                    c[digest(f.read())] += 1
        return c

    def server(self):
        return collections.Counter(digest(b) for b in self.mp.dc.bodies(self.user))

    def tmp(self):
        d = os.path.join(self.maildir, "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def check_safe(self, when):
        """Nothing duplicated, damaged or lost (here or on the server)."""
        local = self.local()
        assert all(n == 1 for n in local.values()), f"{when}: duplicates {local}"
        assert set(local) <= set(self.want), f"{when}: damaged or foreign files in the Maildir"
        lost = set(self.want) - set(local) - set(self.server())
        assert not lost, f"{when}: {len(lost)} messages neither on the server nor here"

    def check_complete(self, when):
        """Every message here once, tmp/ empty, the server as keep says."""
        assert self.local() == self.want, f"{when}: Maildir is not every message once"
        assert self.tmp() == [], f"{when}: left in tmp/: {self.tmp()}"
        srv = self.server()
        if self.keep:
            assert srv == self.want, f"{when}: server lost messages with keep = yes"
        else:
            assert not srv, f"{when}: server not emptied with keep = no"


def assert_error(r, code, *needles):
    """Exit status code, a "mailpull: error:" line, and each needle in it."""
    assert r.rc == code, f"expected exit {code}\n{r}"
    err = r.err
    assert "mailpull: error:" in err, f"no error line\n{r}"
    for n in needles:
        assert n in err, f"{n!r} not in the error output\n{r}"


__all__ = ["Raw", "report", "make_message", "digest", "multiset", "assert_error", "preload_lib",
           "FetchCase", "EX_OK", "EX_USAGE",
           "EX_IOERR", "EX_TEMPFAIL", "EX_PROTOCOL", "EX_NOPERM", "EX_CONFIG", "EX_CRASH"]
