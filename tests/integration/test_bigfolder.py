"""A large IMAP folder (keep = yes): the first fetch stays within a memory
bound, and a poll with no new mail after it costs a few commands, no
message data, and changes neither the state nor the Maildir.

The folder holds MAILPULL_BIGFOLDER_COUNT messages (default 20 000; the
long run uses 100 000), written straight into the Dovecot user's cur/ the
way bench.py builds its pristine mailboxes (about 10 s per 100 000), so
building it costs far less than fetching it.
"""

import os
import re

import pytest

from conftest import EX_OK, report
from mprun import Raw

import bench

COUNT = int(os.environ.get("MAILPULL_BIGFOLDER_COUNT", "20000"))
# A poll with nothing new: LOGIN (or AUTHENTICATE), SELECT or STATUS, and
# LOGOUT, plus a CAPABILITY or an ENABLE; a few more leave room for the
# engine's choices, none grows with the folder.
MAX_POLL_COMMANDS = 8
# Peak RSS of the first fetch. The goal is 8 MiB, flat in the number of
# messages. 20 000 messages reach about 9 MiB: the listing of the folder
# is held whole (32 bytes a message) and the state's UIDs and fingerprints
# grow with it; the recorded Maildir names leave memory after each
# published batch (state_names_release()). About 6.5 MiB is shared library
# text (libcrypto alone 4 MiB) that the kernel counts in the peak. The long
# run (100 000 messages) sets MAILPULL_BIGFOLDER_RSS_MIB.
MAX_FETCH_RSS_MIB = float(os.environ.get("MAILPULL_BIGFOLDER_RSS_MIB", "11"))
# The poll: the state's UID ranges and fingerprints, nothing per message
# but the fingerprints' 8 bytes.
MAX_POLL_RSS_MIB = 10


def fill_folder(dc, user, count):
    """count small distinct messages in user's INBOX, already in cur/."""
    md = dc.ensure_mailbox(user)
    cur = os.path.join(md, "cur")
    for i in range(count):
        bench.write_pristine_file(cur, f"1700000000.M{i}P1.big", bench.small_message(i),
                                  dc.uid, dc.gid)
    dc.clear_indexes(user)
    assert dc.count(user) == count


def tree(top):
    """Every file under top with its size and mtime: what a poll must not change."""
    out = []
    for d, _, files in os.walk(top):
        for f in files:
            st = os.stat(os.path.join(d, f))
            out.append((os.path.relpath(os.path.join(d, f), top), st.st_size, st.st_mtime_ns))
    return sorted(out)


def count_files(md):
    return sum(len(os.listdir(os.path.join(md, sub))) for sub in ("new", "cur"))


def commands(trace):
    """The commands mailpull sent, from its -v trace ("C: <tag> <command> ...")."""
    return [ln[3:] for ln in trace.splitlines() if ln.startswith("C: ")]


@pytest.fixture
def big(mp):
    user = mp.new_user("big")
    fill_folder(mp.dc, user, COUNT)
    mp.configure(mp.imap_account(user, keep=True, folders=["INBOX"],
                                 timeout=Raw("300s")))
    return user


def test_bigfolder_fetch_then_poll_without_new_mail(mp, big):
    r = mp.run(measure_rss=True, timeout=mp.timeout * 10)
    assert r.rc == EX_OK, str(r)
    assert count_files(mp.maildir()) == COUNT
    fetch_rss = r.maxrss_kib / 1024
    before = (tree(mp.state_dir), tree(mp.maildir()))

    p = mp.run("-v", measure_rss=True)
    assert p.rc == EX_OK, str(p)
    sent = commands(p.err)
    fetches = [c for c in sent if re.search(r"\bFETCH\b", c, re.I)]
    report(f"{COUNT}-message IMAP folder: first fetch {r.elapsed:.1f} s, peak RSS "
           f"{fetch_rss:.1f} MiB; no-new-mail poll {p.elapsed:.2f} s, {len(sent)} commands, "
           f"peak RSS {p.maxrss_kib / 1024:.1f} MiB")
    assert not fetches, f"a poll with no new mail fetched: {fetches}"
    assert len(sent) <= MAX_POLL_COMMANDS, f"{len(sent)} commands: {sent}"
    assert not re.search(r"^S: \* \d+ FETCH", p.err, re.M), "message data came back"
    assert (tree(mp.state_dir), tree(mp.maildir())) == before, \
        "a poll with no new mail changed the state or the Maildir"
    assert count_files(mp.maildir()) == COUNT

    if r.maxrss_kib == 0:
        pytest.skip("peak RSS not measured (GNU time missing)")
    if mp.slow:
        pytest.skip("sanitized build or valgrind: peak RSS is not mailpull's own")
    assert fetch_rss < MAX_FETCH_RSS_MIB, \
        f"peak RSS {fetch_rss:.1f} MiB fetching {COUNT} messages"
    assert p.maxrss_kib / 1024 < MAX_POLL_RSS_MIB, \
        f"peak RSS {p.maxrss_kib / 1024:.1f} MiB for a poll of {COUNT} messages"
