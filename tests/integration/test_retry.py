"""mailpull --daemon retries by failure class (mailpull(1), DAEMON): a refused
password is logged once and not retried until the password_file or the
configuration file changes or SIGHUP comes (the STATUS line names the held
account); a server that breaks the protocol is retried at the slow end,
4 x interval, not after the quick early backoff; a partial IMAP run (a
folder referred elsewhere) waits for the interval.

Attempts are counted twice: in Dovecot's own log (one "Password mismatch"
line per login it refused, which its auth penalty may delay by seconds) and
in the daemon's debug log (-v: one "started worker" line per run, at once).
"""

import os
import re
import signal
import time

import mprun

from conftest import EX_OK, Raw, make_message
from fakeimap import FakeIMAP
from fakepop3 import FakePOP3
from test_daemon import Notifications, count_new, daemons, start, wait_for  # noqa: F401

HELD = ("; not retried until the configuration changes or mailpull is reloaded "
        "(SIGHUP)")


def refusals(mp, user):
    """Logins Dovecot refused for user (auth_verbose logs each mismatch)."""
    return sum(1 for ln in mp.dc.log_text().splitlines()
               if "Password mismatch" in ln and f"({user}," in ln)


def runs(d, account):
    """Runs the daemon started for account (debug lines, shown with -v)."""
    return len(re.findall(rf"debug: account {account}: started worker", d.log()))


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def settle(seconds):
    """Long enough for several 1 s intervals, also on a slowed-down build."""
    time.sleep(seconds * mprun.TIME_SCALE)


def test_refused_password_held_until_password_file_changes(mp, daemons):
    user = mp.new_user("h")
    mp.dc.add_message(user, make_message(0, tag=user))
    pwfile = mp.path("password")
    write_secret(pwfile, "not-the-password\n")
    acct = mp.pop3_account(user, password_file=pwfile, interval=Raw("1s"))
    del acct["password"]
    mp.configure(acct)
    n = Notifications(mp)
    try:
        d = start(mp, daemons, "-v", env={"NOTIFY_SOCKET": n.path})
        d.wait_log(r"error: account t1")
        # Five intervals later: still the one attempt and the one error line.
        settle(5)
        log = d.log()
        assert runs(d, "t1") == 1, log
        assert refusals(mp, user) == 1, mp.dc.log_text()
        assert log.count("error: ") == 1, log
        assert re.search(r"mailpull: error: account t1 \(127\.0\.0\.1:\d+\): authentication "
                         r"refused; the server said: .+" + re.escape(HELD), log), log
        i = n.wait("held: t1 (authentication refused)")
        assert "failing:" not in n.msgs[i], n.msgs[i]

        # The fix, without a signal: the next interval tick notices it.
        write_secret(pwfile, mp.dc.password + "\n")
        wait_for(lambda: count_new(mp) == 1, 20, "the fetch after the fix", d.proc)
        d.wait_log(r"account t1: password_file .* changed; running it again")
        d.wait_log(r"account t1 .*working again after 1 failed attempt")
        assert refusals(mp, user) == 1
        assert runs(d, "t1") == 2
        i = n.wait("1 message fetched")
        assert "held:" not in n.msgs[i], n.msgs[i]
        assert d.stop().rc == EX_OK
    finally:
        n.close()
    assert mp.dc.password not in d.proc.result.err


def test_sighup_and_config_change_release_held_accounts(mp, daemons):
    """Polled POP3 and IDLE IMAP alike: SIGHUP retries each held account once
    (settings unchanged); a new configuration file is read without one."""
    u1, u2 = mp.new_user("h"), mp.new_user("h")
    mp.dc.add_message(u1, make_message(0, tag=u1))
    mp.dc.add_message(u2, make_message(0, tag=u2))
    md2 = mp.maildir("Maildir2")
    accounts = {
        "pop": mp.pop3_account(u1, password="wrong", interval=Raw("1s")),
        "idle": mp.imap_account(u2, md2, password="wrong", idle=True, interval=Raw("1s")),
    }
    mp.configure(accounts)
    d = start(mp, daemons, "-v")
    d.wait_log(r"error: account pop")
    d.wait_log(r"error: account idle")
    settle(4)
    assert (runs(d, "pop"), runs(d, "idle")) == (1, 1), d.log()
    assert (refusals(mp, u1), refusals(mp, u2)) == (1, 1), mp.dc.log_text()
    assert d.log().count(HELD) == 2, d.log()

    # SIGHUP with the same file: one more attempt each, then held again.
    d.signal(signal.SIGHUP)
    d.wait_log(re.escape(HELD), count=4)
    settle(4)
    assert (runs(d, "pop"), runs(d, "idle")) == (2, 2), d.log()
    assert (refusals(mp, u1), refusals(mp, u2)) == (2, 2), mp.dc.log_text()
    assert d.log().count(HELD) == 4, d.log()

    # SIGUSR1 polls the others; a held account waits for its fix.
    d.signal(signal.SIGUSR1)
    settle(2)
    assert (runs(d, "pop"), runs(d, "idle")) == (2, 2), d.log()

    # The file fixed, no signal: reloaded at the next tick, both fetched.
    accounts["pop"]["password"] = accounts["idle"]["password"] = mp.dc.password
    mp.configure(accounts)
    wait_for(lambda: count_new(mp) == 1 and count_new(mp, md2) == 1, 20,
             "both accounts after the fix", d.proc)
    d.wait_log(r"reloading .* \(changed on disk\)")
    assert (refusals(mp, u1), refusals(mp, u2)) == (2, 2), mp.dc.log_text()
    assert d.stop().rc == EX_OK


def test_protocol_error_retried_at_the_slow_end(mp, daemons):
    with FakePOP3(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                  greeting="* OK this is not a POP3 server") as srv:
        mp.configure({
            "protocol": Raw("pop3"), "host": "127.0.0.1", "port": srv.port,
            "tls": Raw("implicit"), "tls_ca_file": mp.dc.ca_file, "user": "alice",
            "password": srv.password, "maildir": mp.maildir(), "interval": Raw("2s"),
        })
        d = start(mp, daemons)
        d.wait_log(r"error: account t1")
        settle(3)
        assert srv.connections == 1, d.log()
        # 4 x the 2 s interval, where a temporary failure waits 1 s.
        assert re.search(r"error: account t1 \(127\.0\.0\.1:\d+\): unexpected POP3 reply in "
                         r"greeting state; the server said: \* OK this is not a POP3 server; "
                         r"retrying in 8s\n", d.log()), d.log()
        assert d.stop().rc == EX_OK


def test_partial_run_waits_for_the_interval(mp, daemons):
    ref = "{tag} NO [REFERRAL imap://alice@127.0.0.1:1/INBOX] moved"
    with FakeIMAP(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                  caps=["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS"],
                  messages=[make_message(0)], script={"SELECT": ref, "EXAMINE": ref}) as srv:
        mp.configure({
            "protocol": Raw("imap"), "host": "127.0.0.1", "port": srv.port,
            "tls": Raw("implicit"), "tls_ca_file": mp.dc.ca_file, "user": "alice",
            "password": srv.password, "maildir": mp.maildir(), "interval": Raw("8s"),
        })
        n = Notifications(mp)
        try:
            d = start(mp, daemons, env={"NOTIFY_SOCKET": n.path})
            d.wait_log(r"error: account t1")
            settle(3)
            assert srv.connections == 1, d.log()
            # The interval, where a temporary failure waits 1 s; not listed as failing.
            assert re.search(r"error: account t1 \(127\.0\.0\.1:\d+\): folder \"INBOX\": "
                             r"server refers SELECT to another server[^;]*; the server said: "
                             r".*; retrying in 8s\n", d.log()), d.log()
            i = n.wait("STATUS=1 account, last poll ")
            assert "failing" not in n.msgs[i] and "held" not in n.msgs[i], n.msgs
            assert d.stop().rc == EX_OK
        finally:
            n.close()
