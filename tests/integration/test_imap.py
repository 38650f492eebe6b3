"""Fetching from Dovecot over IMAP: folders, flags, keep policies, state,
UIDVALIDITY changes, content and memory."""

import os
import re
import time

import pytest

from conftest import (EX_OK, Raw, make_message, multiset, digest, assert_error, report)
from fakeimap import FakeIMAP
import mprun


def assert_ok(r):
    assert r.rc == EX_OK, str(r)


def fill(mp, user, n, tag="m", folder="INBOX", **kw):
    """n messages saved into folder (created when missing) through doveadm."""
    if folder.upper() != "INBOX":
        mp.dc.create_mailbox(user, folder)
    msgs = [make_message(i, tag=tag, **kw) for i in range(n)]
    mp.dc.save_messages(user, msgs, folder)
    return msgs


def sub(mp, dirname, maildir=None):
    """The local Maildir++ folder directory ("" for the root)."""
    return os.path.join(maildir or mp.maildir(), dirname)


def local_folders(maildir):
    """Maildir++ subfolder names present locally (".Archive", ...)."""
    if not os.path.isdir(maildir):
        return set()
    return {n for n in os.listdir(maildir)
            if n.startswith(".") and os.path.isdir(os.path.join(maildir, n, "cur"))}


def server_state(mp, user, folders=("INBOX",)):
    """What a run must not change: per folder, status and every message's flags."""
    out = {}
    for f in folders:
        st = mp.dc.status(user, f)
        out[f] = (st["messages"], st["uidvalidity"], st["uidnext"], st.get("unseen"),
                  tuple(sorted((k, tuple(sorted(v))) for k, v in mp.dc.flags(user, f).items())))
    return out


def file_set(maildir):
    """{(sub, name)} of every message file under maildir and its subfolders."""
    res = set()
    for top, dirs, files in os.walk(maildir):
        if os.path.basename(top) in ("new", "cur"):
            rel = os.path.relpath(top, maildir)
            res.update((rel, n) for n in files)
    return res


def body_fetches(trace):
    """Client lines of a -v trace that ask for a message body."""
    return [ln for ln in trace.splitlines()
            if ln.startswith("C: ") and re.search(r"BODY(\.PEEK)?\[(TEXT)?\]|RFC822(\.TEXT)?[ )]",
                                                  ln, re.I)]


# ---- transports --------------------------------------------------------------

@pytest.mark.servers
def test_imaps_fetch_inbox(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 3)
    before = server_state(mp, user)
    mp.configure(mp.imap_account(user))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)
    assert mp.tmp_files() == []
    # keep = yes is the IMAP default, and BODY.PEEK leaves \Seen alone.
    assert server_state(mp, user) == before


@pytest.mark.servers
def test_imap_starttls_fetch(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 3)
    mp.configure(mp.imap_account(user, port=mp.dc.imap_port, tls=Raw("starttls")))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)
    assert mp.dc.count(user) == 3


def test_imaps_over_ipv6(mp):
    if not mp.dc.ipv6:
        pytest.skip("no IPv6 loopback")
    user = mp.new_user()
    msgs = fill(mp, user, 2)
    mp.configure(mp.imap_account(user, host="::1"))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)


def test_imap_quiet_success_prints_nothing(mp):
    user = mp.new_user()
    fill(mp, user, 2)
    mp.configure(mp.imap_account(user))
    r = mp.run("-q")
    assert_ok(r)
    assert r.stdout == b"" and r.stderr == b"", str(r)


@pytest.mark.servers
def test_imap_wrong_password_changes_nothing(mp):
    user = mp.new_user()
    fill(mp, user, 3)
    before = server_state(mp, user)
    mp.configure(mp.imap_account(user, password="not-the-Password-42", keep=False))
    r = mp.run()
    assert_error(r, 77, "t1", mp.dc.host)
    assert "not-the-Password-42" not in r.err + r.out
    assert server_state(mp, user) == before
    assert mp.messages() == []


# ---- folders -----------------------------------------------------------------

def test_default_folders_is_inbox_only(mp):
    user = mp.new_user()
    inbox = fill(mp, user, 2, tag="in")
    fill(mp, user, 2, tag="ar", folder="Archive")
    mp.configure(mp.imap_account(user))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(inbox)
    assert local_folders(mp.maildir()) == set()


@pytest.mark.servers
def test_folders_patterns_and_exclude(mp):
    """folders = { "INBOX", "Archive", "Lists/*" }, exclude = { "Lists/spam" }:
    * reaches every level below Lists; Archive's children are not asked for."""
    user = mp.new_user()
    want = {
        "": fill(mp, user, 2, tag="inbox"),
        ".Archive": fill(mp, user, 2, tag="archive", folder="Archive"),
        ".Lists.a": fill(mp, user, 2, tag="lista", folder="Lists/a"),
        ".Lists.b.deep": fill(mp, user, 1, tag="deep", folder="Lists/b/deep"),
    }
    fill(mp, user, 1, tag="y2024", folder="Archive/2024")
    fill(mp, user, 1, tag="spam", folder="Lists/spam")
    fill(mp, user, 1, tag="trash", folder="Trash")
    folders = ["INBOX", "Archive", "Lists/a", "Lists/b/deep", "Archive/2024", "Lists/spam",
               "Trash"]
    before = server_state(mp, user, folders)
    mp.configure(mp.imap_account(user, folders=["INBOX", "Archive", "Lists/*"],
                                 exclude=["Lists/spam"]))
    assert_ok(mp.run())
    for d, msgs in want.items():
        assert multiset(mp.messages(sub(mp, d))) == multiset(msgs), d
    have = local_folders(mp.maildir())
    # Lists/b exists on the server only as the \Noselect parent of deep.
    assert have - {".Lists", ".Lists.b"} == {".Archive", ".Lists.a", ".Lists.b.deep"}, have
    for d in (".Lists", ".Lists.b"):
        if d in have:
            assert mp.messages(sub(mp, d)) == []
    assert server_state(mp, user, folders) == before


def test_percent_stops_at_the_delimiter(mp):
    user = mp.new_user()
    y24 = fill(mp, user, 1, tag="y24", folder="Archive/2024")
    y25 = fill(mp, user, 1, tag="y25", folder="Archive/2025")
    fill(mp, user, 1, tag="q1", folder="Archive/2024/Q1")
    fill(mp, user, 1, tag="top", folder="Archive")
    mp.configure(mp.imap_account(user, folders=["Archive/%"]))
    assert_ok(mp.run())
    assert multiset(mp.messages(sub(mp, ".Archive.2024"))) == multiset(y24)
    assert multiset(mp.messages(sub(mp, ".Archive.2025"))) == multiset(y25)
    assert not os.path.isdir(sub(mp, ".Archive.2024.Q1")) or \
        mp.messages(sub(mp, ".Archive.2024.Q1")) == []
    assert mp.messages() == []
    assert not os.path.isdir(sub(mp, ".Archive")) or mp.messages(sub(mp, ".Archive")) == []


@pytest.mark.servers
def test_nested_and_non_ascii_folder_names(mp):
    """"Archive/2024" is .Archive.2024; "Entwürfe" is .Entwürfe in UTF-8 on
    disk (modified UTF-7, Entw&APw-rfe, only on the wire)."""
    user = mp.new_user()
    y24 = fill(mp, user, 2, tag="y24", folder="Archive/2024")
    drafts = fill(mp, user, 2, tag="drafts", folder="Entw\u00fcrfe")
    mp.configure(mp.imap_account(user, folders=["Archive/2024", "Entw\u00fcrfe"]))
    assert_ok(mp.run())
    assert multiset(mp.messages(sub(mp, ".Archive.2024"))) == multiset(y24)
    assert multiset(mp.messages(sub(mp, ".Entw\u00fcrfe"))) == multiset(drafts)
    names = os.listdir(os.fsencode(mp.maildir()))
    assert ".Entw\u00fcrfe".encode() in names, names
    assert not any(b"&" in n for n in names), names
    for d in (".Archive.2024", ".Entw\u00fcrfe"):
        for s in ("new", "cur", "tmp"):
            assert os.path.isdir(sub(mp, os.path.join(d, s))), (d, s)


@pytest.mark.servers("cyrus")
def test_dot_separator_and_folders_below_inbox(mp):
    """Cyrus as Debian configures it (altnamespace and unixhierarchysep
    off): the delimiter is '.', every folder sits below INBOX
    ("INBOX.Archive.2024"), and INBOX itself has children. INBOX stays the
    Maildir root and its children land under .INBOX.; keep = no empties
    every folder; a second run fetches nothing."""
    user = mp.new_user()
    inbox = fill(mp, user, 2, tag="dotin")
    arch = fill(mp, user, 2, tag="dotar", folder="Archive")
    y24 = fill(mp, user, 1, tag="doty", folder="Archive/2024")
    drafts = fill(mp, user, 1, tag="dotdr", folder="Entw\u00fcrfe")
    mp.configure(mp.imap_account(user, port=mp.dc.imaps_dot_port, keep=False,
                                 folders=["INBOX", "INBOX.*"]))
    r = mp.run()
    assert_ok(r)
    assert multiset(mp.messages()) == multiset(inbox)
    assert multiset(mp.messages(sub(mp, ".INBOX.Archive"))) == multiset(arch)
    assert multiset(mp.messages(sub(mp, ".INBOX.Archive.2024"))) == multiset(y24)
    assert multiset(mp.messages(sub(mp, ".INBOX.Entw\u00fcrfe"))) == multiset(drafts)
    assert local_folders(mp.maildir()) == {".INBOX.Archive", ".INBOX.Archive.2024",
                                           ".INBOX.Entw\u00fcrfe"}
    for f in ("INBOX", "Archive", "Archive/2024", "Entw\u00fcrfe"):
        assert mp.dc.count(user, f) == 0, f
    files = file_set(mp.maildir())
    r = mp.run("-v")
    assert_ok(r)
    assert file_set(mp.maildir()) == files
    assert not body_fetches(r.out + r.err)


def test_missing_folder_fails_the_account_after_the_others(mp):
    """A folder named without wildcards that the server does not have: the
    other folders are fetched first, then the account fails (78)."""
    user = mp.new_user()
    inbox = fill(mp, user, 2)
    mp.configure(mp.imap_account(user, folders=["INBOX", "NoSuchFolder"]))
    r = mp.run()
    assert_error(r, 78, "t1", "NoSuchFolder")
    assert multiset(mp.messages()) == multiset(inbox), str(r)


# ---- flags -------------------------------------------------------------------

@pytest.mark.servers
def test_server_flags_become_maildir_info(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 5, tag="fl")
    mp.dc.flag_message(user, "<fl-1@test>", "\\Seen")
    mp.dc.flag_message(user, "<fl-2@test>", "\\Seen \\Flagged \\Answered")
    mp.dc.flag_message(user, "<fl-3@test>", "\\Seen \\Flagged")
    mp.dc.flag_message(user, "<fl-4@test>", "\\Answered \\Seen")
    before = server_state(mp, user)
    mp.configure(mp.imap_account(user))
    assert_ok(mp.run())
    by_id = {}
    for p in mprun.maildir_files(mp.maildir()):
        with open(p, "rb") as f:
            data = f.read()
        mid = re.search(rb"Message-ID: <(fl-\d)@test>", data).group(1).decode()
        by_id[mid] = p
    assert set(by_id) == {f"fl-{i}" for i in range(5)}
    assert os.path.basename(os.path.dirname(by_id["fl-0"])) == "new"
    assert ":2," not in os.path.basename(by_id["fl-0"])
    for mid, info in (("fl-1", "S"), ("fl-2", "FRS"), ("fl-3", "FS"), ("fl-4", "RS")):
        p = by_id[mid]
        assert os.path.basename(os.path.dirname(p)) == "cur", p
        assert os.path.basename(p).endswith(":2," + info), p
    assert multiset(mp.messages()) == multiset(msgs)
    assert server_state(mp, user) == before


def test_mark_seen_yes_sets_seen(mp):
    user = mp.new_user()
    fill(mp, user, 3, tag="ms")
    mp.configure(mp.imap_account(user, mark_seen=True))
    assert_ok(mp.run())
    assert len(mp.messages()) == 3
    flags = mp.dc.flags(user)
    assert all("\\Seen" in f for f in flags.values()), flags


def test_only_unseen(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 4, tag="ou")
    mp.dc.flag_message(user, "<ou-1@test>", "\\Seen")
    mp.dc.flag_message(user, "<ou-3@test>", "\\Seen \\Flagged")
    before = server_state(mp, user)
    mp.configure(mp.imap_account(user, only_unseen=True))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset([msgs[0], msgs[2]])
    assert server_state(mp, user) == before
    # The ones fetched stay unseen on the server and are not fetched twice.
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset([msgs[0], msgs[2]])
    assert server_state(mp, user) == before


# ---- content -----------------------------------------------------------------

TRICKY = [
    b"Subject: dots\nMessage-ID: <t0@test>\n\n.leading dot\n..two dots\n.\nmiddle . dot\n.",
    "Subject: Gr\u00fc\u00dfe aus K\u00f6ln \u2013 \u65e5\u672c\nFrom: J\u00fcrgen "
    "<j@example.org>\n\nUTF-8 body: \u00e9\u00e8\u00ea \U0001F600\n".encode("utf-8"),
    "Subject: Caf\u00e9 cr\u00e8me\nFrom: Ren\u00e9e <r@example.org>\n\nLatin-1 body "
    "\u00e0\u00e7\u00f1\n".encode("latin-1"),
    # IMAP keeps a missing final newline (POP3 cannot).
    b"Subject: no final newline\nMessage-ID: <t3@test>\n\nlast line without newline",
    b"Subject: empty body\nMessage-ID: <empty@test>\n\n",
    b"Subject: headers only\nMessage-ID: <headers-only@test>\n",
    b"Subject: whitespace\n\n\tindented\ntrailing   \n" + b"x" * 5000 + b"\n\n\n",
    # Parentheses, braces and a literal-looking line inside the body.
    b"Subject: looks like IMAP {12}\n\n* 1 FETCH (BODY[] {5}\r\nhello)\n) ) {0}\nA1 OK done\n",
]


@pytest.mark.servers
def test_imap_byte_exact_content(mp):
    user = mp.new_user()
    mp.dc.add_messages(user, TRICKY)
    mp.configure(mp.imap_account(user))
    assert_ok(mp.run())
    got = mp.messages()
    want = [m.replace(b"\r\n", b"\n") for m in TRICKY]
    missing = [w for w in want if w not in got]
    assert not missing, f"not stored byte-exact: {missing!r}\ngot: {got!r}"
    assert multiset(got) == multiset(want)


def test_imap_large_message_streams_with_bounded_memory(mp):
    """A 20 MiB message through IMAPS arrives intact; peak RSS stays far below it."""
    size = 20 * 1024 * 1024
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4\n"
    chunk = line * 63 + b") {42}\n"
    body = chunk * (size // len(chunk) + 1)
    big = b"Subject: big\nMessage-ID: <big@test>\n\n" + body[:size]
    big = big[: big.rfind(b"\n") + 1]
    user = mp.new_user()
    mp.dc.add_message(user, big)
    mp.configure(mp.imap_account(user, timeout=Raw("120s")))
    r = mp.run(measure_rss=True, timeout=mp.timeout * 3)
    assert_ok(r)
    got = mp.messages()
    assert len(got) == 1
    assert len(got[0]) == len(big) and digest(got[0]) == digest(big)
    rss_mib = r.maxrss_kib / 1024
    report(f"20 MiB message over IMAPS: mailpull peak RSS {rss_mib:.1f} MiB"
           f"{' (sanitized build or valgrind)' if mp.slow else ''}, "
           f"wall {r.elapsed:.2f} s, CPU {r.cpu:.2f} s")
    if r.maxrss_kib == 0:
        pytest.skip("peak RSS not measured (GNU time missing)")
    if mp.slow:
        pytest.skip(f"sanitized build or valgrind: peak RSS {rss_mib:.1f} MiB is not mailpull's own")
    assert rss_mib < 12, f"peak RSS {rss_mib:.1f} MiB for a 20 MiB message"


# ---- keep, expunge, keep_days ------------------------------------------------

@pytest.mark.servers
def test_keep_no_removes_exactly_the_fetched_messages(mp):
    """keep = no: the fetched messages are expunged (UID EXPUNGE); a message
    another client marked \\Deleted survives, still flagged."""
    user = mp.new_user()
    msgs = fill(mp, user, 4, tag="kn")
    arch = fill(mp, user, 2, tag="kna", folder="Archive")
    mp.dc.flag_message(user, "<kn-3@test>", "\\Deleted")
    mp.configure(mp.imap_account(user, keep=False, folders=["INBOX", "Archive"]))
    assert_ok(mp.run())
    local = multiset(mp.messages())
    # A message marked \Deleted on the server is not fetched.
    assert local == multiset(msgs[:3])
    assert multiset(mp.messages(sub(mp, ".Archive"))) == multiset(arch)
    assert mp.dc.flags(user) == {"<kn-3@test>": frozenset({"\\Deleted"})}
    assert mp.dc.count(user, "Archive") == 0
    assert mp.dc.bodies(user) == [msgs[3]]
    # Nothing more to do, nothing fetched twice.
    assert_ok(mp.run())
    assert multiset(mp.messages()) == local
    assert mp.dc.flags(user) == {"<kn-3@test>": frozenset({"\\Deleted"})}


def fake_imaps(mp, caps, msgs):
    return FakeIMAP(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                    caps=caps, messages=msgs)


def fake_account(mp, srv, **over):
    a = {
        "protocol": Raw("imap"),
        "host": "127.0.0.1",
        "port": srv.port,
        "tls": Raw("implicit"),
        "tls_ca_file": mp.dc.ca_file,
        "user": "alice",
        "password": srv.password,
        "maildir": mp.maildir(),
        "timeout": Raw("20s"),
    }
    a.update(over)
    return a


def test_keep_no_without_uidplus_never_expunges(mp):
    """Without UIDPLUS, a plain EXPUNGE would also remove what other clients
    marked \\Deleted: mailpull does not send it unless expunge = yes."""
    msgs = [make_message(i, tag="nouidplus") for i in range(3)]
    with fake_imaps(mp, ["IMAP4rev1", "AUTH=PLAIN"], msgs) as srv:
        mp.configure(fake_account(mp, srv, keep=False))
        r = mp.run()
        assert_ok(r)
        assert multiset(mp.messages()) == multiset(msgs)
        assert "EXPUNGE" not in srv.verbs() and "UID EXPUNGE" not in srv.verbs(), srv.commands
        assert len(srv.messages) == 3
        # Marked \Deleted and left there, with a warning.
        assert all("\\Deleted" in f for f in srv.flags), srv.flags
        assert "mailpull: warning:" in r.err, str(r)
        # Tried again on the next run; nothing fetched twice.
        assert_ok(mp.run())
        assert multiset(mp.messages()) == multiset(msgs)
        assert "EXPUNGE" not in srv.verbs(), srv.commands


def test_keep_no_without_uidplus_expunge_yes(mp):
    msgs = [make_message(i, tag="expyes") for i in range(3)]
    with fake_imaps(mp, ["IMAP4rev1", "AUTH=PLAIN"], msgs) as srv:
        mp.configure(fake_account(mp, srv, keep=False, expunge=True))
        assert_ok(mp.run())
        assert multiset(mp.messages()) == multiset(msgs)
        assert "EXPUNGE" in srv.verbs(), srv.commands
        assert srv.messages == []


def test_keep_days_deletes_old_fetched_messages(mp):
    """keep_days = 7: fetched messages whose INTERNALDATE is older than 7
    days are deleted on the server, younger ones stay; nothing twice."""
    user = mp.new_user()
    old = [make_message(i, tag="kdold") for i in range(2)]
    young = [make_message(i, tag="kdyoung") for i in range(2)]
    ten_days_ago = time.time() - 10 * 86400
    for m in old:
        mp.dc.add_message(user, m, mtime=ten_days_ago)
    for m in young:
        mp.dc.add_message(user, m, mtime=time.time() - 86400)
    mp.configure(mp.imap_account(user, keep_days=7))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(old + young)
    assert_ok(mp.run())       # deletion may wait for the next run
    assert multiset(mp.dc.bodies(user)) == multiset(young)
    assert multiset(mp.messages()) == multiset(old + young)
    assert all("\\Seen" not in f for f in mp.dc.flags(user).values())


def test_keep_days_spares_messages_not_fetched(mp):
    """An old message that was never fetched (only_unseen skips it) stays."""
    user = mp.new_user()
    ten_days_ago = time.time() - 10 * 86400
    seen, unseen = make_message(0, tag="kdseen"), make_message(1, tag="kdunseen")
    mp.dc.add_message(user, seen, mtime=ten_days_ago)
    mp.dc.add_message(user, unseen, mtime=ten_days_ago)
    mp.dc.flag_message(user, "<kdseen-0@test>", "\\Seen")
    mp.configure(mp.imap_account(user, keep_days=7, only_unseen=True))
    assert_ok(mp.run())
    assert_ok(mp.run())
    assert mp.messages() == [unseen]
    assert mp.dc.bodies(user) == [seen]


# ---- state -------------------------------------------------------------------

@pytest.mark.servers
def test_second_run_fetches_nothing_and_changes_nothing(mp):
    user = mp.new_user()
    folders = ["INBOX", "Archive"]
    fill(mp, user, 5, tag="s2")
    fill(mp, user, 3, tag="s2a", folder="Archive")
    mp.dc.flag_message(user, "<s2-1@test>", "\\Seen \\Flagged")
    mp.configure(mp.imap_account(user, folders=folders))
    before = server_state(mp, user, folders)
    assert_ok(mp.run())
    files = file_set(mp.maildir())
    assert len(files) == 8
    assert server_state(mp, user, folders) == before
    r = mp.run("-v")
    assert_ok(r)
    assert file_set(mp.maildir()) == files
    assert server_state(mp, user, folders) == before
    assert re.search(r"^C: ", r.out + r.err, re.M), "no C: lines in the -v trace"
    fetched = body_fetches(r.out + r.err)
    assert not fetched, f"bodies asked for on a run with nothing new: {fetched}"


@pytest.mark.servers
def test_message_appended_between_runs(mp):
    user = mp.new_user()
    folders = ["INBOX", "Archive"]
    first = fill(mp, user, 3, tag="ap") + fill(mp, user, 2, tag="apa", folder="Archive")
    mp.configure(mp.imap_account(user, folders=folders))
    assert_ok(mp.run())
    later_in = [make_message(i, tag="later") for i in range(2)]
    later_ar = [make_message(i, tag="latera") for i in range(1)]
    mp.dc.save_messages(user, later_in)
    mp.dc.save_messages(user, later_ar, "Archive")
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(first[:3] + later_in)
    assert multiset(mp.messages(sub(mp, ".Archive"))) == multiset(first[3:] + later_ar)
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(first[:3] + later_in)


def test_uidvalidity_change_inbox_rebuild(mp):
    """Dovecot rebuilds INBOX's index: a new UIDVALIDITY, the same messages.
    Nothing is fetched twice, the new message is fetched, a warning names
    UIDVALIDITY."""
    user = mp.new_user()
    msgs = fill(mp, user, 4, tag="uvr")
    mp.dc.flag_message(user, "<uvr-0@test>", "\\Seen")
    mp.configure(mp.imap_account(user))
    assert_ok(mp.run())
    old = mp.dc.uidvalidity(user)
    new = make_message(0, tag="uvr-new")
    mp.dc.add_message(user, new)
    assert mp.dc.rebuild_mailbox(user) != old
    before = server_state(mp, user)
    r = mp.run()
    assert_ok(r)
    assert "UIDVALIDITY" in r.err, str(r)
    assert multiset(mp.messages()) == multiset(msgs + [new])
    assert server_state(mp, user) == before
    r = mp.run()
    assert_ok(r)
    assert "UIDVALIDITY" not in r.err, str(r)
    assert multiset(mp.messages()) == multiset(msgs + [new])


@pytest.mark.servers
def test_uidvalidity_change_recreated_folder(mp):
    """Archive is deleted and created again with its messages in another
    order (so the UIDs now name other messages) plus two new ones."""
    user = mp.new_user()
    msgs = fill(mp, user, 4, tag="uvc", folder="Archive")
    mp.configure(mp.imap_account(user, folders=["Archive"]))
    assert_ok(mp.run())
    assert multiset(mp.messages(sub(mp, ".Archive"))) == multiset(msgs)
    new = [make_message(i, tag="uvc-new") for i in range(2)]
    order = [new[0], msgs[3], msgs[2], new[1], msgs[1], msgs[0]]
    mp.dc.recreate_mailbox(user, "Archive", order)
    r = mp.run()
    assert_ok(r)
    assert "UIDVALIDITY" in r.err, str(r)
    assert multiset(mp.messages(sub(mp, ".Archive"))) == multiset(msgs + new)
    assert mp.dc.count(user, "Archive") == 6
    assert_ok(mp.run())
    assert multiset(mp.messages(sub(mp, ".Archive"))) == multiset(msgs + new)


@pytest.mark.servers
def test_uidvalidity_change_same_message_id_other_size(mp):
    """After a UIDVALIDITY change a message matches a fetched one only by
    Message-ID and size: the same Message-ID with another size is new."""
    user = mp.new_user()
    msgs = fill(mp, user, 3, tag="uvk", folder="Archive")
    mp.configure(mp.imap_account(user, folders=["Archive"], keep=True))
    assert_ok(mp.run())
    changed = make_message(1, tag="uvk", body=b"Same Message-ID, another body and size.\n")
    new = make_message(9, tag="uvk-new")
    mp.dc.recreate_mailbox(user, "Archive", [msgs[0], new, changed, msgs[2]])
    r = mp.run()
    assert_ok(r)
    assert "UIDVALIDITY" in r.err, str(r)
    assert multiset(mp.messages(sub(mp, ".Archive"))) == multiset(msgs + [new, changed])
