"""What a server cannot make mailpull miss or swallow: a UIDL reused for
another message, a UIDL that looks like one of mailpull's own records, a
message declared small that never ends, a listing of hundreds of MB, and
headers in raw UTF-8 (RFC 6856 POP3 UTF8, RFC 6855 IMAP UTF8=ACCEPT).

Misbehaviour comes from the scripted fake servers; the UTF-8 round trips
also run against the private Dovecot.
"""

import os
import re
import time

import pytest

from conftest import (EX_OK, EX_PROTOCOL, Raw, make_message, multiset, report)
from fakeimap import FakeIMAP
from fakepop3 import FakePOP3

PASSWORD = "B0unds-S3cret"
USER = "alice"
RUN_LIMIT = 30.0
DESTRUCTIVE = {"DELE", "EXPUNGE", "STORE", "UID STORE", "UID EXPUNGE"}


@pytest.fixture(scope="module")
def cert(dovecot):
    return dovecot.server_cert, dovecot.server_key


def pop3(cert, **kw):
    kw.setdefault("password", PASSWORD)
    kw.setdefault("capa", ["USER", "UIDL", "TOP", "SASL PLAIN"])
    return FakePOP3(tls="implicit", certfile=cert[0], keyfile=cert[1], **kw)


def imap(cert, **kw):
    kw.setdefault("password", PASSWORD)
    kw.setdefault("caps", ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS"])
    return FakeIMAP(tls="implicit", certfile=cert[0], keyfile=cert[1], **kw)


def account(mp, srv, proto, **over):
    a = {
        "protocol": Raw(proto),
        "host": "127.0.0.1",
        "port": srv.port,
        "tls": Raw("implicit"),
        "tls_ca_file": mp.dc.ca_file,
        "user": USER,
        "password": PASSWORD,
        "maildir": mp.maildir(),
        "keep": False,
        "timeout": Raw("5s"),
    }
    a.update(over)
    return a


def run(mp, srv, proto, limit=RUN_LIMIT, rss=False, **over):
    mp.configure(account(mp, srv, proto, **over))
    r = mp.start(measure_rss=rss).finish(limit * (4 if mp.slow else 1))
    print(f"\nexit {r.rc} in {r.elapsed:.1f} s; stderr: {r.err.strip()}")
    assert not r.timed_out, f"mailpull hung:\n{r}"
    assert r.signal == 0 and r.rc >= 0, f"mailpull died:\n{r}"
    for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "Assertion"):
        assert bad not in r.err, f"{bad}:\n{r}"
    return r


def error_line(r, srv, code, *causes):
    assert r.rc == code, f"expected exit {code}\n{r}"
    lines = [ln for ln in r.err.splitlines() if ln.startswith("mailpull: error:")]
    assert lines, f"no error line\n{r}"
    line = lines[-1]
    assert f"account t1 (127.0.0.1:{srv.port})" in line, f"account or host:port missing\n{r}"
    for c in causes:
        assert c.lower() in line.lower(), f"{c!r} not in the error line\n{r}"
    return line


# ---- POP3 UIDLs --------------------------------------------------------------------

def test_pop3_reused_uidl_with_other_size_is_new(mp, cert):
    """The server gives the UIDL of a fetched (and since deleted) message to
    another one of another size: that one is new, fetched, and with keep =
    no deleted only once it is stored."""
    first = make_message(1, tag="reuse")
    second = make_message(2, tag="reuse", size=3000)
    with pop3(cert, messages=[first], uids=["AAA1"]) as srv:
        r = run(mp, srv, "pop3", keep=True)
        assert r.rc == EX_OK, str(r)
        assert multiset(mp.messages()) == multiset([first])
        # The first message went (another client); its UIDL comes back.
        srv.messages = [second]
        srv.uids = ["AAA1"]
        r = run(mp, srv, "pop3", keep=False)
        assert r.rc == EX_OK, str(r)
        assert multiset(mp.messages()) == multiset([first, second])
        assert srv.messages == [], "the fetched message was not deleted"
    recorded = ""
    for path in (mp.state_file(), mp.journal_file()):
        if os.path.exists(path):
            with open(path) as f:
                recorded += f.read()
    assert re.search(r"^L \d+ AAA1 (\S+ )?%d$" % (len(second.replace(b"\n", b"\r\n")) + 0),
                     recorded, re.M), f"no size recorded:\n{recorded}"


def test_pop3_reused_uidl_over_max_size_is_not_deleted(mp, cert):
    """A reused UIDL whose new message is over max_size: left there and,
    with keep = no, never deleted (it was never fetched)."""
    first = make_message(1, tag="reuse2")
    big = make_message(2, tag="reuse2", size=20000)
    with pop3(cert, messages=[first], uids=["BBB1"]) as srv:
        r = run(mp, srv, "pop3", keep=True)
        assert r.rc == EX_OK, str(r)
        srv.messages = [big]
        srv.uids = ["BBB1"]
        r = run(mp, srv, "pop3", keep=False, max_size=Raw("10K"))
        assert r.rc == EX_OK, str(r)
        assert "over max_size" in r.err, str(r)
        assert "DELE" not in srv.verbs(), srv.commands
        assert srv.messages == [big]
    assert multiset(mp.messages()) == multiset([first])


def test_pop3_old_state_without_sizes(mp, cert):
    """A state file from before sizes were kept: the UIDL alone counts, as
    it did (nothing fetched twice), and the run still works."""
    msg = make_message(1, tag="old")
    with pop3(cert, messages=[msg], uids=["CCC1"]) as srv:
        os.makedirs(mp.state_dir, mode=0o700, exist_ok=True)
        with open(mp.state_file(), "w") as f:
            f.write("mailpull-state 1\n1700000000 CCC1\n")
        os.chmod(mp.state_file(), 0o600)
        r = run(mp, srv, "pop3", keep=True)
        assert r.rc == EX_OK, str(r)
        assert mp.messages() == []
        assert "RETR" not in srv.verbs()


@pytest.mark.parametrize("uidl", ["nouidl/x1", "nouidl/"])
def test_pop3_uidl_with_internal_prefix(mp, cert, uidl):
    """A UIDL that begins like mailpull's own records of messages without
    UIDL is a UIDL like any other: fetched once, never again."""
    msgs = [make_message(1, tag="pfx"), make_message(2, tag="pfx")]
    with pop3(cert, messages=msgs, uids=[uidl, "plain-2"]) as srv:
        for _ in range(3):
            r = run(mp, srv, "pop3", keep=True)
            assert r.rc == EX_OK, str(r)
        assert multiset(mp.messages()) == multiset(msgs), "fetched twice"
        assert srv.verbs().count("RETR") == 2, srv.commands


# ---- messages that do not end -------------------------------------------------------

def endless(c, head):
    """Sends head, then message lines until the client goes (or 30 s)."""
    block = b"X-Filler: " + b"y" * 1000 + b"\r\n"
    block *= 64
    end = time.monotonic() + 30
    try:
        c.send(head)
        while time.monotonic() < end and not c.srv._stop.is_set():
            c.send(block)
    except (OSError, ValueError):
        pass
    return False


def test_pop3_declared_small_but_endless_is_cut(mp, cert):
    """LIST says 1 KiB, RETR never ends: cut at max_size, nothing stored,
    nothing deleted, and the error names message and cap."""
    msgs = [make_message(1, tag="endless"), make_message(2, tag="endless")]

    def retr(c, i, payload):
        if i == 0:
            return endless(c, b"+OK message follows\r\nSubject: x\r\n")
        c.send(payload)
        return True

    with pop3(cert, messages=msgs, list_sizes=[1024, 1024], on_retr=retr) as srv:
        r = run(mp, srv, "pop3", max_size=Raw("64K"))
    line = error_line(r, srv, EX_PROTOCOL, "message 1", "65536", "max_size", "1024")
    print(line)
    assert r.elapsed < 15, f"took {r.elapsed:.1f} s"
    assert not DESTRUCTIVE & set(srv.verbs()), srv.commands
    assert len(srv.messages) == 2
    assert mp.messages() == []
    assert mp.tmp_files() == []


def test_imap_literal_over_max_size_is_cut(mp, cert):
    """RFC822.SIZE says 1 KiB, the BODY[] literal announces 10 GB and
    streams: nothing of it is stored, nothing deleted, error names the UID
    and the cap."""
    msg = make_message(1, tag="endless-imap")

    def fetch(srv, c, i, uid, data):
        return endless(c, f"* {i + 1} FETCH (UID {uid} FLAGS () BODY[] {{10000000000}}\r\n"
                       .encode())

    with imap(cert, messages=[msg], on_fetch=fetch) as srv:
        r = run(mp, srv, "imap", max_size=Raw("64K"), keep=False)
    error_line(r, srv, EX_PROTOCOL, "UID 1", "65536", "max_size", "10000000000")
    assert r.elapsed < 15, f"took {r.elapsed:.1f} s"
    assert not DESTRUCTIVE & set(srv.verbs()), srv.commands
    assert mp.messages() == []
    assert mp.tmp_files() == []


def test_imap_literal_over_hard_cap_is_cut(mp, cert):
    """Without max_size the hard per-message cap (1 GiB) holds all the same."""
    msg = make_message(1, tag="hardcap-imap")

    def fetch(srv, c, i, uid, data):
        return endless(c, f"* {i + 1} FETCH (UID {uid} FLAGS () BODY[] {{1073741825}}\r\n"
                       .encode())

    with imap(cert, messages=[msg], on_fetch=fetch) as srv:
        r = run(mp, srv, "imap", keep=False)
    error_line(r, srv, EX_PROTOCOL, "UID 1", "1073741824", "1 GiB")
    assert not DESTRUCTIVE & set(srv.verbs()), srv.commands
    assert mp.messages() == []
    assert mp.tmp_files() == []


# ---- huge listings -------------------------------------------------------------------

LISTING_BYTES = 120 * 1024 * 1024
LISTING_RSS_MIB = 200
UIDL_COUNT = 999999              # just within the cap on messages


def huge_list(c, cmd):
    """+OK, then about 120 MB of "n size" lines, then ".": 10 million messages."""
    c.send(b"+OK\r\n")
    sent, n = 0, 1
    try:
        while sent < LISTING_BYTES and not c.srv._stop.is_set():
            chunk = b"".join(b"%d 1000\r\n" % i for i in range(n, n + 50000))
            n += 50000
            c.send(chunk)
            sent += len(chunk)
        c.send(b".\r\n")
    except (OSError, ValueError):
        return False
    return True


def counted(c, line):
    """+OK, then line % i for i in 1..UIDL_COUNT, then "."."""
    c.send(b"+OK\r\n")
    try:
        for lo in range(1, UIDL_COUNT + 1, 50000):
            hi = min(lo + 50000, UIDL_COUNT + 1)
            c.send(b"".join(line % (i, i) for i in range(lo, hi)))
        c.send(b".\r\n")
    except (OSError, ValueError):
        return False
    return True


LISTINGS = {
    # 10 million LIST entries: over the cap on messages, refused.
    "list": ({"LIST": huge_list}, "more than 1000000 messages"),
    # Just under the cap, each UIDL of the longest kind (70 characters):
    # about 90 MB that must be held, compactly.
    "uidl": ({"LIST": lambda c, cmd: counted(c, b"%d %d\r\n"),
              "UIDL": lambda c, cmd: counted(c, b"%d %067d\r\n")},
             "refused RETR 2"),
}


@pytest.mark.parametrize("kind", sorted(LISTINGS))
def test_pop3_huge_listing_is_bounded(mp, cert, kind):
    """A hostile listing of 100 MB and more: memory stays bounded (about the
    UIDLs' own size at most), far below what it cost before."""
    script, cause = LISTINGS[kind]
    with pop3(cert, messages=[make_message(1, tag="huge")], script=script) as srv:
        r = run(mp, srv, "pop3", rss=True, limit=120)
    rss_mib = r.maxrss_kib / 1024
    report(f"POP3 {kind} listing: peak RSS {rss_mib:.1f} MiB, {r.elapsed:.1f} s"
           f"{' (sanitized build or valgrind)' if mp.slow else ''}")
    error_line(r, srv, EX_PROTOCOL, cause)
    assert not DESTRUCTIVE & set(srv.verbs()), srv.commands
    if mp.slow:
        return
    assert r.maxrss_kib > 0, "peak RSS not measured (is GNU time installed?)"
    assert rss_mib < LISTING_RSS_MIB, f"peak RSS {rss_mib:.1f} MiB"


# ---- headers in raw UTF-8 (RFC 6856, RFC 6855) ----------------------------------------

def utf8_message(i, tag):
    """A message whose From and Subject hold raw UTF-8 (RFC 6532)."""
    return (f"From: Jörg Müller <jörg{i}@bücher.example>\n"
            f"To: rcpt@example.org\n"
            f"Subject: Grüße aus Köln, 日本語 {i}\n"
            f"Date: Tue, 25 Nov 2025 10:00:00 +0000\n"
            f"Message-ID: <{tag}-{i}@test>\n\n"
            f"Body of message {i}, ünïcödé too.\n").encode()


def test_pop3_utf8_sent_when_offered(mp, cert):
    """CAPA offers UTF8: mailpull sends it before logging in, and the
    message comes byte-exact instead of downgraded."""
    msgs = [utf8_message(1, "p-utf8"), utf8_message(2, "p-utf8")]
    with pop3(cert, messages=msgs, downgrade=True,
              capa=["USER", "UIDL", "TOP", "SASL PLAIN", "UTF8 USER"]) as srv:
        r = run(mp, srv, "pop3")
        verbs = srv.verbs()
    assert r.rc == EX_OK, str(r)
    assert "UTF8" in verbs, verbs
    login = [v for v in verbs if v in ("USER", "AUTH")][0]
    assert verbs.index("UTF8") < verbs.index(login), verbs
    assert multiset(mp.messages()) == multiset(msgs)


def test_pop3_utf8_not_sent_unless_offered(mp, cert):
    """Without UTF8 in CAPA no UTF8 command goes out (and the server's
    downgraded copy is what there is to store)."""
    msgs = [utf8_message(1, "p-noutf8")]
    with pop3(cert, messages=msgs, downgrade=True) as srv:
        r = run(mp, srv, "pop3")
        verbs = srv.verbs()
    assert r.rc == EX_OK, str(r)
    assert "UTF8" not in verbs, verbs
    assert len(mp.messages()) == 1


FOLDER = "Entwürfe"


@pytest.mark.parametrize("before_login", [False, True], ids=["after-login", "always"])
def test_imap_utf8_accept_enabled(mp, cert, before_login):
    """UTF8=ACCEPT offered (here only once logged in, or all along):
    ENABLE UTF8=ACCEPT goes out after login, bodies come byte-exact, and
    mailbox names cross the wire in UTF-8 both ways (LIST in, SELECT out)."""
    msgs = [utf8_message(1, "i-utf8"), utf8_message(2, "i-utf8")]
    base = ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS"]
    full = base + ["ENABLE", "UTF8=ACCEPT"]
    with imap(cert, messages=msgs, downgrade=True, utf8_folder=FOLDER,
              caps=full if before_login else base, caps_auth=full) as srv:
        r = run(mp, srv, "imap", keep=True, folders=["INBOX", FOLDER])
        cmds = list(srv.commands)
        raw = srv.received_all()
    assert r.rc == EX_OK, str(r)
    verbs = [c.split(" ", 1)[0].upper() for c in cmds]
    assert "ENABLE" in verbs, cmds
    assert [c for c in cmds if c.upper().startswith("ENABLE")] == ["ENABLE UTF8=ACCEPT"], cmds
    login = [v for v in verbs if v in ("LOGIN", "AUTHENTICATE")][0]
    first_select = [i for i, v in enumerate(verbs) if v in ("SELECT", "EXAMINE", "LIST")][0]
    assert verbs.index(login) < verbs.index("ENABLE") < first_select, cmds
    assert f'"{FOLDER}"'.encode() in raw, raw[-2000:]
    assert b"&APw-" not in raw, "a mailbox name went out in modified UTF-7"
    assert multiset(mp.messages()) == multiset(msgs)
    sub = os.path.join(mp.maildir(), "." + FOLDER)
    assert multiset(mp.messages(sub)) == multiset(msgs)


def test_imap_without_utf8_accept_keeps_mutf7(mp, cert):
    """No UTF8=ACCEPT: no ENABLE for it, names in modified UTF-7 as before."""
    msgs = [utf8_message(1, "i-mutf7")]
    with imap(cert, messages=msgs, utf8_folder=FOLDER,
              caps=["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS", "ENABLE"]) as srv:
        r = run(mp, srv, "imap", keep=True, folders=["INBOX", FOLDER])
        cmds = list(srv.commands)
    assert r.rc == EX_OK, str(r)
    assert not [c for c in cmds if "UTF8=ACCEPT" in c.upper()], cmds
    assert any("Entw&APw-rfe" in c for c in cmds), cmds
    sub = os.path.join(mp.maildir(), "." + FOLDER)
    assert multiset(mp.messages(sub)) == multiset(msgs)


def test_dovecot_raw_utf8_headers_byte_exact(mp):
    """Real messages with raw UTF-8 in From and Subject, from Dovecot, over
    POP3 and IMAP: stored byte for byte."""
    user_p, user_i = mp.new_user("u8p"), mp.new_user("u8i")
    msgs = [utf8_message(i, "dc-utf8") for i in range(3)]
    mp.dc.add_messages(user_p, msgs)
    mp.dc.add_messages(user_i, msgs)
    md_p, md_i = mp.maildir("pop"), mp.maildir("imap")
    mp.configure({"p1": mp.pop3_account(user_p, md_p), "i1": mp.imap_account(user_i, md_i)})
    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages(md_p)) == multiset(msgs)
    assert multiset(mp.messages(md_i)) == multiset(msgs)
