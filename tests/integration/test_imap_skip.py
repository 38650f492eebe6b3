"""Nothing passed over unseen on IMAP (DESIGN invariant 8): messages left out
of a FETCH, skipped for max_size or \\Deleted, answered without a valid UID;
folders reached twice (namespaces), and folders whose names cannot be used
here, which never block the others."""

import os
import re

import pytest

from conftest import (EX_OK, EX_IOERR, EX_TEMPFAIL, EX_PROTOCOL, MailPull, Raw, make_message,
                      multiset)
from dovecot import Dovecot
from fakeimap import FakeIMAP


def assert_ok(r):
    assert r.rc == EX_OK, str(r)


def fake_imaps(mp, msgs, **kw):
    return FakeIMAP(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                    caps=["IMAP4rev1", "AUTH=PLAIN", "UIDPLUS"], messages=msgs, **kw)


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


def send_body(conn, index, uid, data, uid_item=None):
    """A FETCH response with the body; uid_item replaces "UID n" ("" drops it)."""
    item = f"UID {uid} " if uid_item is None else uid_item
    conn.send(f"* {index + 1} FETCH ({item}FLAGS () BODY[] {{{len(data)}}}\r\n".encode()
              + data + b")\r\n")


def body_fetch_lines(trace):
    return [ln for ln in trace.splitlines() if ln.startswith("C: ") and "BODY" in ln.upper()]


# ---- a UID the listing announced but the FETCH left out ------------------------

def test_uid_left_out_of_fetch_is_fetched_next_run(mp):
    msgs = [make_message(i, tag="omit") for i in range(3)]
    left_out = []

    def on_fetch(srv, conn, index, uid, data):
        if uid == 2 and not left_out:
            left_out.append(uid)      # once: the FETCH still ends in OK
            return True
        send_body(conn, index, uid, data)
        return True

    with fake_imaps(mp, msgs, on_fetch=on_fetch) as srv:
        mp.configure(fake_account(mp, srv))
        r = mp.run()
        assert r.rc == EX_TEMPFAIL, str(r)
        assert left_out == [2]
        # Said at the normal log level, naming the UID.
        assert re.search(r"warning:.*did not send them \(UID 2\)", r.err), str(r)
        assert multiset(mp.messages()) == multiset([msgs[0], msgs[2]])
        r = mp.run("-v")
        assert_ok(r)
        assert multiset(mp.messages()) == multiset(msgs)
        # Only the one left out was asked for again.
        assert [ln for ln in body_fetch_lines(r.err)] and \
            all(" 2 (" in ln for ln in body_fetch_lines(r.err)), r.err
        r = mp.run("-v")
        assert_ok(r)
        assert body_fetch_lines(r.err) == [], r.err
        assert multiset(mp.messages()) == multiset(msgs)


# ---- a FETCH response without a valid UID --------------------------------------

@pytest.mark.parametrize("uid_item", ["", "UID 0 ", "UID 4294967296 "],
                         ids=["absent", "zero", "too-large"])
def test_body_without_valid_uid_is_warned_exit_76(mp, uid_item):
    msgs = [make_message(i, tag="baduid") for i in range(3)]

    def on_fetch(srv, conn, index, uid, data):
        send_body(conn, index, uid, data, uid_item if uid == 2 else None)
        return True

    with fake_imaps(mp, msgs, on_fetch=on_fetch) as srv:
        mp.configure(fake_account(mp, srv))
        r = mp.run()
        assert r.rc == EX_PROTOCOL, str(r)
        assert "without a valid UID" in r.err, str(r)
        assert "warning:" in r.err, str(r)
        # The other messages are fetched all the same.
        assert multiset(mp.messages()) == multiset([msgs[0], msgs[2]])
        # Not passed over: the next run asks for it again, and says so again.
        r = mp.run()
        assert r.rc == EX_PROTOCOL, str(r)
        assert "without a valid UID" in r.err, str(r)
        assert multiset(mp.messages()) == multiset([msgs[0], msgs[2]])


def test_listing_without_valid_uid_is_warned_exit_76(mp):
    msgs = [make_message(i, tag="badlist") for i in range(3)]
    srv = None

    def uid_cmd(conn, tag, cmd):
        parts = cmd.split(" ")
        if parts[1].upper() == "FETCH" and "INTERNALDATE" in cmd.upper():
            # The listing: message 2 comes without a UID.
            for i, m in enumerate(srv.messages):
                uid = "" if i == 1 else f"UID {i + 1} "
                conn.line(f"* {i + 1} FETCH ({uid}FLAGS () RFC822.SIZE {len(m)} "
                          f'INTERNALDATE "{FakeIMAP.INTERNALDATE}")')
            conn.line(f"{tag} OK UID FETCH completed")
            return True
        srv._uid_command(conn, tag, parts[1].upper(), parts[2:])
        return True

    srv = fake_imaps(mp, msgs, script={"UID": uid_cmd})
    with srv:
        mp.configure(fake_account(mp, srv))
        r = mp.run()
        assert r.rc == EX_PROTOCOL, str(r)
        assert re.search(r"warning:.*1 FETCH response\(s\) without a valid UID", r.err), str(r)
        assert multiset(mp.messages()) == multiset([msgs[0], msgs[2]])
        # Reported on every run, until the server names it.
        r = mp.run()
        assert r.rc == EX_PROTOCOL, str(r)
        assert "without a valid UID" in r.err, str(r)
    with fake_imaps(mp, msgs) as good:
        mp.configure(fake_account(mp, good))
        assert_ok(mp.run())
        assert multiset(mp.messages()) == multiset(msgs)


# ---- folders whose names cannot be used here -------------------------------------

@pytest.mark.parametrize("name,status,shown", [
    (b"L" * 300, EX_IOERR, "LLLLLLLL"),
    (b"Caf&AOk", EX_PROTOCOL, "Caf&AOk"),
    (b"Caf\xe9", EX_PROTOCOL, "Caf"),
], ids=["too-long", "bad-mutf7", "8-bit"])
def test_bad_folder_name_skipped_inbox_fetched(mp, name, status, shown):
    msgs = [make_message(i, tag="badname") for i in range(2)]
    # Listed before INBOX, so a run that stopped there would not reach it.
    with fake_imaps(mp, msgs, extra_folders=[name]) as srv:
        mp.configure(fake_account(mp, srv, folders=["*"]))
        r = mp.run()
        assert r.rc == status, str(r)
        assert multiset(mp.messages()) == multiset(msgs)
        assert re.search(r"warning:.*" + re.escape(shown) + r".*skipped", r.err), str(r)
        # Every run says it again, and fetches nothing twice.
        r = mp.run()
        assert r.rc == status, str(r)
        assert multiset(mp.messages()) == multiset(msgs)


@pytest.mark.parametrize("wire,status", [
    ("Evil&ABs-[31mRed&AA0-X", EX_OK),           # modified UTF-7 for ESC and CR
    ("Evil\x1b[31mRed\rX", EX_PROTOCOL),          # raw: not modified UTF-7 either
], ids=["mutf7", "raw"])
def test_control_characters_in_folder_name_shown_escaped(mp, wire, status):
    """A folder (here one that vanishes before SELECT) whose name holds
    control characters: every message naming it shows them escaped."""
    msgs = [make_message(0, tag="ctl")]
    lit = f"{{{len(wire)}}}\r\n{wire}"
    with fake_imaps(mp, msgs, ghost_folders=[lit]) as srv:
        mp.configure(fake_account(mp, srv, folders=["*"]))
        r = mp.run()
        assert r.rc == status, str(r)
        assert multiset(mp.messages()) == multiset(msgs)
        assert "\x1b" not in r.err and "\r" not in r.err, repr(r.err)
        assert "Evil\\x1b[31mRed\\x0dX" in r.err, repr(r.err)


def test_control_characters_in_dovecot_folder_name_shown_escaped(mp):
    """A real server's folder whose name holds ESC (Dovecot keeps it in
    modified UTF-7 on disk, "&ABs-"): the notice about its too-large message
    and the preview table show the name escaped; its mail is fetched."""
    user = mp.new_user()
    md = mp.dc.ensure_mailbox(user)
    folder = os.path.join(md, ".Evil&ABs-[31mRed")
    small, big = make_message(0, tag="ctlf"), make_message(1, tag="ctlf", size=30000)
    for sub in ("", "cur", "new", "tmp"):
        mp.dc._mkdir_owned(os.path.join(folder, sub))
    for i, data in enumerate((small, big)):
        path = os.path.join(folder, "new", f"1700000000.P1Q{i}.test")
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, mp.dc.uid, mp.dc.gid)
    mp.configure(mp.imap_account(user, folders=["*"], max_size=20000))
    r = mp.run("preview", "t1")
    assert_ok(r)
    assert "\x1b" not in r.out and "Evil\\x1b[31mRed" in r.out, repr(r.out)
    r = mp.run()
    assert_ok(r)
    assert "\x1b" not in r.err, repr(r.err)
    assert re.search(r"t1: Evil\\x1b\[31mRed: message UID \d+ .*over max_size", r.err), repr(r.err)
    got = []
    for top, dirs, files in os.walk(mp.maildir()):
        if os.path.basename(top) in ("new", "cur"):
            for n in files:
                with open(os.path.join(top, n), "rb") as f:
                    got.append(f.read())
    assert got == [small]


# ---- max_size and \Deleted (Dovecot) ---------------------------------------------

def test_max_size_skip_reported_every_run_then_fetched(mp):
    user = mp.new_user()
    small = make_message(0, tag="msz")
    big = make_message(1, tag="msz", size=30000)
    mp.dc.save_messages(user, [small, big])
    big_uid = mp.dc.uids(user)["<msz-1@test>"]
    mp.configure(mp.imap_account(user, max_size=20000))
    for _ in range(2):
        r = mp.run()
        assert_ok(r)
        assert f"message UID {big_uid} " in r.err and "over max_size" in r.err, str(r)
        assert mp.messages() == [small]
    # Nothing new: the skipped UID is asked about by itself, the folder is not listed.
    r = mp.run("-v")
    assert_ok(r)
    fetches = [ln for ln in r.err.splitlines() if ln.startswith("C: ") and "UID FETCH" in ln]
    assert len(fetches) == 1 and f"UID FETCH {big_uid} (UID FLAGS RFC822.SIZE)" in fetches[0], \
        r.err
    r = mp.run("preview", "t1")
    assert_ok(r)
    assert "test message 1" in r.out and "1 message waiting" in r.out, str(r)
    mp.configure(mp.imap_account(user, max_size=100000))
    r = mp.run()
    assert_ok(r)
    assert "max_size" not in r.err
    assert multiset(mp.messages()) == multiset([small, big])
    r = mp.run("-v")
    assert_ok(r)
    assert not [ln for ln in r.err.splitlines() if ln.startswith("C: ") and "FETCH" in ln], r.err


def test_undeleted_message_is_fetched(mp):
    user = mp.new_user()
    msgs = [make_message(i, tag="undel") for i in range(3)]
    mp.dc.save_messages(user, msgs)
    mp.dc.flag_message(user, "<undel-1@test>", "\\Deleted")
    mp.configure(mp.imap_account(user))
    r = mp.run()
    assert_ok(r)
    assert "flagged \\Deleted" in r.err, str(r)
    assert multiset(mp.messages()) == multiset([msgs[0], msgs[2]])
    mp.dc.doveadm("flags", "remove", "-u", user, "\\Deleted", "mailbox", "INBOX",
                  "header", "Message-ID", "<undel-1@test>")
    r = mp.run()
    assert_ok(r)
    assert multiset(mp.messages()) == multiset(msgs)
    r = mp.run()
    assert_ok(r)
    assert multiset(mp.messages()) == multiset(msgs)


def test_expunged_skipped_message_is_forgotten(mp):
    """A skipped message another client expunges is dropped from the state:
    later runs no longer ask about it."""
    user = mp.new_user()
    msgs = [make_message(i, tag="skexp") for i in range(2)]
    mp.dc.save_messages(user, msgs)
    mp.dc.flag_message(user, "<skexp-1@test>", "\\Deleted")
    mp.configure(mp.imap_account(user))
    assert_ok(mp.run())
    mp.dc.expunge_all(user)
    r = mp.run("-v")
    assert_ok(r)
    assert any("UID FETCH" in ln for ln in r.err.splitlines() if ln.startswith("C: ")), r.err
    r = mp.run("-v")
    assert_ok(r)
    assert not [ln for ln in r.err.splitlines() if ln.startswith("C: ") and "FETCH" in ln], r.err
    assert mp.messages() == [msgs[0]]


# ---- public and other users' namespaces (Dovecot with ACLs) ----------------------

@pytest.fixture(scope="module")
def nsdovecot():
    dc = Dovecot(namespaces=True)
    dc.start()
    yield dc
    dc.cleanup()


def selects(trace):
    """{folder: number of SELECT/EXAMINE commands} in a -v trace."""
    out = {}
    for ln in trace.splitlines():
        m = re.match(r'C: \S+ (?:SELECT|EXAMINE) "?([^"]*)"?$', ln)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def test_public_and_shared_namespaces_fetched_once(mailpull_bin, nsdovecot, tmp_path):
    dc = nsdovecot
    mp = MailPull(mailpull_bin, tmp_path, dc)
    owner, me = dc.new_user("own"), dc.new_user("me")
    mine = [make_message(i, tag="mine") for i in range(2)]
    shared = [make_message(i, tag="shared") for i in range(2)]
    public = [make_message(i, tag="public") for i in range(3)]
    dc.save_messages(me, mine)
    dc.save_messages(owner, shared)
    dc.share_mailbox(owner, "INBOX", me)
    team = f"Team{me}"
    dc.create_public_mailbox(team, public)
    shared_name, public_name = f"Shared/{owner}", f"Public/{team}"
    # "*" reaches the namespaces too; namespaces = yes lists them again.
    mp.configure(mp.imap_account(me, folders=["*"], namespaces=True))
    r = mp.run("-v")
    assert_ok(r)
    seen = selects(r.err)
    assert seen.get(shared_name) == 1 and seen.get(public_name) == 1, seen
    assert seen.get("INBOX") == 1, seen
    # Counted once each in the summary: 2 of mine, 2 shared, 3 public.
    assert "7 left on the server" in r.out, str(r)
    assert multiset(mp.messages()) == multiset(mine)
    assert multiset(mp.messages(os.path.join(mp.maildir(), f".Shared.{owner}"))) == \
        multiset(shared)
    assert multiset(mp.messages(os.path.join(mp.maildir(), f".Public.{team}"))) == \
        multiset(public)
    r = mp.run("-v")
    assert_ok(r)
    assert all(n == 1 for n in selects(r.err).values()), r.err
    assert multiset(mp.messages(os.path.join(mp.maildir(), f".Public.{team}"))) == \
        multiset(public)
    assert multiset(mp.messages(os.path.join(mp.maildir(), f".Shared.{owner}"))) == \
        multiset(shared)


# ---- allocation failure on the skipped-UID path ------------------------------------

def test_allocation_failure_while_rechecking_skipped(mp):
    """Each allocation of a run that asks again about skipped UIDs (one
    still too large, one no longer \\Deleted) fails in turn: the run ends
    with exit 75 and "out of memory" or succeeds, and the next run
    completes, with nothing lost or doubled."""
    import shutil
    from conftest import VALGRIND, preload_lib
    if mp.sanitized or VALGRIND:
        pytest.skip("another allocator sits in front of the preloaded one")
    lib = preload_lib(mp, "MAILPULL_FAILMALLOC", "failmalloc.so")
    msgs = [make_message(i, tag="oomskip", size=3000 if i == 1 else None) for i in range(4)]
    flags = [[], [], ["\\Deleted"], []]
    log = mp.path("fm.log")
    with fake_imaps(mp, msgs, flags=flags) as srv:
        mp.configure(fake_account(mp, srv, max_size=1000, folders=["*"]))
        assert_ok(mp.run())
        assert multiset(mp.messages()) == multiset([msgs[0], msgs[3]])
        srv.flags[2] = []
        saved = mp.path("saved")
        for d in ("state", "Maildir"):
            shutil.copytree(mp.path(d), os.path.join(saved, d))

        def restore():
            for d in ("state", "Maildir"):
                shutil.rmtree(mp.path(d))
                shutil.copytree(os.path.join(saved, d), mp.path(d))
            if os.path.exists(log):
                os.unlink(log)

        restore()
        r = mp.run(env={"LD_PRELOAD": lib, "FM_LOG": log, "FM_FAIL_AT": "0"})
        assert_ok(r)
        with open(log) as f:
            total = int(f.read().split()[2])
        assert total > 20
        for n in range(1, total + 1):
            restore()
            r = mp.run(env={"LD_PRELOAD": lib, "FM_LOG": log, "FM_FAIL_AT": str(n)})
            assert r.rc in (EX_OK, EX_TEMPFAIL), f"allocation {n} of {total}:\n{r}"
            if r.rc == EX_TEMPFAIL:
                assert re.search(r"out of memory|Cannot allocate memory", r.err), \
                    f"allocation {n} of {total}:\n{r}"
            r = mp.run()
            assert_ok(r)
            assert multiset(mp.messages()) == multiset([msgs[0], msgs[2], msgs[3]]), \
                f"allocation {n} of {total}"
