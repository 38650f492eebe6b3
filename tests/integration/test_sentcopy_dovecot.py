"""The Sent copy (src/sentcopy.c) against a real Dovecot (its main case
against Cyrus too), through the small driver tests/unit/sentcopy_drive.c
(built next to the binary under test), until the send run exercises it
through mailpull itself: the folder chosen (a \\Sent special-use mailbox,
else "Sent" created, else sent_folder), the copy stored byte for byte with
\\Seen, found by its Message-ID right after the APPEND in the same session,
never appended twice, and what is refused.
"""

import os
import subprocess

import pytest

from conftest import EX_CONFIG, ROOT
from dovecot import Dovecot

EX_DATAERR = 65

MSG = (b"From: me@example.org\nTo: you@example.org\nSubject: sent\n"
       b"Message-ID: <sc\"1\\x@example.org>\n\nfirst line\r\nsecond line\n")
MSGID = "<sc\"1\\x@example.org>"


@pytest.fixture(scope="module")
def drive(mailpull_bin):
    """The driver, built with the same BUILDDIR as the binary under test."""
    bd = os.path.dirname(mailpull_bin)
    target = os.path.join(bd, "tests", "sentcopy_drive")
    r = subprocess.run(["make", "-s", f"BUILDDIR={bd}", target], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"cannot build {target}:\n{r.stdout}{r.stderr}"
    return target


def run(mp, drive, *steps, account="t1", create=True):
    args = [drive, mp.config_path, account] + ([] if create else ["-n"]) + list(steps)
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, env=mp.env)
    return r.returncode, r.stdout.splitlines()


def message_file(mp, data=MSG, name="msg"):
    p = mp.path(name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def ensure_user(dc, user):
    if hasattr(dc, "ensure_mailbox"):
        dc.ensure_mailbox(user)
    else:
        dc.ensure_user(user)


@pytest.mark.servers
def test_creates_sent_appends_once(mp, drive):
    user = mp.new_user()
    ensure_user(mp.dc, user)
    mp.configure(mp.imap_account(user))
    msg = message_file(mp)
    rc, out = run(mp, drive, f"has:{MSGID}", f"put:{MSGID}:{msg}", f"has:{MSGID}",
                  f"put:{MSGID}:{msg}", "has:<other@example.org>")
    assert rc == 0, out
    assert out == ["folder Sent", "has 0", "put appended=1 uid=1", "has 1",
                   "put appended=0 uid=0", "has 0"]
    # A new session: the copy is found, nothing is appended again.
    rc, out = run(mp, drive, f"put:{MSGID}:{msg}")
    assert rc == 0, out
    assert out == ["folder Sent", "put appended=0 uid=0"]
    # Stored as sent (Dovecot keeps LF line ends in its files), with \Seen.
    assert mp.dc.bodies(user, "Sent") == [MSG.replace(b"\r\n", b"\n")]
    assert mp.dc.flags(user, "Sent") == {MSGID: frozenset({"\\Seen"})}


def test_missing_mailbox_refused(mp, drive):
    user = mp.new_user()
    mp.dc.ensure_mailbox(user)
    mp.configure({"t1": mp.imap_account(user),
                  "t2": mp.imap_account(user, smtp_host="127.0.0.1", sent_folder="Gesendet")})
    rc, out = run(mp, drive, create=False)
    assert rc == EX_CONFIG, out
    rc, out = run(mp, drive, account="t2")
    assert rc == EX_CONFIG, out
    assert "Gesendet" in out[-1]
    assert "Sent" not in mp.dc.mailboxes(user)
    # A NUL byte cannot travel in an IMAP literal: refused, nothing stored.
    msg = message_file(mp, b"Message-ID: <nul@x>\n\na\0b\n")
    rc, out = run(mp, drive, f"put::{msg}")
    assert rc == EX_DATAERR, out
    assert mp.dc.count(user, "Sent") == 0


def test_sent_folder_wins(mp, drive):
    user = mp.new_user()
    mp.dc.ensure_mailbox(user)
    mp.dc.create_mailbox(user, "Sent", "Mine/Out")
    # sent_folder goes with smtp_host (no SMTP connection is made here).
    mp.configure(mp.imap_account(user, smtp_host="127.0.0.1", sent_folder="Mine/Out"))
    rc, out = run(mp, drive, f"put:{MSGID}:{message_file(mp)}")
    assert rc == 0, out
    assert out == ["folder Mine/Out", "put appended=1 uid=1"]
    assert mp.dc.count(user, "Mine/Out") == 1
    assert mp.dc.count(user, "Sent") == 0


class SpecialUseDovecot(Dovecot):
    """A Dovecot whose "Sent Messages" carries \\Sent (special_use, RFC 6154)."""

    def _write_conf(self):
        super()._write_conf()
        with open(self.conf) as f:
            text = f.read()
        anchor = "namespace inbox {\n  inbox = yes\n"
        assert anchor in text
        text = text.replace(anchor, anchor + '  mailbox "Sent Messages" {\n'
                            "    special_use = \\Sent\n  }\n")
        with open(self.conf, "w") as f:
            f.write(text)


@pytest.fixture(scope="module")
def special_dc():
    dc = SpecialUseDovecot()
    dc.start()
    yield dc
    dc.cleanup()


def test_special_use_sent(mp, drive, special_dc):
    mp.dc = special_dc
    user = mp.new_user()
    special_dc.ensure_mailbox(user)
    # "Sent" exists too: the \Sent attribute decides, not the name.
    special_dc.create_mailbox(user, "Sent", "Sent Messages")
    mp.configure(mp.imap_account(user))
    rc, out = run(mp, drive, f"put:{MSGID}:{message_file(mp)}", f"has:{MSGID}")
    assert rc == 0, out
    assert out == ["folder Sent Messages", "put appended=1 uid=1", "has 1"]
    assert special_dc.count(user, "Sent Messages") == 1
    assert special_dc.count(user, "Sent") == 0
