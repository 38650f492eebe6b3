"""`mailpull sendmail` and mailpull-sendmail: queueing into the outbox.

No server is involved: these runs only write the outbox, so the fixture
here needs no Dovecot. The configuration has two sending accounts ("work"
and "home") and one that only fetches ("fetchonly").
"""

import os
import shutil
import re
import stat
import tempfile

import pytest

import mprun
from mprun import Raw
from conftest import MailPull, VALGRIND, EX_OK, EX_USAGE, EX_IOERR, EX_CONFIG, preload_lib

EX_DATAERR = 65

MSGID_RE = rb"Message-ID: <[0-9]+\.[0-9a-f]{20}@([^>]+)>"
DATE_RE = (rb"Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{1,2} "
           rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
           rb"[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}")


class Sendmail(MailPull):
    """A MailPull without a server: config writing and sendmail runs."""

    def account(self, name, **over):
        a = {
            "protocol": Raw("imap"),
            "host": "127.0.0.1",
            "user": f"{name}-user@example.org",
            "password": "secret",
            "maildir": self.path(name, "Maildir"),
        }
        a.update(over)
        return a

    def sending(self, name, **over):
        a = self.account(name, smtp_host="127.0.0.1", outbox=self.outbox(name))
        a.update(over)
        return a

    def outbox(self, name):
        return self.path(name, "Outbox")

    def setup(self, accounts=None):
        if accounts is None:
            accounts = {
                "fetchonly": self.account("fetchonly"),
                "work": self.sending("work", **{"from": "me@work.example"}),
                "home": self.sending("home", smtp_user="Me@Home.Example"),
            }
        return self.configure(accounts)

    def send(self, data, *args, config=None, argv0=None, stdin_file=None):
        """Runs `mailpull -c CONF sendmail ARGS` (or argv0 ARGS) with data on stdin."""
        cmd = self.command()
        if argv0:
            cmd[-1] = argv0
        else:
            cmd += ["-c", config or self.config_path, "sendmail"]
        cmd += list(args)
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            p = mprun.Proc(cmd, env=self.env, cwd=self.tmp, stdin=f)
            r = p.finish(self.timeout)
        assert not r.timed_out, f"sendmail hung:\n{r}"
        return r

    def queued(self, name):
        """{base: bytes} of the messages in the account's outbox."""
        out = {}
        for sub in ("new", "cur"):
            d = os.path.join(self.outbox(name), sub)
            for n in (os.listdir(d) if os.path.isdir(d) else []):
                with open(os.path.join(d, n), "rb") as f:
                    out[n.split(":2,")[0]] = f.read()
        return out

    def only(self, name):
        q = self.queued(name)
        assert len(q) == 1, f"{name}: {len(q)} messages queued"
        return next(iter(q.items()))

    def envelope(self, name, base):
        try:
            with open(os.path.join(self.outbox(name), "envelopes", base), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None


@pytest.fixture
def sm(mailpull_bin, tmp_path):
    m = Sendmail(mailpull_bin, tmp_path, None)
    yield m
    if VALGRIND:
        found = m.valgrind_findings()
        assert not found, "valgrind:\n" + "\n".join(found)


def ok(r):
    assert r.rc == EX_OK, str(r)
    assert r.stdout == b"" and r.stderr == b"", f"not silent:\n{r}"


def fail(r, code, *needles):
    assert r.rc == code, f"expected exit {code}\n{r}"
    assert "mailpull: error:" in r.err, str(r)
    for n in needles:
        assert n in r.err, f"{n!r} not in the error output\n{r}"


def split_added(stored, original):
    """stored = original's fields + added fields + the rest: returns the added bytes."""
    sep = original.find(b"\n\n")
    assert sep >= 0
    head, rest = original[:sep + 1], original[sep + 1:]
    assert stored.startswith(head), stored
    assert stored.endswith(rest), stored
    return stored[len(head):len(stored) - len(rest)]


def check_added(added, domain):
    lines = added.split(b"\n")
    assert len(lines) == 3 and lines[2] == b"", added
    m = re.fullmatch(MSGID_RE, lines[0])
    assert m, lines[0]
    assert m.group(1) == domain.encode(), lines[0]
    assert re.fullmatch(DATE_RE, lines[1]), lines[1]


MSG = (b"From: Me <me@work.example>\n"
       b"To: Someone <to@example.net>, cc-like@example.net\n"
       b"Cc: \"Carbon, Copy\" <cc@example.net>\n"
       b"Bcc: hidden@example.com\n"
       b"Subject: test\n"
       b"\n"
       b"Hello.\n"
       b"..a line with two dots\n"
       b"Bye.\n")


def test_queue_t_silent_and_exact(sm):
    sm.setup()
    r = sm.send(MSG, "-t")
    ok(r)
    base, stored = sm.only("work")
    check_added(split_added(stored, MSG), "work.example")
    # -t alone: no envelope, the recipients (Bcc too) are the header's.
    assert sm.envelope("work", base) is None
    assert b"Bcc: hidden@example.com\n" in stored
    assert sm.queued("home") == {}
    assert not os.listdir(os.path.join(sm.outbox("work"), "tmp"))


def test_existing_fields_untouched(sm):
    sm.setup()
    msg = (b"Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n"
           b"Message-Id: <keep-me@example.org>\r\n"
           b"From: me@work.example\r\nTo: a@example.net\r\n\r\nCRLF body\r\n")
    ok(sm.send(msg, "-t"))
    _, stored = sm.only("work")
    assert stored == msg


def test_argument_recipients_and_from(sm):
    sm.setup()
    ok(sm.send(MSG, "-f", "bounce@work.example", "--", "x@example.org",
               "Y <y@example.org>, z@example.org"))
    base, stored = sm.only("work")
    assert sm.envelope("work", base) == (b"mailpull-envelope 1\n"
                                         b"from bounce@work.example\n"
                                         b"rcpt x@example.org\nrcpt y@example.org\n"
                                         b"rcpt z@example.org\n")
    check_added(split_added(stored, MSG), "work.example")


def test_t_with_arguments_and_glued_f(sm):
    sm.setup()
    ok(sm.send(MSG, "-ti", "-f<>", "extra@example.org", "to@example.net"))
    base, _ = sm.only("work")
    assert sm.envelope("work", base) == (b"mailpull-envelope 1\nfrom \n"
                                         b"rcpt extra@example.org\nrcpt to@example.net\n"
                                         b"rcpt cc-like@example.net\nrcpt cc@example.net\n"
                                         b"rcpt hidden@example.com\n")


def test_habitual_options_accepted(sm):
    sm.setup()
    # What mutt, cron and git send-email pass.
    ok(sm.send(MSG, "-oem", "-oi", "-odi", "-FCronDaemon", "-B8BITMIME", "-v", "-bm",
               "-F", "Full Name", "-r", "r@work.example", "to@example.net"))
    base, _ = sm.only("work")
    assert b"from r@work.example\n" in sm.envelope("work", base)


@pytest.mark.parametrize("how", ["a", "from", "smtp_user", "first"])
def test_account_choice(sm, how):
    sm.setup()
    msg = {
        "a": MSG,
        "from": MSG,
        "smtp_user": MSG.replace(b"From: Me <me@work.example>", b"From: <me@home.example>"),
        "first": MSG.replace(b"From: Me <me@work.example>", b"From: other@elsewhere.example"),
    }[how]
    args = ["-a", "home"] if how == "a" else []
    ok(sm.send(msg, *args, "-t"))
    want = {"a": "home", "from": "work", "smtp_user": "home", "first": "work"}[how]
    other = "home" if want == "work" else "work"
    assert len(sm.queued(want)) == 1
    assert sm.queued(other) == {}


def test_account_by_user_case_insensitive(sm):
    sm.setup({
        "work": sm.sending("work"),
        "home": sm.sending("home", user="Boss@Example.ORG"),
    })
    ok(sm.send(b"From: boss@example.org\nTo: a@b.example\n\nx\n", "-t"))
    base, stored = sm.only("home")
    assert b"@example.org>\n" in stored


def test_symlink_argv0(sm):
    sm.setup()
    link = sm.path("mailpull-sendmail")
    os.symlink(sm.bin, link)
    ok(sm.send(MSG, "-C", sm.config_path, "-t", argv0=link))
    assert len(sm.queued("work")) == 1


def test_dot_ending(sm):
    sm.setup()
    msg = MSG + b".\nafter the dot\n"
    ok(sm.send(msg, "-t"))
    _, stored = sm.only("work")
    assert stored.endswith(b"Bye.\n")
    sm2 = sm.path("work", "Outbox")
    for sub in ("new",):
        for n in os.listdir(os.path.join(sm2, sub)):
            os.unlink(os.path.join(sm2, sub, n))
    ok(sm.send(msg, "-t", "-i"))
    _, stored = sm.only("work")
    assert stored.endswith(b"Bye.\n.\nafter the dot\n")


def test_large_message_streams(sm):
    sm.setup()
    body = b"".join(b"%07d the quick brown fox jumps over the lazy dog\n" % i
                    for i in range(200000))
    msg = MSG + body
    ok(sm.send(msg, "-t", "-i"))
    _, stored = sm.only("work")
    check_added(split_added(stored, msg), "work.example")


def test_no_recipients(sm):
    sm.setup()
    fail(sm.send(MSG), EX_DATAERR, "no recipients", "work")
    fail(sm.send(b"From: me@work.example\nSubject: x\n\nx\n", "-t"), EX_DATAERR, "no recipients")
    assert sm.queued("work") == {}


def test_bad_address(sm):
    sm.setup()
    fail(sm.send(MSG, "a@b@c"), EX_DATAERR, "a@b@c")
    fail(sm.send(MSG.replace(b"To: Someone", b"To: \"Someone"), "-t"), EX_DATAERR, "To")
    assert sm.queued("work") == {}


def test_unknown_account(sm):
    sm.setup()
    fail(sm.send(MSG, "-a", "nope", "-t"), EX_USAGE, "nope")
    fail(sm.send(MSG, "-a", "fetchonly", "-t"), EX_CONFIG, "fetchonly", "smtp_host")


def test_no_sending_account(sm):
    sm.setup({"fetchonly": sm.account("fetchonly")})
    fail(sm.send(MSG, "-t"), EX_CONFIG, "no account has smtp_host")


def test_unwritable_outbox(sm):
    # A path through a regular file: ENOTDIR, even for root.
    blocker = sm.path("blocker")
    with open(blocker, "w") as f:
        f.write("x")
    sm.setup({"work": sm.sending("work", outbox=os.path.join(blocker, "Outbox"))})
    fail(sm.send(MSG, "-t"), EX_IOERR, "work", blocker)


def test_readonly_outbox(sm):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    sm.setup()
    os.makedirs(os.path.join(sm.outbox("work"), "tmp"))
    os.makedirs(os.path.join(sm.outbox("work"), "new"))
    os.makedirs(os.path.join(sm.outbox("work"), "cur"))
    os.chmod(os.path.join(sm.outbox("work"), "tmp"), stat.S_IRUSR | stat.S_IXUSR)
    fail(sm.send(MSG, "-t"), EX_IOERR, "work")


@pytest.mark.parametrize("opt", ["-bs", "-bp", "-bd", "-q", "-q1m", "-x", "-oQ/tmp", "-N", "--help"])
def test_bad_option(sm, opt):
    sm.setup()
    fail(sm.send(MSG, opt, "a@example.org"), EX_USAGE, opt[:2])
    assert sm.queued("work") == {}


def test_missing_config(sm):
    fail(sm.send(MSG, "-t", config=sm.path("nonexistent.conf")), EX_CONFIG,
         "nonexistent.conf")


def test_header_without_body(sm):
    sm.setup()
    msg = b"From: me@work.example\nTo: a@example.net\nSubject: no body"
    ok(sm.send(msg, "-t"))
    _, stored = sm.only("work")
    assert stored.startswith(msg + b"\nMessage-ID: <")
    assert re.search(DATE_RE + rb"\n$", stored)


def test_syscall_order(sm):
    """Envelope synced and renamed, then the message synced, renamed, new/ synced."""
    strace = "/usr/bin/strace"
    if not os.access(strace, os.X_OK):
        pytest.skip("no strace")
    if VALGRIND or sm.sanitized:
        pytest.skip("strace does not mix with valgrind or LeakSanitizer (ptrace)")
    sm.setup()
    trace = sm.path("trace")
    cmd = [strace, "-f", "-qq", "-o", trace, "-e", "trace=openat,rename,renameat,renameat2,"
           "fsync,fdatasync", sm.bin, "-c", sm.config_path, "sendmail", "x@example.org"]
    with tempfile.TemporaryFile() as f:
        f.write(MSG)
        f.seek(0)
        r = mprun.Proc(cmd, env=sm.env, cwd=sm.tmp, stdin=f).finish(sm.timeout)
    assert r.rc == EX_OK, str(r)
    with open(trace) as f:
        calls = [ln for ln in f.read().splitlines()
                 if re.search(r"(rename|fsync|fdatasync)", ln)]
    kinds = []
    for ln in calls:
        if "rename" in ln:
            kinds.append("rename-env" if "envelopes" in ln else "rename-msg")
        else:
            kinds.append("sync")
    # sync(env file), rename(env), sync(envelopes/), sync(msg), rename(msg), sync(new/)
    i = kinds.index("rename-env")
    j = kinds.index("rename-msg")
    assert i < j, calls
    assert "sync" in kinds[:i] and "sync" in kinds[i + 1:j] and kinds[j + 1:] == ["sync"], calls


def test_account_by_f_without_from(sm):
    sm.setup()
    ok(sm.send(b"To: a@example.net\n\nno From field\n", "-t", "-f", "Me <me@home.example>"))
    base, stored = sm.only("home")
    assert sm.envelope("home", base) == (b"mailpull-envelope 1\nfrom me@home.example\n"
                                         b"rcpt a@example.net\n")
    # The Message-ID's domain comes from -f when there is no From.
    assert re.search(rb"Message-ID: <[^@]+@home\.example>\n", stored)
    assert sm.queued("work") == {}


@pytest.mark.skipif(VALGRIND, reason="valgrind replaces the allocator")
@pytest.mark.parametrize("var", ["FM_FAIL_AT", "FM_FAIL_FROM"])
def test_allocation_failure(sm, var):
    """Each allocation failing in turn: status 75 and nothing queued, or 0 and the message whole."""
    if sm.sanitized:
        pytest.skip("a sanitizer replaces the allocator")
    lib = preload_lib(sm, "MAILPULL_FAILMALLOC", "failmalloc.so")
    sm.setup()
    log = sm.path("fm.log")
    args = ("-t", "-f", "bounce@work.example", "extra@example.org")

    def run(n):
        if os.path.exists(log):
            os.unlink(log)
        env = dict(sm.env, LD_PRELOAD=lib, FM_LOG=log)
        env[var] = str(n)
        cmd = sm.command() + ["-c", sm.config_path, "sendmail"] + list(args)
        with tempfile.TemporaryFile() as f:
            f.write(MSG)
            f.seek(0)
            r = mprun.Proc(cmd, env=env, cwd=sm.tmp, stdin=f).finish(sm.timeout)
        with open(log) as f:
            fired = any(ln.split()[4] == "1" for ln in f.read().splitlines())
        return r, fired

    r, _ = run(0)
    ok(r)
    with open(log) as f:
        total = int(f.read().split()[2])
    assert total > 10, f"only {total} allocations counted: is the library working?"
    base, good = sm.only("work")
    good_env = sm.envelope("work", base)
    for n in range(1, total + 1):
        shutil.rmtree(sm.outbox("work"), ignore_errors=True)
        r, fired = run(n)
        when = f"allocation {n} of {total} failed"
        assert r.rc >= 0, f"{when}: died by signal\n{r}"
        q = sm.queued("work")
        if r.rc == EX_OK:
            assert len(q) == 1, f"{when}: exit 0 but {len(q)} queued\n{r}"
            base, stored = next(iter(q.items()))
            assert split_added(stored, MSG)[:12] == split_added(good, MSG)[:12]
            assert sm.envelope("work", base) == good_env
            continue
        assert fired, f"{when}: failed though nothing failed\n{r}"
        assert r.rc == 75 and re.search(r"out of memory|Cannot allocate memory", r.err), \
            f"{when}\n{r}"
        assert q == {}, f"{when}: queued and failed"
        for sub in ("tmp", "envelopes"):
            d = os.path.join(sm.outbox("work"), sub)
            assert not os.path.isdir(d) or not os.listdir(d), f"{when}: left in {sub}/"


@pytest.mark.parametrize("form", ["-c", "--config", "--config=", "-cFILE", "sendmail-argv0"])
def test_config_spellings(sm, form):
    sm.setup()
    cmd = sm.command()
    if form == "sendmail-argv0":
        link = sm.path("sendmail")
        os.symlink(sm.bin, link)
        cmd[-1] = link
        cmd += ["-C", sm.config_path]
    elif form == "--config=":
        cmd += ["--config=" + sm.config_path, "sendmail"]
    elif form == "-cFILE":
        cmd += ["-c" + sm.config_path, "sendmail"]
    else:
        cmd += [form, sm.config_path, "sendmail"]
    with tempfile.TemporaryFile() as f:
        f.write(MSG)
        f.seek(0)
        r = mprun.Proc(cmd + ["-t"], env=sm.env, cwd=sm.tmp, stdin=f).finish(sm.timeout)
    ok(r)
    assert len(sm.queued("work")) == 1


def test_not_sendmail(sm):
    """A configuration file named "sendmail" is not the sendmail command."""
    sm.setup()
    os.rename(sm.config_path, sm.path("sendmail"))
    cmd = sm.command() + ["-c", "sendmail", "--check-config"]
    r = mprun.Proc(cmd, env=sm.env, cwd=sm.tmp).finish(sm.timeout)
    assert r.rc == EX_OK, str(r)
    assert "OK, 3 accounts" in r.out
