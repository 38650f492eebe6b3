"""Sending, end to end, through the private Postfix into the private Dovecot.

Three users of the Dovecot: a sends (IMAPS for its mail, submission for
sending: implicit TLS on the Postfix's smtps port, or STARTTLS on its
submission port; one tls_ca_file, the test CA, for both servers), b and c
only receive. `mailpull sendmail -t` queues a message from a to b with a
Bcc to c; `mailpull send a` submits it; b's and c's own runs fetch it. What
arrives is what was queued, byte for byte, apart from the trace fields the
servers put on top and without the Bcc field; a's Sent folder on the server
and a's local maildir/.Sent hold one copy each, Bcc included; the outbox is
empty; sending again sends nothing. Every command, its exit status and its
output are printed (pytest -s shows the transcript).
"""

import imaplib
import os
import re
import ssl
import time

import pytest

from conftest import EX_OK

# Fields the submission server and the LMTP delivery put on top.
TRACE_FIELDS = (b"return-path", b"delivered-to", b"received", b"x-original-to")


def show(title, r):
    """One transcript entry: the command, its exit status, its output."""
    args = r.cmd[r.cmd.index("-c"):] if "-c" in r.cmd else r.cmd[1:]
    if args[:1] == ["-c"]:
        args = ["-c", "CONF"] + args[2:]     # the path is printed once, with the file
    print(f"\n$ mailpull {' '.join(args)}    # {title}")
    print(f"  exit {r.rc}")
    for name, text in (("stdout", r.out), ("stderr", r.err)):
        if text.strip():
            print(f"  {name}:")
            for ln in text.rstrip("\n").split("\n"):
                print(f"    {ln}")


def note(text):
    print(f"  -> {text}")


def header_block(data):
    end = data.find(b"\n\n")
    return data if end < 0 else data[:end + 1]


def fields(data):
    """The header fields of data as a list of (lower-case name, raw bytes)."""
    out = []
    for ln in header_block(data).split(b"\n"):
        if not ln:
            continue
        if ln[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + b"\n" + ln)
        else:
            out.append((ln.split(b":", 1)[0].strip().lower(), ln))
    return out


def field(data, name):
    """The value of the first field called name, unfolded, or None."""
    for n, raw in fields(data):
        if n == name.lower().encode():
            return re.sub(rb"\s+", b" ", raw.split(b":", 1)[1]).strip()
    return None


def without_field(data, name):
    """data without every name: field and its continuation lines."""
    lines = data.split(b"\n")
    out, i, in_head = [], 0, True
    while i < len(lines):
        ln = lines[i]
        if in_head and ln == b"":
            in_head = False
        if in_head and ln.split(b":", 1)[0].strip().lower() == name.lower().encode():
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            continue
        out.append(ln)
        i += 1
    return b"\n".join(out)


def strip_trace(data):
    """data without the trace fields at its top (with their continuations)."""
    lines = data.split(b"\n")
    i = 0
    while i < len(lines) and lines[i].split(b":", 1)[0].strip().lower() in TRACE_FIELDS:
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\n".join(lines[i:])


def maildir_contents(md):
    """{path: bytes} of every message in md's new/ and cur/."""
    res = {}
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, n), "rb") as f:
                res[os.path.join(d, n)] = f.read()
    return res


def server_sent(dc, user):
    """(mailbox name, [(flags, message with LF line ends)]) of the user's
    \\Sent mailbox, read over IMAP; (None, []) when there is none."""
    ctx = ssl.create_default_context(cafile=dc.ca_file)
    with imaplib.IMAP4_SSL(dc.host, dc.imaps_port, ssl_context=ctx) as m:
        m.login(user, dc.password)
        typ, data = m.list('""', '"*"')
        assert typ == "OK", data
        name = None
        for ln in data:
            mm = re.match(rb'\((?P<fl>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$', ln)
            if mm and b"\\sent" in mm.group("fl").lower():
                name = mm.group("name").strip(b'"').decode()
        if name is None:
            return None, []
        typ, data = m.select(f'"{name}"', readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return name, []
        typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK", data
        msgs = []
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split()
                msgs.append((flags, item[1].replace(b"\r\n", b"\n")))
        return name, msgs


def submissions(pf, user):
    """Postfix log lines of messages submitted by user (one per message)."""
    return [ln for ln in pf.log_text().splitlines()
            if f"sasl_username={user}" in ln and "client=" in ln]


def settle_log(pf, user, want, timeout=10.0):
    """Waits until user's submissions logged reach want (postlogd writes
    the log a moment after the fact); returns the lines."""
    deadline = time.monotonic() + timeout
    while True:
        lines = submissions(pf, user)
        if len(lines) >= want or time.monotonic() >= deadline:
            return lines
        time.sleep(0.05)


class Scene:
    """Accounts a (sends), b and c (receive), their Maildirs and config."""

    def __init__(self, mp, pf, smtp_tls):
        self.mp, self.pf, self.dc = mp, pf, mp.dc
        self.a, self.b, self.c = (mp.new_user(p) for p in ("sa", "rb", "rc"))
        self.addr = {u: pf.address(u) for u in (self.a, self.b, self.c)}
        self.md = {n: mp.path(n, "Maildir") for n in ("a", "b", "c")}
        accounts = {
            "a": mp.sending_account(self.a, pf, self.md["a"], smtp_tls=smtp_tls),
            "b": mp.imap_account(self.b, self.md["b"]),
            "c": mp.imap_account(self.c, self.md["c"]),
        }
        for u in (self.a, self.b, self.c):
            self.dc.ensure_mailbox(u)
        mp.configure(accounts)
        self.outbox = os.path.join(self.md["a"], ".Outbox")
        self.local_sent = os.path.join(self.md["a"], ".Sent")
        print(f"\n== CONF = {mp.config_path}: a = {self.a} (sends through "
              f"{pf.host}:{accounts['a']['smtp_port']}, smtp_tls = {smtp_tls}), "
              f"b = {self.b}, c = {self.c}")
        with open(mp.config_path) as f:
            print("  " + f.read().replace(self.dc.password, "***").replace("\n", "\n  "))

    def message(self, subject, bcc=True):
        """What a mail reader pipes into sendmail: LF line ends, no
        Message-ID or Date (sendmail adds them), 8-bit UTF-8 text and lines
        that need dot-stuffing on the wire."""
        a, b, c = self.addr[self.a], self.addr[self.b], self.addr[self.c]
        head = (f"From: Alice Sender <{a}>\n"
                f"To: Bob Receiver <{b}>\n"
                + (f"Bcc: {c}\n" if bcc else "")
                + f"Subject: {subject}\n"
                "MIME-Version: 1.0\n"
                "Content-Type: text/plain; charset=utf-8\n"
                "Content-Transfer-Encoding: 8bit\n"
                "\n")
        body = ("Hello Bob,\n"
                ".a line that starts with a dot\n"
                "..and one with two\n"
                "Grüße aus Köln, 日本語\n"
                "\n"
                "-- \nAlice\n")
        return (head + body).encode()

    def outbox_files(self):
        return maildir_contents(self.outbox)

    def outbox_tmp(self):
        d = os.path.join(self.outbox, "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def queue(self, data):
        r = self.mp.run("sendmail", "-t", stdin=data)
        show("queue one message, recipients from To/Cc/Bcc", r)
        return r


def check_queued(sc, data):
    """The one message in the outbox: as given, plus Message-ID and Date."""
    files = sc.outbox_files()
    assert len(files) == 1, f"outbox {sc.outbox}: {sorted(files)}"
    (path, q), = files.items()
    note(f"queued as {os.path.relpath(path, sc.mp.tmp)} ({len(q)} bytes)")
    assert os.path.basename(os.path.dirname(path)) == "new", path
    mid, date = field(q, "message-id"), field(q, "date")
    assert mid and re.fullmatch(rb"<[^<>@\s]+@[^<>@\s]+>", mid), q
    assert date, q
    # Nothing of what was given changed: the added fields only.
    assert without_field(without_field(q, "Message-ID"), "Date") == data, q
    return q


@pytest.mark.parametrize("smtp_tls", ["implicit", "starttls"])
def test_send_and_receive(mp, postfix, smtp_tls):
    pf = postfix
    sc = Scene(mp, pf, smtp_tls)
    if smtp_tls == "starttls":
        # The \Sent mailbox exists already: the copy goes there.
        sc.dc.create_mailbox(sc.a, "Sent")
        note(f"{sc.a} has a \\Sent mailbox \"Sent\" already")

    data = sc.message(f"end to end over {smtp_tls}")
    r = sc.queue(data)
    assert r.rc == EX_OK, str(r)
    queued = check_queued(sc, data)
    assert field(queued, "bcc") == sc.addr[sc.c].encode()
    transmitted = without_field(queued, "Bcc")
    mid = field(queued, "message-id").decode()

    r = mp.run("send", "a")
    show("send a's outbox", r)
    assert r.rc == EX_OK, str(r)

    # Both recipients, one submission with both in its envelope.
    pf.wait_delivered(sc.b, 1)
    pf.wait_delivered(sc.c, 1)
    subs = settle_log(pf, sc.a, 1)
    assert len(subs) == 1, "\n".join(subs)
    qid = re.search(r"\]: ([0-9A-F]+): client=", subs[0]).group(1)
    assert f"{qid}: from=<{sc.addr[sc.a]}>" in pf.log_text(), pf.log_tail()
    assert re.search(rf"{qid}: from=<[^>]*>, size=\d+, nrcpt=2 ", pf.log_text()), pf.log_tail()
    note(f"Postfix took it as {qid} from {sc.addr[sc.a]} for 2 recipients, "
         f"{'smtps' if smtp_tls == 'implicit' else 'submission'} port")
    service = "smtps" if smtp_tls == "implicit" else "submission"
    assert re.search(rf"postfix-mailpull-test/{service}/smtpd\[\d+\]: {qid}: client=",
                     pf.log_text()), pf.log_tail()

    # The outbox is empty; the local and the server Sent copy hold it with its Bcc.
    assert sc.outbox_files() == {}, "outbox not emptied"
    assert sc.outbox_tmp() == [], f"left in the outbox's tmp/: {sc.outbox_tmp()}"
    local = maildir_contents(sc.local_sent)
    assert list(local.values()) == [queued], f"{sc.local_sent}: {sorted(local)}"
    note(f"outbox empty; {os.path.relpath(list(local)[0], mp.tmp)} is the queued file")
    name, sent = server_sent(sc.dc, sc.a)
    assert name == "Sent", name
    assert len(sent) == 1, sent
    flags, body = sent[0]
    assert "\\Seen" in flags, flags
    assert body == queued, body
    note(f"server folder {name!r}: 1 message, flags {' '.join(flags)}, Bcc kept, "
         f"Message-ID {mid}")

    # b and c fetch it with their own runs: the queued bytes without Bcc.
    for acct, user in (("b", sc.b), ("c", sc.c)):
        r = mp.run(acct)
        show(f"fetch {acct}", r)
        assert r.rc == EX_OK, str(r)
        got = list(maildir_contents(sc.md[acct]).values())
        assert len(got) == 1, got
        on_top = got[0][:len(got[0]) - len(strip_trace(got[0]))]
        # ESMTPSA: over TLS (S) and authenticated (A).
        assert re.search(rb"\bwith (UTF8)?ESMTPSA\b", on_top), got[0]
        assert strip_trace(got[0]) == transmitted, got[0]
        assert field(got[0], "bcc") is None
        note(f"{acct}: 1 message; below the servers' trace fields it is the queued file "
             f"without its Bcc field, byte for byte")

    # Again: nothing to send, nothing sent, still one copy.
    r = mp.run("send", "a")
    show("send a's outbox again: nothing waits", r)
    assert r.rc == EX_OK, str(r)
    time.sleep(1.0)
    assert len(submissions(pf, sc.a)) == 1, pf.log_tail()
    assert sc.dc.count(sc.b) == 1 and sc.dc.count(sc.c) == 1
    name, sent = server_sent(sc.dc, sc.a)
    assert len(sent) == 1, sent
    assert len(maildir_contents(sc.local_sent)) == 1
    note("no submission; b and c hold one message each; Sent holds one copy, "
         "maildir/.Sent one file")


def test_one_shot_run_sends_then_fetches(mp, postfix):
    """`mailpull` alone sends every outbox first, then fetches."""
    pf = postfix
    sc = Scene(mp, pf, "implicit")
    data = sc.message("sent by the one-shot run", bcc=False)
    r = sc.queue(data)
    assert r.rc == EX_OK, str(r)
    queued = check_queued(sc, data)

    r = mp.run()
    show("one pass: send, then fetch every account", r)
    assert r.rc == EX_OK, str(r)
    assert sc.outbox_files() == {}, "outbox not emptied"
    assert sc.outbox_tmp() == [], f"left in the outbox's tmp/: {sc.outbox_tmp()}"
    pf.wait_delivered(sc.b, 1)
    assert len(settle_log(pf, sc.a, 1)) == 1
    got_b = list(maildir_contents(sc.md["b"]).values())
    note(f"b's Maildir after the same run: {len(got_b)} message(s) "
         "(the account order decides whether it came in time)")
    assert len(got_b) <= 1

    r = mp.run()
    show("second pass: nothing to send, b fetches what is left", r)
    assert r.rc == EX_OK, str(r)
    got_b = list(maildir_contents(sc.md["b"]).values())
    assert len(got_b) == 1, got_b
    assert strip_trace(got_b[0]) == queued
    assert maildir_contents(sc.md["c"]) == {}
    assert len(submissions(pf, sc.a)) == 1
    name, sent = server_sent(sc.dc, sc.a)
    assert name == "Sent" and len(sent) == 1 and sent[0][1] == queued, (name, sent)
    assert "\\Seen" in sent[0][0]
    assert list(maildir_contents(sc.local_sent).values()) == [queued]
    note("b: 1 message, the queued bytes below the trace fields; Sent: 1 copy; "
         "maildir/.Sent: 1 file")
