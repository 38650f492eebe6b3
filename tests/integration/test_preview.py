"""mailpull preview [--json] ACCOUNT [FOLDER]: what is waiting and not yet
fetched, without downloading a body and without changing the server."""

import json
import os
import pty
import re
import select
import subprocess
import time

import pytest

from conftest import EX_OK, make_message

# Encoded words (RFC 2047): a Q-encoded subject, a B-encoded subject, an
# encoded display name, and what each must read after decoding.
Q_SUBJECT = "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="
Q_SUBJECT_TEXT = "Gr\u00fc\u00dfe aus K\u00f6ln"
B_SUBJECT = "=?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?="
B_SUBJECT_TEXT = "\u65e5\u672c\u8a9e\u306e\u4ef6\u540d"
ENC_FROM = "=?ISO-8859-1?Q?J=FCrgen_M=FCller?= <jm@example.org>"
ENC_FROM_NAME = "J\u00fcrgen M\u00fcller"


def encoded_messages(tag):
    def msg(i, subject, frm):
        return (f"From: {frm}\nTo: rcpt@example.org\nSubject: {subject}\n"
                f"Date: Tue, 25 Nov 2025 1{i}:00:00 +0000\n"
                f"Message-ID: <{tag}-{i}@test>\n\nBody {i} " + "x" * (100 * (i + 1)) +
                "\n").encode()
    return [
        msg(0, Q_SUBJECT, "Plain Sender <plain@example.org>"),
        msg(1, B_SUBJECT, "b@example.org"),
        msg(2, "plain ascii subject", ENC_FROM),
    ]


WANT = [  # (subject, a piece of the from) per message of encoded_messages()
    (Q_SUBJECT_TEXT, "Plain Sender"),
    (B_SUBJECT_TEXT, "b@example.org"),
    ("plain ascii subject", ENC_FROM_NAME),
]


def json_lines(r):
    assert r.rc == EX_OK, str(r)
    out = []
    for ln in r.out.splitlines():
        if ln.strip():
            out.append(json.loads(ln))
    return out


def server_flags(mp, user, folders=("INBOX",)):
    return {f: (mp.dc.count(user, f), mp.dc.flags(user, f)) for f in folders}


def assert_no_body_fetch(r):
    trace = r.out + r.err
    assert re.search(r"^C: ", trace, re.M), "no C: lines in the -v trace"
    bad = [ln for ln in trace.splitlines() if ln.startswith("C: ") and
           re.search(r"BODY(\.PEEK)?\[(TEXT)?\]|RFC822(\.TEXT)?[ )]|^C: (\S+ )?RETR", ln, re.I)]
    assert not bad, f"preview asked for bodies: {bad}"


def check_rows(rows, msgs, folder_key, folder=None):
    assert len(rows) == len(msgs), rows
    by_subject = {row["subject"]: row for row in rows}
    for (subject, frm), m in zip(WANT, msgs):
        assert subject in by_subject, (subject, rows)
        row = by_subject[subject]
        assert set(row) >= {"account", "date", "from", "subject", "size"}, row
        assert row["account"] == "t1"
        assert frm in row["from"], row
        assert "=?" not in row["from"] and "=?" not in row["subject"], row
        assert isinstance(row["size"], int), row
        # The server's size: with LF or CRLF line ends.
        assert len(m) <= row["size"] <= len(m) + m.count(b"\n"), (row, len(m))
        assert row["date"], row
        if folder_key:
            assert row.get("folder") == folder, row
        else:
            assert row.get("folder") is None, row


@pytest.mark.servers
def test_imap_preview_json(mp):
    user = mp.new_user()
    msgs = encoded_messages("pvi")
    mp.dc.save_messages(user, msgs)
    mp.dc.flag_message(user, "<pvi-1@test>", "\\Flagged")
    before = server_flags(mp, user)
    mp.configure(mp.imap_account(user, keep=False))
    r = mp.run("-v", "preview", "--json", "t1")
    rows = [json.loads(ln) for ln in r.out.splitlines() if ln.startswith("{")]
    assert r.rc == EX_OK, str(r)
    check_rows(rows, msgs, True, "INBOX")
    assert_no_body_fetch(r)
    assert server_flags(mp, user) == before
    assert mp.messages() == []


def test_imap_preview_text(mp):
    user = mp.new_user()
    msgs = encoded_messages("pvt")
    mp.dc.save_messages(user, msgs)
    mp.configure(mp.imap_account(user))
    r = mp.run("preview", "t1")
    assert r.rc == EX_OK, str(r)
    lines = r.out.splitlines()
    for subject, frm in WANT:
        hits = [ln for ln in lines if subject in ln]
        assert len(hits) == 1, (subject, r.out)
        assert frm in hits[0], (frm, hits[0])
    assert "=?" not in r.out, r.out


@pytest.mark.servers
def test_imap_preview_folder_argument(mp):
    user = mp.new_user()
    mp.dc.create_mailbox(user, "Archive/2024")
    inbox = [make_message(i, tag="pvin") for i in range(2)]
    arch = [make_message(i, tag="pvar", subject=f"archived {i}") for i in range(3)]
    mp.dc.save_messages(user, inbox)
    mp.dc.save_messages(user, arch, "Archive/2024")
    folders = ("INBOX", "Archive/2024")
    before = server_flags(mp, user, folders)
    mp.configure(mp.imap_account(user, folders=list(folders)))
    rows = json_lines(mp.run("preview", "--json", "t1"))
    assert sorted(r["folder"] for r in rows) == ["Archive/2024"] * 3 + ["INBOX"] * 2, rows
    rows = json_lines(mp.run("preview", "--json", "t1", "Archive/2024"))
    assert sorted(r["subject"] for r in rows) == [f"archived {i}" for i in range(3)], rows
    assert all(r["folder"] == "Archive/2024" for r in rows)
    assert server_flags(mp, user, folders) == before
    assert mp.messages() == []


@pytest.mark.servers
def test_imap_preview_lists_only_what_is_not_fetched(mp):
    user = mp.new_user()
    mp.dc.save_messages(user, [make_message(i, tag="pvf") for i in range(3)])
    mp.configure(mp.imap_account(user))
    assert mp.run().rc == EX_OK
    assert json_lines(mp.run("preview", "--json", "t1")) == []
    r = mp.run("preview", "t1")
    assert r.rc == EX_OK, str(r)
    assert "test message" not in r.out, r.out
    mp.dc.save_message(user, make_message(7, tag="pvf", subject="arrived later"))
    rows = json_lines(mp.run("preview", "--json", "t1"))
    assert [r["subject"] for r in rows] == ["arrived later"], rows
    # Preview changed nothing: the fetch still finds it.
    before = len(mp.messages())
    assert mp.run().rc == EX_OK
    assert len(mp.messages()) == before + 1


@pytest.mark.servers
def test_pop3_preview_json(mp):
    user = mp.new_user()
    msgs = encoded_messages("pvp")
    mp.dc.add_messages(user, msgs)
    before = server_flags(mp, user)
    mp.configure(mp.pop3_account(user, keep=False))
    r = mp.run("-v", "preview", "--json", "t1")
    rows = [json.loads(ln) for ln in r.out.splitlines() if ln.startswith("{")]
    assert r.rc == EX_OK, str(r)
    check_rows(rows, msgs, False)
    assert_no_body_fetch(r)
    assert server_flags(mp, user) == before
    assert mp.messages() == []
    # After a fetch, nothing is waiting.
    assert mp.run().rc == EX_OK
    assert json_lines(mp.run("preview", "--json", "t1")) == []


@pytest.mark.servers
def test_pop3_preview_keep_yes_after_fetch(mp):
    user = mp.new_user()
    mp.dc.add_messages(user, [make_message(i, tag="pvk") for i in range(2)])
    mp.configure(mp.pop3_account(user, keep=True))
    assert mp.run().rc == EX_OK
    assert json_lines(mp.run("preview", "--json", "t1")) == []
    mp.dc.add_message(user, make_message(5, tag="pvk", subject="pop3 later"))
    rows = json_lines(mp.run("preview", "--json", "t1"))
    assert [r["subject"] for r in rows] == ["pop3 later"], rows
    assert mp.dc.count(user) == 3


def test_pop3_preview_refuses_a_folder(mp):
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    mp.configure(mp.pop3_account(user))
    r = mp.run("preview", "t1", "INBOX")
    assert r.rc != EX_OK, str(r)
    assert mp.dc.count(user) == 1


def run_on_pty(mp, args, timeout=60.0):
    """Runs mailpull with stdout and stderr on a pseudo-terminal; returns (rc, text)."""
    master, slave = pty.openpty()
    env = dict(mp.env, TERM="xterm", COLUMNS="200")
    p = subprocess.Popen(mp.command("-c", mp.config_path, *args), stdin=subprocess.DEVNULL,
                         stdout=slave, stderr=slave, env=env, cwd=mp.tmp)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
            elif p.poll() is not None:
                break
        rc = p.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return rc, out.decode("utf-8", "replace").replace("\r\n", "\n")


def test_preview_columns_aligned_on_a_terminal(mp):
    user = mp.new_user()
    msgs = encoded_messages("pvc")
    mp.dc.save_messages(user, msgs)
    mp.configure(mp.imap_account(user))
    rc, text = run_on_pty(mp, ["preview", "t1"])
    assert rc == EX_OK, text
    # Strip any colour or other escape sequence before measuring.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    cols = []
    for subject, _ in WANT:
        hits = [ln for ln in text.splitlines() if subject in ln]
        assert len(hits) == 1, (subject, text)
        cols.append(hits[0].index(subject))
    assert len(set(cols)) == 1, f"subjects start at columns {cols}:\n{text}"


def test_preview_strips_controls_and_bidi(mp):
    """Subject, sender and folder come from the server: escape sequences,
    bidi overrides, isolates and marks (raw, and inside RFC 2047 encoded
    words) never reach the terminal or the JSON as they are."""
    user = mp.new_user()
    folder = "Evil\u202eredlof"
    mp.dc.create_mailbox(user, folder)
    subj_enc = "=?UTF-8?Q?a=1B[2Jb=E2=80=AEfdp.exe_=E2=81=A6x=E2=81=A9_=E2=80=8F=D8=9C?="
    msgs = [
        (f"From: =?UTF-8?B?TWFsbG9yeeKArg==?= <m@example.org>\nTo: r@example.org\n"
         f"Subject: {subj_enc}\nDate: Tue, 25 Nov 2025 10:00:00 +0000\n"
         f"Message-ID: <bidi-0@test>\n\nbody\n").encode(),
        ("From: Raw \u202eSender\u200f <r@example.org>\nTo: r@example.org\n"
         "Subject: raw \x1b[31mred\u202e\u2067x\u2069\u061c\nDate: Tue, 25 Nov 2025 11:00:00 +0000\n"
         "Message-ID: <bidi-1@test>\n\nbody\n").encode("utf-8"),
    ]
    mp.dc.save_messages(user, msgs, folder)
    mp.configure(mp.imap_account(user, folders=[folder]))
    bad = ["\x1b", "\u202e", "\u2066", "\u2067", "\u2069", "\u200f", "\u061c"]
    rows = json_lines(mp.run("preview", "--json", "t1"))
    assert len(rows) == 2, rows
    for row in rows:
        for key in ("folder", "from", "subject", "date"):
            for b in bad:
                assert b not in row[key], (key, b, row)
    subjects = sorted(row["subject"] for row in rows)
    assert "fdp.exe" in subjects[0] and "\ufffd" in subjects[0], subjects
    r = mp.run("preview", "t1")
    assert r.rc == EX_OK, str(r)
    for b in bad:
        assert b not in r.out and b not in r.err, (b, r.out)
    assert "fdp.exe" in r.out and "Evil" in r.out, r.out
