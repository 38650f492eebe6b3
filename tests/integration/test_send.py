"""The send run (DESIGN invariant 7) against tests/fakesmtp.py, a scripted
submission server that records every transaction, and, for an IMAP
account's Sent copy, the private Dovecot: what the server receives (byte
for byte: CRLF and dot-stuffing undone, Bcc removed), what stays in the
outbox, the local copy in maildir/.Sent, the state left behind, and the
exit status and words of each failure (4xx retried, 5xx reported once,
recipients refused, a connection lost after the final dot held, STARTTLS
and AUTH failures before anything is sent).
"""

import base64
import itertools
import json
import os
import time

import pytest

from conftest import (EX_OK, EX_NOPERM, EX_PROTOCOL, EX_TEMPFAIL, EX_USAGE, Raw,
                      make_message)
from fakesmtp import FakeSMTP

EX_DATAERR = 65

_seq = itertools.count(1)


def send_message(i=0, tag="snd", subject=None, bcc=True, extra=b"", size=None):
    """A message as a mail reader queues it: LF line ends, a Bcc, a line
    starting with a dot (dot-stuffed on the wire)."""
    subject = subject or f"outgoing {tag} {i}"
    head = (f"From: Me <me@example.org>\n"
            f"To: alice@example.org, Bob <bob@example.org>\n"
            f"Cc: carol@example.org\n"
            + (f"Bcc: hidden@example.org\n" if bcc else "")
            + f"Subject: {subject}\n"
            f"Date: Tue, 25 Nov 2025 10:00:00 +0000\n"
            f"Message-ID: <{tag}-{i}@example.org>\n\n").encode()
    body = f"Hello {i}.\n.leading dot\n..two dots\n".encode() + extra
    if size:
        body += b"x" * 70 + b"\n"
        while len(head) + len(body) < size:
            body += b"y" * 70 + b"\n"
    return head + body


def wire_form(data):
    """What the server must receive: no Bcc field, CRLF line ends."""
    lines = data.split(b"\n")
    out, skipping, in_head = [], False, True
    for ln in lines:
        if in_head and ln == b"":
            in_head = False
        if in_head and ln[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = in_head and ln.lower().startswith(b"bcc:")
        if skipping:
            continue
        out.append(ln)
    return b"\r\n".join(out)


def send_records(state_dir, account="t1"):
    """{base: (state, text)} from the snapshot and journal, as mailpull reads them."""
    recs = {}
    for suffix in (".state", ".journal"):
        try:
            with open(os.path.join(state_dir, account + suffix), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        for line in data.split(b"\n")[:-1]:
            f = line.decode("utf-8", "replace").split(" ")
            if len(f) == 4 and f[0] == "O":
                if f[2] == "queued":
                    recs.pop(f[1], None)
                else:
                    recs[f[1]] = (f[2], f[3])
    return recs


class Sender:
    """A fresh user and directory, a FakeSMTP on a free port, and an account
    (POP3 or IMAP on the private Dovecot) that sends through it."""

    def __init__(self, mp, name="s", proto="pop3", smtp_tls="implicit", acct=None, **knobs):
        self.mp = mp
        self.user = mp.new_user("snd")
        mp.dc.ensure_mailbox(self.user)
        self.dir = mp.path(name)
        os.makedirs(self.dir)
        self.maildir = os.path.join(self.dir, "Maildir")
        self.outbox = os.path.join(self.maildir, ".Outbox")
        self.state = os.path.join(self.dir, "state")
        self.record = os.path.join(self.dir, "smtp.jsonl")
        self.config = os.path.join(self.dir, "mailpull.conf")
        knobs.setdefault("user", self.user)
        knobs.setdefault("password", mp.dc.password)
        self.srv = FakeSMTP(tls=smtp_tls, certfile=mp.dc.server_cert,
                            keyfile=mp.dc.server_key, record=self.record, **knobs).start()
        make = mp.pop3_account if proto == "pop3" else mp.imap_account
        self.acct = make(self.user, self.maildir)
        self.acct.update(smtp_host="127.0.0.1", smtp_port=self.srv.port,
                         smtp_tls=Raw(smtp_tls))
        self.acct.update(acct or {})
        self.write_config()

    def write_config(self):
        self.mp.configure({"t1": self.acct}, path=self.config, state_dir=self.state)

    def queue(self, data, sub="new", envelope=None):
        """Puts a message into the outbox as a mail reader would; returns its base name."""
        for d in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.outbox, d), exist_ok=True)
        n = next(_seq)
        base = f"{int(time.time())}.M{n}P{os.getpid()}Q{n}.test"
        name = base + (":2,S" if sub == "cur" else "")
        if envelope is not None:
            os.makedirs(os.path.join(self.outbox, "envelopes"), exist_ok=True)
            with open(os.path.join(self.outbox, "envelopes", base), "w") as f:
                f.write(envelope)
        with open(os.path.join(self.outbox, sub, name), "wb") as f:
            f.write(data)
        return base

    def run(self, *args, env=None, timeout=None):
        return self.mp.run(*args, config=self.config, env=env, timeout=timeout)

    def events(self):
        with open(self.record) as f:
            return [json.loads(ln) for ln in f if ln.strip()]

    def transactions(self):
        return [e for e in self.events() if e["event"] == "transaction"]

    def received(self):
        """Message bodies that got a 250 to the final dot (or whose reply was dropped)."""
        out = []
        for t in self.transactions():
            if t.get("data") is None:
                continue
            if t["final"] is None or t["final"]["code"] == 250:
                out.append(base64.b64decode(t["data"]))
        return out

    def accepted(self):
        return [base64.b64decode(t["data"]) for t in self.transactions()
                if t["final"] and t["final"]["code"] == 250]

    def outbox_bases(self):
        res = []
        for d in ("new", "cur"):
            p = os.path.join(self.outbox, d)
            res += [n.split(":")[0] for n in (os.listdir(p) if os.path.isdir(p) else [])]
        return sorted(res)

    def sent_local(self):
        """{file name: bytes} of maildir/.Sent (new/ and cur/)."""
        res = {}
        for d in ("new", "cur"):
            p = os.path.join(self.maildir, ".Sent", d)
            for n in (os.listdir(p) if os.path.isdir(p) else []):
                with open(os.path.join(p, n), "rb") as f:
                    res[f"{d}/{n}"] = f.read()
        return res

    def records(self):
        return send_records(self.state)

    def close(self):
        self.srv.stop()


@pytest.fixture
def senders(mp):
    made = []

    def make(*args, **kw):
        s = Sender(mp, f"s{len(made)}", *args, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def test_happy_path(senders):
    """Two queued messages, one addressed by its header (Bcc included), one
    by an envelope file: each reaches the server once, byte for byte; the
    outbox empties; maildir/.Sent holds each file as queued, seen; no
    send record is left; a second run connects to nobody."""
    s = senders()
    m1 = send_message(1)
    m2 = send_message(2, bcc=False)
    b1 = s.queue(m1)
    b2 = s.queue(m2, sub="cur", envelope="mailpull-envelope 1\nfrom bounce@example.org\n"
                 "rcpt only@example.net\n")
    r = s.run()
    assert r.rc == EX_OK, str(r)
    txns = s.transactions()
    assert len(txns) == 2, txns
    by_from = {t["mail_from"]: t for t in txns}
    t1, t2 = by_from["me@example.org"], by_from["bounce@example.org"]
    assert base64.b64decode(t1["data"]) == wire_form(m1)
    assert b"hidden@example.org" not in base64.b64decode(t1["data"])
    assert sorted(x["to"] for x in t1["rcpts"]) == [
        "alice@example.org", "bob@example.org", "carol@example.org", "hidden@example.org"]
    assert base64.b64decode(t2["data"]) == wire_form(m2)
    assert [x["to"] for x in t2["rcpts"]] == ["only@example.net"]
    assert all(t["tls"] and t["authenticated_as"] == s.user for t in txns)
    assert s.outbox_bases() == []
    assert not os.listdir(os.path.join(s.outbox, "envelopes"))
    assert s.sent_local() == {f"cur/{b1}:2,S": m1, f"cur/{b2}:2,S": m2}
    assert s.records() == {}
    assert "t1: 2 sent, 0 failed\n" in r.out, r.out
    conns = s.srv.connections
    r = s.run()
    assert r.rc == EX_OK, str(r)
    assert s.srv.connections == conns, "a run with an empty outbox connected"
    assert "sent" not in r.out, "the summary of an account with nothing to send"
    assert len(s.transactions()) == 2


def test_send_command_and_usage(senders, mp):
    """`mailpull send` sends and fetches nothing; naming an account that
    does not send is a usage error."""
    s = senders()
    mp.dc.add_messages(s.user, [make_message(1, tag=s.user)])
    s.queue(send_message(1))
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    assert len(s.accepted()) == 1
    assert mp.dc.count(s.user) == 1, "send fetched mail"
    assert not os.path.isdir(os.path.join(s.maildir, "new")) or \
        not os.listdir(os.path.join(s.maildir, "new"))
    acct = dict(s.acct)
    for k in ("smtp_host", "smtp_port", "smtp_tls"):
        acct.pop(k)
    mp.configure({"t1": s.acct, "plain": acct}, path=s.config, state_dir=s.state)
    r = s.run("send", "plain")
    assert r.rc == EX_USAGE, str(r)
    assert "plain" in r.err and "smtp_host" in r.err, r.err


def test_tempfail_then_success(senders):
    """451 to the final dot: exit 75, still queued; the next run sends it once."""
    s = senders(dot_tempfail=1)
    b = s.queue(send_message(1))
    r = s.run("send")
    assert r.rc == EX_TEMPFAIL, str(r)
    assert "451" in r.err and "1 still queued" in r.out, str(r)
    assert s.outbox_bases() == [b]
    assert s.records() == {}
    assert s.accepted() == []
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    assert len(s.accepted()) == 1
    assert s.outbox_bases() == []


def test_permfail_reported_once(senders):
    """554 to the final dot: exit 65, the message named with the server's
    words, kept in the outbox marked failed; later runs are silent, exit 0,
    and never send it again, while `send` still counts it."""
    s = senders(dot_permfail=True)
    b = s.queue(send_message(1, subject="Doomed"))
    r = s.run("-q")
    assert r.rc == EX_DATAERR, str(r)
    assert "Doomed" in r.err and "554" in r.err and "alice@example.org" in r.err, r.err
    assert s.outbox_bases() == [b]
    assert s.records()[b][0] == "failed"
    assert len(s.transactions()) == 1
    r = s.run("-q")
    assert r.rc == EX_OK, str(r)
    assert r.err == "" and r.out == "", str(r)
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    assert "1 failed (kept in the outbox)" in r.out, r.out
    assert len(s.transactions()) == 1, "a failed message was sent again"


def test_recipient_refused(senders):
    """One recipient refused: the others get it, exit 65, the warning names
    the refused one; the message is done."""
    s = senders(refuse_rcpt=["bob@example.org"])
    m = send_message(1)
    s.queue(m)
    r = s.run("send")
    assert r.rc == EX_DATAERR, str(r)
    assert "bob@example.org" in r.err and "550" in r.err, r.err
    (t,) = s.transactions()
    assert t["final"]["code"] == 250
    ok = [x["to"] for x in t["rcpts"] if x["reply"].startswith("250")]
    assert sorted(ok) == ["alice@example.org", "carol@example.org", "hidden@example.org"]
    assert s.outbox_bases() == []
    assert len(s.sent_local()) == 1
    r = s.run("send")
    assert r.rc == EX_OK, str(r)


def test_drop_after_dot_held(senders):
    """The connection closes after the final dot with no reply: the message
    may have been sent, so it is held (exit 65, "may have been sent"); the
    next run does not send it again and says it is held; `send
    --retry-held` sends it."""
    s = senders(drop_after_dot=1)
    b = s.queue(send_message(1, subject="Maybe"))
    r = s.run("send")
    assert r.rc == EX_DATAERR, str(r)
    assert "may have been sent" in r.err and "Maybe" in r.err, r.err
    assert "--retry-held t1" in r.err, r.err
    assert s.records()[b][0] == "held"
    assert len(s.received()) == 1
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    assert "held" in r.err and "1 held" in r.out, str(r)
    assert len(s.transactions()) == 1, "a held message was sent again"
    assert s.outbox_bases() == [b]
    r = s.run()
    assert r.rc == EX_OK, str(r)
    assert len(s.transactions()) == 1
    r = s.run("send", "--retry-held")
    assert r.rc == EX_OK, str(r)
    assert len(s.accepted()) == 1
    assert len(s.transactions()) == 2
    assert s.outbox_bases() == [] and s.records() == {}
    assert len(s.sent_local()) == 1


@pytest.mark.parametrize("knobs", [
    {"no_starttls": True},
    {"starttls_reply": "454 4.7.0 TLS not available"},
    {"inject": b"250 2.0.0 injected\r\n"},
], ids=["not-offered", "refused", "injected"])
def test_starttls_failures(senders, knobs):
    """smtp_tls = starttls and the upgrade fails: exit 76, no AUTH, nothing sent."""
    s = senders(smtp_tls="starttls", **knobs)
    b = s.queue(send_message(1))
    r = s.run("send")
    assert r.rc == EX_PROTOCOL, str(r)
    assert "127.0.0.1" in r.err, r.err
    verbs = s.srv.verbs()
    assert "AUTH" not in verbs and "MAIL" not in verbs, verbs
    assert not [e for e in s.events() if e["event"] == "auth"]
    assert s.transactions() == []
    assert s.outbox_bases() == [b] and s.records() == {}


def test_starttls_works(senders):
    s = senders(smtp_tls="starttls")
    s.queue(send_message(1))
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    (t,) = s.transactions()
    assert t["tls"]
    assert not [c for c in s.events() if c["event"] == "command" and not c["tls"]
                and c["line"].split(" ")[0].upper() not in ("EHLO", "STARTTLS")]


def test_size_too_small(senders):
    """The message is over the server's SIZE: exit 65, failed, nothing sent."""
    s = senders(size_limit=1000)
    b = s.queue(send_message(1, size=5000))
    r = s.run("send")
    assert r.rc == EX_DATAERR, str(r)
    assert s.transactions() == []
    assert "MAIL" not in s.srv.verbs()
    assert s.records()[b][0] == "failed"
    assert s.outbox_bases() == [b]


def test_wrong_password(senders):
    s = senders(acct={"smtp_password": "not the password"})
    b = s.queue(send_message(1))
    r = s.run("send")
    assert r.rc == EX_NOPERM, str(r)
    assert "not the password" not in r.err
    assert s.transactions() == []
    assert s.outbox_bases() == [b] and s.records() == {}


def test_no_sender(senders):
    """A message without From, and no `from`: failed, said once."""
    s = senders()
    b = s.queue(b"To: alice@example.org\nSubject: anonymous\n\nhi\n")
    r = s.run("send")
    assert r.rc == EX_DATAERR, str(r)
    assert "no sender" in r.err, r.err
    assert s.records()[b][0] == "failed"
    assert s.transactions() == []


def test_imap_sent_copy(senders, mp):
    """An IMAP account: the Sent copy is appended once, with \\Seen, as the
    outbox file (Bcc kept); the local copy too."""
    s = senders(proto="imap")
    m = send_message(1)
    b = s.queue(m)
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    bodies = mp.dc.bodies(s.user, "Sent")
    assert [x.replace(b"\r\n", b"\n") for x in bodies] == [m]
    assert "\\Seen" in mp.dc.flags(s.user, "Sent")["<snd-1@example.org>"]
    assert s.sent_local() == {f"cur/{b}:2,S": m}
    assert s.records() == {}


def test_imap_save_sent_no(senders, mp):
    s = senders(proto="imap", acct={"save_sent": Raw("no")})
    s.queue(send_message(1))
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    assert "Sent" not in mp.dc.mailboxes(s.user)
    assert len(s.sent_local()) == 1


def test_sent_copy_failure_retried(senders, mp):
    """The Sent copy fails (sent_folder names no mailbox): the message was
    accepted and is never sent again; it stays in the outbox, recorded
    accepted, and the copy is made by a later run once the folder exists."""
    s = senders(proto="imap", acct={"sent_folder": "Copies"})
    m = send_message(1)
    b = s.queue(m)
    r = s.run("send")
    assert r.rc not in (EX_OK, EX_DATAERR, EX_TEMPFAIL), str(r)
    assert "Copies" in r.err, r.err
    assert len(s.accepted()) == 1
    assert s.records()[b][0] == "accepted"
    assert s.outbox_bases() == [b]
    r = s.run("send")
    assert r.rc != EX_OK and len(s.transactions()) == 1, str(r)
    mp.dc.create_mailbox(s.user, "Copies")
    r = s.run("send")
    assert r.rc == EX_OK, str(r)
    assert len(s.transactions()) == 1, "an accepted message was sent again"
    assert [x.replace(b"\r\n", b"\n") for x in mp.dc.bodies(s.user, "Copies")] == [m]
    assert s.outbox_bases() == [] and s.records() == {}
    assert s.sent_local() == {f"cur/{b}:2,S": m}


def test_send_and_fetch_both_fail(senders):
    """Sending fails (password refused) and so does fetching (nothing
    listens): the user sees both, and the status is the more severe."""
    s = senders(acct={"smtp_password": "wrong", "port": 1})
    s.queue(send_message(1))
    r = s.run()
    assert r.rc == EX_NOPERM, str(r)
    assert "authentication" in r.err and f"127.0.0.1:{s.srv.port}" in r.err, r.err
    assert "127.0.0.1:1)" in r.err, r.err
    assert r.err.count("mailpull: error:") == 2, r.err


def test_fetch_runs_after_send_failure(senders, mp):
    """A failed send does not keep the account from fetching."""
    s = senders(dot_permfail=True)
    mp.dc.add_messages(s.user, [make_message(1, tag=s.user)])
    s.queue(send_message(1))
    r = s.run()
    assert r.rc == EX_DATAERR, str(r)
    assert len(mp.messages(s.maildir)) == 1, "the fetch did not run"


def test_quiet_and_usage(senders):
    """-q: a successful send prints nothing; send's options are checked."""
    s = senders()
    s.queue(send_message(1))
    r = s.run("-q")
    assert r.rc == EX_OK and r.out == "" and r.err == "", str(r)
    assert len(s.accepted()) == 1
    r = s.run("send", "--bogus")
    assert r.rc == EX_USAGE and "--bogus" in r.err, str(r)
    r = s.run("send", "-q", "-v")
    assert r.rc == EX_USAGE, str(r)
    r = s.run("send", "nosuch")
    assert r.rc == EX_USAGE and "nosuch" in r.err, str(r)
    r = s.run("send", "--quiet", "t1")
    assert r.rc == EX_OK and r.out == "", str(r)


def test_shared_outbox_refused(senders, mp):
    """Two sending accounts with one outbox would both send its messages."""
    s = senders()
    other = dict(s.acct)
    mp.configure({"t1": s.acct, "t2": other}, path=s.config, state_dir=s.state)
    r = s.run("--check-config")
    assert r.rc == 78 and "t2" in r.err and "outbox" in r.err, str(r)
    other["outbox"] = os.path.join(s.dir, "Outbox2")
    mp.configure({"t1": s.acct, "t2": other}, path=s.config, state_dir=s.state)
    r = s.run("--check-config")
    assert r.rc == EX_OK, str(r)
