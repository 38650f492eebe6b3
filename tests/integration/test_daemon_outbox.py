"""mailpull --daemon wakes up when a message lands in a sending account's
outbox (inotify on its new/ and cur/): the account runs within about a
second instead of at its interval (an hour here), a burst of messages makes
one run (and at most one more), the outbox is made when missing so it can
be watched, and a reload watches the outboxes of the new configuration.

A run is proven by what it fetches: a message is put on the server first,
so its arrival in the Maildir right after the outbox write shows that the
account ran, whatever the send code does with the queued message.
"""

import os
import re
import signal
import stat
import time

import mprun

from conftest import EX_OK, Raw, make_message
from test_daemon import count_new, daemons, start, wait_for  # noqa: F401

KICK = r"account t1: outbox has new mail, running"

QUEUED = (b"From: me@example.org\nTo: you@example.org\nSubject: queued\n"
          b"Message-ID: <%d.outbox@example.org>\n\nhello\n")


def queue(outbox, i, sub="new"):
    """A message written into tmp/ and renamed into sub/, as a Maildir writer does."""
    name = f"{int(time.time())}.M{i}P{os.getpid()}.test"
    tmp = os.path.join(outbox, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(QUEUED % i)
    os.rename(tmp, os.path.join(outbox, sub, name + (":2," if sub == "cur" else "")))


def account(mp, user, outbox, **over):
    # The submission server is never reached by these runs' fetch part; a
    # closed port keeps any send attempt local.
    return mp.imap_account(user, interval=Raw("1h"), smtp_host="127.0.0.1", smtp_port=1,
                           smtp_tls=Raw("implicit"), outbox=outbox, **over)


def started(mp, daemons, user):
    """A daemon whose start-up run is over (it fetched the first message)."""
    mp.dc.add_message(user, make_message(0, tag=user))
    d = start(mp, daemons)
    wait_for(lambda: count_new(mp) == 1, 20, "the start-up run", d.proc)
    d.wait_log(r"account t1: 1 new message")
    return d


def test_outbox_message_runs_account(mp, daemons):
    user = mp.new_user("o")
    outbox = mp.path("Outbox")
    mp.configure(account(mp, user, outbox))
    d = started(mp, daemons, user)
    # Missing at start: made (tmp, new, cur; 0700) so that it can be watched.
    for sub in ("tmp", "new", "cur"):
        st = os.stat(os.path.join(outbox, sub))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert KICK not in d.log()

    mp.dc.add_message(user, make_message(1, tag=user))
    t0 = time.monotonic()
    queue(outbox, 1)
    wait_for(lambda: count_new(mp) == 2, 10, "the run after the outbox write", d.proc)
    assert time.monotonic() - t0 < 6 * mprun.TIME_SCALE, \
        "the outbox write did not run the account at once"
    d.wait_log(KICK + " now")

    # cur/ is watched too.
    mp.dc.add_message(user, make_message(2, tag=user))
    queue(outbox, 2, "cur")
    wait_for(lambda: count_new(mp) == 3, 10, "the run after a write into cur/", d.proc)
    d.wait_log(KICK, count=2)

    # A message moved inside the outbox (new/ to cur/, or a flag change in
    # cur/, as a mail client does) is no news.
    time.sleep(2)
    kicks = len(re.findall(KICK, d.log()))
    moves = [("new", n, n + ":2,S") for n in os.listdir(os.path.join(outbox, "new"))]
    moves += [("cur", n, n + "F") for n in os.listdir(os.path.join(outbox, "cur"))]
    assert moves, "the outbox is empty: nothing to move"
    sub, name, to = moves[0]
    os.rename(os.path.join(outbox, sub, name), os.path.join(outbox, "cur", to))
    time.sleep(2.5)
    assert len(re.findall(KICK, d.log())) == kicks, d.log()
    assert d.stop().rc == EX_OK


def test_burst_makes_one_run(mp, daemons):
    user = mp.new_user("o")
    outbox = mp.path("Outbox")
    os.makedirs(os.path.join(outbox, "tmp"))
    mp.configure(account(mp, user, outbox))
    d = started(mp, daemons, user)

    mp.dc.add_message(user, make_message(1, tag=user))
    for i in range(50):
        queue(outbox, 100 + i)
    wait_for(lambda: count_new(mp) == 2, 10, "the run after the burst", d.proc)
    time.sleep(3)
    kicks = len(re.findall(KICK, d.log()))
    assert 1 <= kicks <= 2, d.log()
    assert d.stop().rc == EX_OK


def test_reload_watches_new_outbox(mp, daemons):
    user = mp.new_user("o")
    old, new = mp.path("Outbox"), mp.path("Outbox2")
    mp.configure(account(mp, user, old))
    d = started(mp, daemons, user)

    mp.configure(account(mp, user, new))
    d.signal(signal.SIGHUP)
    d.wait_log(r"reloaded .*: 1 account")
    # The changed account runs once after the reload: let it end.
    time.sleep(2)
    kicks = len(re.findall(KICK, d.log()))

    # The old outbox no longer counts.
    queue(old, 1)
    time.sleep(2.5)
    assert len(re.findall(KICK, d.log())) == kicks, d.log()

    mp.dc.add_message(user, make_message(1, tag=user))
    queue(new, 2)
    wait_for(lambda: count_new(mp) == 2, 10, "the run after a write to the new outbox",
             d.proc)
    assert len(re.findall(KICK, d.log())) == kicks + 1, d.log()
    assert d.stop().rc == EX_OK


def test_idle_account_woken(mp, daemons):
    """An idle = yes account waits in IDLE on its first folder: a message in
    its second folder is fetched only by a run, which the outbox write starts."""
    user = mp.new_user("o")
    outbox = mp.path("Outbox")
    mp.dc.create_mailbox(user, "Lists")
    mp.configure(account(mp, user, outbox, idle=True, folders=["INBOX", "Lists"]))
    d = started(mp, daemons, user)
    lists = os.path.join(mp.maildir(), ".Lists")

    mp.dc.add_message(user, make_message(1, tag=user), folder="Lists")
    time.sleep(2)
    assert count_new(mp, lists) == 0, "fetched without a run: the test proves nothing"
    queue(outbox, 1)
    wait_for(lambda: count_new(mp, lists) == 1, 10, "the run after the outbox write", d.proc)
    d.wait_log(KICK + " now")
    assert d.stop().rc == EX_OK
