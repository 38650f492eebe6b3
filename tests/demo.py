"""mailpull demo: fetch sample mail from a throwaway local Dovecot.

    python3 tests/demo.py BUILD/mailpull

Starts a private Dovecot, puts ten sample messages into user "demo"'s
INBOX, writes ./demo/config (POP3S, the throwaway CA, keep = no), runs
mailpull with its output shown, then lists what landed in
./demo/Maildir/new and shows the first message's headers. ./demo is
removed first, so the demo can be run again and again.
"""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dovecot import Dovecot  # noqa: E402
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


def main():
    if len(sys.argv) != 2:
        print("usage: demo.py MAILPULL_BINARY", file=sys.stderr)
        return 64
    binary = os.path.abspath(sys.argv[1])
    demo = os.path.abspath("demo")
    shutil.rmtree(demo, ignore_errors=True)
    os.makedirs(demo)
    print(f"== starting a private Dovecot")
    with Dovecot() as dc:
        msgs = samples()
        dc.add_messages(USER, msgs)
        print(f"   POP3S on {dc.host}:{dc.pop3s_port}; {dc.count(USER)} messages for user {USER!r}")
        ca = os.path.join(demo, "ca.pem")
        shutil.copyfile(dc.ca_file, ca)
        config = os.path.join(demo, "config")
        acct = mprun.dovecot_pop3_account(dc, USER, os.path.join(demo, "Maildir"),
                                          tls_ca_file=ca, keep=False)
        mprun.write_config(config, {"demo": acct}, state_dir=os.path.join(demo, "state"))
        print(f"== {config}:")
        with open(config) as f:
            print("   " + f.read().replace(dc.password, "***").replace("\n", "\n   ").rstrip())
        print(f"== {binary} -c {config}", flush=True)
        try:
            rc = subprocess.run([binary, "-c", config], timeout=120).returncode
        except subprocess.TimeoutExpired:
            print("mailpull did not finish within 120 s", file=sys.stderr)
            return 75
        print(f"== mailpull exited with status {rc}; {dc.count(USER)} messages left on the server")
    new = os.path.join(demo, "Maildir", "new")
    names = sorted(os.listdir(new)) if os.path.isdir(new) else []
    print(f"== {new}: {len(names)} messages")
    for n in names:
        print(f"   {os.path.getsize(os.path.join(new, n)):8d}  {n}")
    if names:
        with open(os.path.join(new, names[0]), "rb") as f:
            head = f.read().split(b"\n\n", 1)[0]
        print(f"== headers of {names[0]}:")
        print("   " + head.decode("utf-8", "replace").replace("\n", "\n   "))
    return rc


if __name__ == "__main__":
    sys.exit(main())
