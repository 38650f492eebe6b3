"""mailpull demo: fetch sample mail from a throwaway local Dovecot, and send
one message through a throwaway local Postfix.

    python3 tests/demo.py BUILD/mailpull

Starts a private Dovecot and, in front of it, a private Postfix submission
server (tests/postfix.py: implicit TLS with the same throwaway CA, AUTH by
the Dovecot, delivery into the Dovecot), puts ten sample messages into user
"demo"'s INBOX and writes ./demo/config: one account, POP3S with keep = no
for fetching, smtp_host/smtp_port/smtp_tls = implicit for sending. Then:
`mailpull sendmail -t` queues a message from demo@mail.test to itself into
./demo/Maildir/.Outbox; one `mailpull` run sends the outbox, then fetches;
the demo lists ./demo/Maildir/new, shows the local Sent copy in
./demo/Maildir/.Sent (a POP3 account keeps it locally only) and the
message as it came back through Postfix and Dovecot, with their trace
fields on top. If it arrived after the fetch of that run, a second run
fetches it. ./demo is removed first, so the demo can be run again and again.
"""

import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dovecot import Dovecot  # noqa: E402
from postfix import Postfix  # noqa: E402
import mprun  # noqa: E402
from mprun import Raw  # noqa: E402

USER = "demo"


def samples():
    def msg(i, frm, subj, body, extra=""):
        return (f"From: {frm}\nTo: Demo User <demo@example.org>\nSubject: {subj}\n"
                f"Date: Tue, 25 Nov 2025 {8 + i:02d}:15:00 +0100\n"
                f"Message-ID: <demo-{i}@example.org>\n{extra}\n{body}").encode()
    out = [
        msg(0, "Alice <alice@example.org>", "Lunch on Friday?",
            "Hi,\n\nshall we try the new place on Friday at noon?\n\nAlice\n"),
        msg(1, "Build bot <ci@example.org>", "[ci] build #1234 passed",
            "All 512 tests passed in 3m12s.\n"),
        msg(2, "=?UTF-8?Q?J=C3=BCrgen?= <juergen@example.de>",
            "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
            "Viele Grüße aus Köln!\n",
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n"),
        msg(3, "Bob <bob@example.org>", "Dots",
            "POP3 dot-stuffs these lines; they must arrive as written:\n.\n..\n.leading dot\n"),
        msg(4, "News <news@example.org>", "Weekly digest",
            "".join(f"{n}. Item number {n} of this week's digest.\n" for n in range(1, 200))),
        msg(5, "Carol <carol@example.org>", "Photo",
            "--b\nContent-Type: text/plain\n\nSee the attachment.\n--b\n"
            "Content-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
            + ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\n" * 40)
            + "--b--\n",
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n"),
        msg(6, "Dave <dave@example.org>", "No final newline", "This line has no newline at the end"),
        msg(7, "Eve <eve@example.org>", "Empty body", ""),
        msg(8, "Calendar <calendar@example.org>", "Reminder: stand-up in 10 minutes",
            "Stand-up starts at 09:30 in room 2.\n"),
        msg(9, "Frank <frank@example.org>", "Re: Lunch on Friday?",
            "> shall we try the new place on Friday at noon?\n\nCount me in.\n",
            "In-Reply-To: <demo-0@example.org>\n"),
    ]
    return out


SUBJECT = "Hello from mailpull sendmail"


def outgoing(address):
    """What a mail reader pipes into sendmail: no Message-ID or Date (mailpull adds them)."""
    return (f"From: Demo User <{address}>\nTo: Demo User <{address}>\n"
            f"Subject: {SUBJECT}\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            "This message went out through the local Postfix and came back.\n"
            "Grüße!\n").encode()


def run_mailpull(binary, args, stdin=None):
    print(f"== mailpull {' '.join(args)}" + (" < message" if stdin is not None else ""),
          flush=True)
    try:
        rc = subprocess.run([binary] + args, input=stdin, timeout=120).returncode
    except subprocess.TimeoutExpired:
        print("mailpull did not finish within 120 s", file=sys.stderr)
        return 75
    print(f"== mailpull exited with status {rc}")
    return rc


def listing(maildir):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        out += [os.path.join(d, n) for n in sorted(os.listdir(d))] if os.path.isdir(d) else []
    return out


def show_head(path, title):
    with open(path, "rb") as f:
        head = f.read().split(b"\n\n", 1)[0]
    print(f"== {title}: headers of {os.path.relpath(path)}")
    print("   " + head.decode("utf-8", "replace").replace("\n", "\n   "))


def came_back(maildir):
    for p in listing(maildir):
        with open(p, "rb") as f:
            if f"Subject: {SUBJECT}".encode() in f.read().split(b"\n\n", 1)[0]:
                return p
    return None


def main():
    if len(sys.argv) != 2:
        print("usage: demo.py MAILPULL_BINARY", file=sys.stderr)
        return 64
    binary = os.path.abspath(sys.argv[1])
    demo = os.path.abspath("demo")
    shutil.rmtree(demo, ignore_errors=True)
    os.makedirs(demo)
    maildir = os.path.join(demo, "Maildir")
    print("== starting a private Dovecot and a private Postfix")
    with Dovecot(lmtp=True, auth_inet=True) as dc, Postfix(dc) as pf:
        msgs = samples()
        dc.add_messages(USER, msgs)
        address = pf.address(USER)
        print(f"   POP3S on {dc.host}:{dc.pop3s_port}; {dc.count(USER)} messages for user {USER!r}")
        print(f"   SMTP submission (implicit TLS) on {pf.host}:{pf.smtps_port}, "
              f"delivering {address} into that INBOX")
        ca = os.path.join(demo, "ca.pem")
        shutil.copyfile(dc.ca_file, ca)
        config = os.path.join(demo, "config")
        acct = mprun.dovecot_pop3_account(dc, USER, maildir, tls_ca_file=ca, keep=False,
                                          smtp_host=pf.host, smtp_port=pf.smtps_port,
                                          smtp_tls=Raw("implicit"))
        mprun.write_config(config, {"demo": acct}, state_dir=os.path.join(demo, "state"))
        print(f"== {config}:")
        with open(config) as f:
            print("   " + f.read().replace(dc.password, "***").replace("\n", "\n   ").rstrip())

        rc_queue = run_mailpull(binary, ["-c", config, "sendmail", "-t"], stdin=outgoing(address))
        queued = listing(os.path.join(maildir, ".Outbox"))
        print(f"== {os.path.join(maildir, '.Outbox')}: {len(queued)} message(s) waiting")
        rc = run_mailpull(binary, ["-c", config])
        print(f"   {dc.count(USER)} messages left on the server")
        back = came_back(maildir)
        if rc == 0 and rc_queue == 0 and back is None:
            # Sent, but delivered after this run's fetch: wait for it, fetch again.
            deadline = time.monotonic() + 15
            while dc.count(USER) == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            print("== the sent message arrived after that run's fetch: one more run")
            rc = run_mailpull(binary, ["-c", config]) or rc
            back = came_back(maildir)
        if back is None and rc_queue == 0:
            print("== Postfix log (tail):")
            print("   " + pf.log_tail(2000).replace("\n", "\n   "))
    new = os.path.join(maildir, "new")
    names = sorted(os.listdir(new)) if os.path.isdir(new) else []
    print(f"== {new}: {len(names)} messages")
    for n in names:
        print(f"   {os.path.getsize(os.path.join(new, n)):8d}  {n}")
    if names:
        show_head(os.path.join(new, names[0]), "the first message")
    sent = listing(os.path.join(maildir, ".Sent"))
    print(f"== {os.path.join(maildir, '.Sent')}: {len(sent)} message(s) (the local Sent copy)")
    if sent:
        show_head(sent[0], "the Sent copy")
    if back:
        show_head(back, "the message sent to demo, as it came back (trace fields on top)")
    if rc_queue != 0:
        return rc_queue
    if rc == 0 and (back is None or not sent):
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
