"""Local faults: the disk fills up, fsync reports EIO, the Maildir or the
state directory is read-only, a rename into new/ fails, another program
renames or deletes files in the Maildir.

Every failing run must exit non-zero with an error naming the account, the
path and the cause, delete nothing on the server and publish nothing
partial; the run after the fault is gone must leave every message exactly
once in the Maildir, tmp/ empty, and (keep = no) the server empty.

Faults come from tests/faultinject.c, preloaded into mailpull (see the
variables in its head comment), and, where the machine lets us mount, from
a real tiny tmpfs and a read-only bind mount. Each injected case checks the
library's log, so no test passes without its fault having fired.
"""

import collections
import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import (EX_OK, EX_IOERR, EX_CRASH, Raw, make_message, digest, assert_error,
                      preload_lib)
from fakeimap import FakeIMAP
from mprun import maildir_files

MAX_CRASH_STEPS = 200


# ---- the fault library ---------------------------------------------------

def asan_runtime(binary):
    """The ASan runtime a sanitized binary loads: it must come first in
    LD_PRELOAD, before the fault library."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "libasan" in line and "=>" in line:
            return line.split("=>")[1].split()[0]
    return None


def fault_env(mp, prefix, **settings):
    lib = preload_lib(mp, "MAILPULL_FAULTINJECT", "faultinject.so")
    preload = lib
    if mp.sanitized:
        rt = asan_runtime(mp.bin)
        assert rt, f"{mp.bin} is sanitized but ldd names no libasan"
        preload = f"{rt}:{lib}"
    env = {"LD_PRELOAD": preload, "FI_PREFIX": str(prefix), "FI_LOG": mp.path("faults.log")}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def fault_log(mp):
    try:
        with open(mp.path("faults.log")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def assert_fired(mp, call):
    lines = fault_log(mp)
    assert any(ln.split(" ", 1)[0] == call for ln in lines), \
        f"the {call} fault never fired; injected: {lines}"


# ---- one mailbox, one Maildir ------------------------------------------------

class Box:
    """n messages on the server for a fresh user; a pre-created Maildir (so
    its creation does not meet the fault) and state directory."""

    def __init__(self, mp, proto="pop3", keep=False, n=8, size=20000, maildir=None,
                 state_dir=None, create=True):
        self.mp = mp
        self.proto = proto
        self.keep = keep
        self.user = mp.new_user("lf")
        self.msgs = [make_message(i, tag=self.user, size=size) for i in range(n)]
        self.want = collections.Counter(digest(m) for m in self.msgs)
        mp.dc.add_messages(self.user, self.msgs)
        self.maildir = maildir or mp.maildir()
        self.state_dir = state_dir or mp.state_dir
        if create:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.maildir, sub), exist_ok=True)
            os.makedirs(self.state_dir, exist_ok=True)
        if proto == "pop3":
            acct = mp.pop3_account(self.user, self.maildir, keep=keep)
        else:
            acct = mp.imap_account(self.user, self.maildir, keep=keep)
        mp.configure(acct, state_dir=self.state_dir)

    def run(self, env=None):
        return self.mp.run(env=env)

    def local(self, maildir=None):
        c = collections.Counter()
        for p in maildir_files(maildir or self.maildir):
            with open(p, "rb") as f:
                c[digest(f.read())] += 1
        return c

    def tmp(self):
        d = os.path.join(self.maildir, "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def server_count(self):
        """What Dovecot holds, as it says (doveadm; slow on a loaded machine)."""
        return self.mp.dc.count(self.user)

    def server_files(self):
        """What Dovecot holds, by its message files (fast)."""
        return len(self.mp.dc.message_files(self.user))

    def check_failed(self, r, *needles):
        """The run failed cleanly: error, nothing deleted, nothing partial."""
        assert r.rc != EX_OK, f"the fault went unnoticed\n{r}"
        assert_error(r, EX_IOERR, "t1", *needles)
        assert self.server_count() == len(self.msgs), \
            f"messages deleted on the server after a local failure\n{r}"
        local = self.local()
        bad = set(local) - set(self.want)
        assert not bad, f"{len(bad)} partial or foreign files in new/ or cur/"
        dups = {h: k for h, k in local.items() if k > 1}
        assert not dups, f"duplicates: {dups}"

    def check_complete(self, when="rerun"):
        local = self.local()
        assert local == self.want, \
            f"{when}: {sum(local.values())} files, " \
            f"{len(set(self.want) - set(local))} missing, " \
            f"{sum(k - 1 for k in local.values() if k > 1)} duplicates"
        assert self.tmp() == [], f"{when}: left in tmp/: {self.tmp()}"
        want = len(self.msgs) if self.keep else 0
        assert self.server_files() == want, f"{when}: server holds {self.server_files()}"

    def rerun_complete(self):
        r = self.run()
        assert r.rc == EX_OK, f"the run after the fault failed\n{r}"
        self.check_complete()
        return r


CASES = [("pop3", False), ("imap", False), ("imap", True)]
CASE_IDS = ["pop3-keep-no", "imap-keep-no", "imap-keep-yes"]
LOSSY = [("pop3", False), ("imap", False)]
LOSSY_IDS = ["pop3-keep-no", "imap-keep-no"]


# ---- disk full ---------------------------------------------------------------

@pytest.mark.parametrize("proto,keep", CASES, ids=CASE_IDS)
def test_disk_full_mid_message(mp, proto, keep):
    """One large message: the disk fills up after 100 KB of it."""
    box = Box(mp, proto, keep, n=2, size=400 * 1024)
    r = box.run(fault_env(mp, box.maildir, FI_WRITE_LIMIT=100 * 1024))
    box.check_failed(r, os.path.join(box.maildir, "tmp"), "No space left on device")
    assert_fired(mp, "write")
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_disk_full_mid_batch(mp, proto, keep):
    """150 small messages: the first batch (128) is committed, the disk
    fills up in the second."""
    box = Box(mp, proto, keep, n=150, size=1500)
    total = sum(len(m) for m in box.msgs)
    r = box.run(fault_env(mp, box.maildir, FI_WRITE_LIMIT=total - 10 * 1500))
    box.check_failed(r, box.maildir, "No space left on device")
    assert_fired(mp, "write")
    assert sum(box.local().values()) >= 128, "the first batch was not committed"
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_journal_disk_full(mp, proto, keep):
    """The state directory is full: the journal cannot be written."""
    box = Box(mp, proto, keep)
    r = box.run(fault_env(mp, box.state_dir, FI_WRITE_LIMIT=0))
    box.check_failed(r, "t1.journal", "No space left on device")
    assert_fired(mp, "write")
    box.rerun_complete()


# ---- fsync and syncfs fail ------------------------------------------------------

@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
@pytest.mark.parametrize("call", ["syncfs", "fdatasync"])
def test_message_sync_eio(mp, proto, keep, call):
    """The group commit's syncfs (several messages) or the fdatasync of a
    lone message reports EIO."""
    box = Box(mp, proto, keep, n=6 if call == "syncfs" else 1)
    r = box.run(fault_env(mp, box.maildir, FI_SYNC_FAIL="all", FI_SYNC_CALLS=call))
    box.check_failed(r, box.maildir, "Input/output error")
    assert_fired(mp, call)
    assert box.local() == {}, "published although the sync failed"
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
@pytest.mark.parametrize("which", ["tmp", "new"])
def test_directory_fsync_eio(mp, proto, keep, which):
    """fsync of tmp/ (before the journal) or of new/ (after the renames)
    reports EIO."""
    box = Box(mp, proto, keep)
    nth = 1 if which == "tmp" else 2
    r = box.run(fault_env(mp, box.maildir, FI_SYNC_FAIL=nth, FI_SYNC_CALLS="fsync"))
    box.check_failed(r, os.path.join(box.maildir, which), "Input/output error")
    assert_fired(mp, "fsync")
    assert fault_log(mp)[0].endswith("/" + which), fault_log(mp)
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_new_dir_fsync_keeps_failing(mp, proto, keep):
    """fsync of new/ keeps failing: the messages renamed there by the first
    run are recorded, but not known durable, so the next run, which has
    nothing left to fetch, must sync new/ again (and fail) before it
    deletes anything on the server."""
    box = Box(mp, proto, keep)
    new = os.path.join(box.maildir, "new")
    env = fault_env(mp, new, FI_SYNC_FAIL="all", FI_SYNC_CALLS="fsync")
    for _ in range(2):
        r = box.run(env)
        box.check_failed(r, new, "Input/output error")
    assert_fired(mp, "fsync")
    assert len(fault_log(mp)) == 2, fault_log(mp)
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", CASES, ids=CASE_IDS)
def test_journal_fsync_eio(mp, proto, keep):
    """The journal's fdatasync after the batch's records reports EIO. The
    records may or may not have reached the disk: the tmp files must stay
    for the next start-up to publish or discard, never be removed while
    the journal may name them (or the next run would take the messages as
    fetched and delete them on the server)."""
    box = Box(mp, proto, keep)
    # IMAP journals the folder's UIDVALIDITY first.
    nth = 1 if proto == "pop3" else 2
    r = box.run(fault_env(mp, box.state_dir, FI_SYNC_FAIL=nth, FI_SYNC_CALLS="fdatasync"))
    box.check_failed(r, "t1.journal", "Input/output error")
    assert_fired(mp, "fdatasync")
    assert box.local() == {}, "published although the journal sync failed"
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_snapshot_write_fails(mp, proto, keep):
    """The end-of-run snapshot (NAME.state.new) cannot be created. By then
    every message is durable here and recorded in the journal, so deleting
    on the server was right; the error is still reported, and the next run
    neither fetches again nor loses anything."""
    box = Box(mp, proto, keep)
    # the lock file and the journal are created first
    r = box.run(fault_env(mp, box.state_dir, FI_CREATE_ERRNO="EROFS", FI_CREATE_SKIP=2))
    assert_error(r, EX_IOERR, "t1", "t1.state.new", "Read-only file system")
    assert_fired(mp, "open")
    assert box.local() == box.want, "messages missing after the snapshot failed"
    box.rerun_complete()


# ---- read-only, create and rename failures ---------------------------------------

@pytest.mark.parametrize("proto,keep", CASES, ids=CASE_IDS)
def test_readonly_maildir_injected(mp, proto, keep):
    box = Box(mp, proto, keep)
    r = box.run(fault_env(mp, box.maildir, FI_CREATE_ERRNO="EROFS"))
    box.check_failed(r, os.path.join(box.maildir, "tmp"), "Read-only file system")
    assert_fired(mp, "openat")
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_readonly_state_dir_injected(mp, proto, keep):
    box = Box(mp, proto, keep)
    r = box.run(fault_env(mp, box.state_dir, FI_CREATE_ERRNO="EROFS"))
    box.check_failed(r, box.state_dir, "Read-only file system")
    assert_fired(mp, "open")
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("err,text", [("EIO", "Input/output error"),
                                      ("EROFS", "Read-only file system")])
def test_publish_rename_fails(mp, proto, keep, err, text):
    """The rename from tmp/ into new/ fails after three succeeded: the
    records are durable, so the next start-up publishes the rest."""
    box = Box(mp, proto, keep)
    r = box.run(fault_env(mp, box.maildir, FI_RENAME_ERRNO=err, FI_RENAME_SKIP=3))
    box.check_failed(r, os.path.join(box.maildir, "tmp"), text)
    assert_fired(mp, "renameat")
    assert sum(box.local().values()) == 3
    box.rerun_complete()


# ---- real file systems: a tiny tmpfs and a read-only bind mount -------------------

def _mount(args, what):
    p = subprocess.run(["mount"] + args, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot {what} here (mount {' '.join(args)}: {p.stderr.strip()})")


def _umount(path):
    subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.fixture
def tiny_tmpfs(mp):
    path = mp.path("tiny")
    os.makedirs(path)
    _mount(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", path], "mount a tmpfs")
    yield path
    _umount(path)


@pytest.fixture
def ro_bind(mp):
    mounts = []

    def make(path):
        _mount(["--bind", path, path], "bind-mount")
        mounts.append(path)
        _mount(["-o", "remount,ro,bind", path], "remount read-only")
        return path

    yield make
    for path in reversed(mounts):
        _umount(path)


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_tmpfs_full(mp, tiny_tmpfs, proto, keep):
    """A 1 MiB tmpfs, filled so that only part of the mail fits."""
    box = Box(mp, proto, keep, n=12, size=60 * 1024, maildir=os.path.join(tiny_tmpfs, "Maildir"))
    filler = os.path.join(tiny_tmpfs, "filler")
    with open(filler, "wb") as f:
        try:
            f.write(b"x" * (1024 * 1024 - 300 * 1024))
        except OSError:
            pass
    r = box.run()
    box.check_failed(r, box.maildir, "No space left on device")
    os.unlink(filler)
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", CASES, ids=CASE_IDS)
def test_readonly_maildir_mount(mp, ro_bind, proto, keep):
    box = Box(mp, proto, keep)
    ro_bind(box.maildir)
    r = box.run()
    box.check_failed(r, box.maildir, "Read-only file system")
    _umount(box.maildir)
    box.rerun_complete()


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_readonly_state_dir_mount(mp, ro_bind, proto, keep):
    box = Box(mp, proto, keep)
    ro_bind(box.state_dir)
    r = box.run()
    box.check_failed(r, box.state_dir, "Read-only file system")
    _umount(box.state_dir)
    box.rerun_complete()


# ---- another program in the Maildir --------------------------------------------

def move_to_cur(maildir, flags="S"):
    """What a mail reader does: new/NAME -> cur/NAME:2,FLAGS. Returns how many."""
    n = 0
    new = os.path.join(maildir, "new")
    for name in os.listdir(new):
        try:
            os.rename(os.path.join(new, name), os.path.join(maildir, "cur", f"{name}:2,{flags}"))
            n += 1
        except FileNotFoundError:
            pass
    return n


def reflag_cur(maildir, flags="RS"):
    cur = os.path.join(maildir, "cur")
    for name in os.listdir(cur):
        base = name.split(":", 1)[0]
        os.rename(os.path.join(cur, name), os.path.join(cur, f"{base}:2,{flags}"))


class Mover:
    """A thread that keeps doing action(maildir) until stopped."""

    def __init__(self, maildir, action):
        self.maildir = maildir
        self.action = action
        self.count = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.count += self.action(self.maildir)
            time.sleep(0.0005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(10)


@pytest.mark.parametrize("proto,keep", [("pop3", True), ("imap", True)],
                         ids=["pop3-keep-yes", "imap-keep-yes"])
def test_reader_moves_between_runs(mp, proto, keep):
    """Between runs a reader moves everything to cur/ and changes flags;
    more mail arrives; nothing is fetched twice."""
    box = Box(mp, proto, keep, n=5, size=2000)
    assert box.run().rc == EX_OK
    assert move_to_cur(box.maildir) == 5
    reflag_cur(box.maildir)
    more = [make_message(100 + i, tag=box.user, size=2000) for i in range(3)]
    mp.dc.add_messages(box.user, more)
    box.msgs += more
    box.want.update(digest(m) for m in more)
    r = box.run()
    assert r.rc == EX_OK, str(r)
    assert "error" not in r.err.lower(), str(r)
    box.check_complete()
    assert move_to_cur(box.maildir) == 3
    assert box.run().rc == EX_OK
    box.check_complete("third run")


@pytest.mark.parametrize("proto,keep", LOSSY + [("imap", True)], ids=CASE_IDS)
def test_reader_moves_concurrently(mp, proto, keep):
    """A reader moves every file it sees from new/ to cur/ while 300 small
    messages are fetched."""
    box = Box(mp, proto, keep, n=300, size=600)
    with Mover(box.maildir, move_to_cur) as mover:
        r = box.run()
    assert r.rc == EX_OK, str(r)
    move_to_cur(box.maildir)
    assert mover.count > 0, "the reader never moved anything"
    box.check_complete("concurrent run")
    assert box.run().rc == EX_OK
    box.check_complete("second run")


def crashed_boxes(mp, proto, keep, nmsg=2, size=1200):
    """Box after box, each crashed at the next durable step (1, 2, ...),
    until a run needs fewer steps: that run must complete, and ends it."""
    for n in range(1, MAX_CRASH_STEPS + 1):
        sub = mp.path(f"c{n}")
        box = Box(mp, proto, keep, n=nmsg, size=size, maildir=os.path.join(sub, "Maildir"),
                  state_dir=os.path.join(sub, "state"))
        r = box.run({"MAILPULL_CRASH_AT": str(n)})
        if r.rc == EX_OK:
            box.check_complete(f"MAILPULL_CRASH_AT={n} (no crash)")
            assert n > 3, "MAILPULL_CRASH_AT had no effect"
            return
        assert r.rc == EX_CRASH, f"MAILPULL_CRASH_AT={n}\n{r}"
        yield n, box
        shutil.rmtree(sub)
    pytest.fail(f"still crashing at step {MAX_CRASH_STEPS}")


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_crash_then_reader_moves(mp, proto, keep):
    """Crash at each durable step; before the rerun a reader moves what is
    in new/ to cur/. The rerun neither fetches again nor loses anything."""
    for n, box in crashed_boxes(mp, proto, keep):
        move_to_cur(box.maildir)
        reflag_cur(box.maildir, "RS")
        r = box.run()
        assert r.rc == EX_OK, f"rerun after crash at {n}\n{r}"
        assert "error" not in r.err.lower(), str(r)
        box.check_complete(f"rerun after crash at {n}")


def delete_tmp(maildir):
    n = 0
    d = os.path.join(maildir, "tmp")
    for name in os.listdir(d):
        try:
            os.unlink(os.path.join(d, name))
            n += 1
        except FileNotFoundError:
            pass
    return n


def file_away(maildir, folder):
    """A reader files everything in new/ into another Maildir++ folder,
    keeping the base names, as Maildir readers do."""
    dst = os.path.join(maildir, folder)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(dst, sub), exist_ok=True)
    src = os.path.join(maildir, "new")
    for name in os.listdir(src):
        os.rename(os.path.join(src, name), os.path.join(dst, "cur", name + ":2,S"))


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_crash_then_tmp_cleaned(mp, proto, keep):
    """Crash at each durable step; before the rerun a tmp/ cleaner removes
    mailpull's files there (the Maildir convention lets one remove tmp/
    files older than 36 hours) and a reader files what was delivered into
    another folder. A recorded message removed from tmp/ was never
    delivered: the rerun fetches it again instead of deleting it on the
    server. Nothing filed away is fetched twice."""
    cleaned = forgotten = 0
    for n, box in crashed_boxes(mp, proto, keep, nmsg=3):
        cleaned += delete_tmp(box.maildir)
        file_away(box.maildir, ".Archive")
        r = box.run()
        when = f"rerun after crash at {n}, tmp/ cleaned"
        assert r.rc == EX_OK, f"{when}\n{r}"
        if "will be fetched again" in r.err:
            forgotten += 1
            assert "no file in any folder of " + box.maildir in r.err, str(r)
        local = box.local() + box.local(os.path.join(box.maildir, ".Archive"))
        assert local == box.want, \
            f"{when}: {len(set(box.want) - set(local))} missing, " \
            f"{sum(k - 1 for k in local.values() if k > 1)} duplicates\n{r}"
        assert box.tmp() == [], f"{when}: left in tmp/: {box.tmp()}"
        assert box.server_files() == 0, f"{when}: server holds {box.server_files()}"
    # Proof that the loop met the case it is about.
    assert cleaned > 0, "no crash left a file in tmp/"
    assert forgotten > 0, "no rerun found a recorded message missing"


@pytest.mark.parametrize("proto,keep", LOSSY, ids=LOSSY_IDS)
def test_other_program_deletes_tmp_files(mp, proto, keep):
    """Another program removes mailpull's tmp/ files mid-run: an error is
    fine, a deletion on the server of what is not here is not (in this run
    or the next)."""
    box = Box(mp, proto, keep, n=20, size=20000)
    with Mover(box.maildir, delete_tmp) as deleter:
        r = box.run()
    assert deleter.count > 0, "nothing was deleted from tmp/"
    # Each file removed is a message not delivered: never a success.
    box.check_failed(r, os.path.join(box.maildir, "tmp"), "No such file or directory")
    box.rerun_complete()


def test_folder_gone_between_list_and_select(mp):
    """Only a folder the server refuses to SELECT counts as gone (a warning,
    the other folders still fetched); a local ENOENT, as from a vanished
    tmp/ file, is an error (test above)."""
    msgs = [make_message(i, tag="ghost") for i in range(3)]
    with FakeIMAP(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                  messages=msgs, ghost_folders=["Gone"]) as srv:
        mp.configure({"protocol": Raw("imap"), "host": "127.0.0.1", "port": srv.port,
                      "tls": Raw("implicit"), "tls_ca_file": mp.dc.ca_file, "user": "alice",
                      "password": srv.password, "maildir": mp.maildir(),
                      "folders": ["*"], "timeout": Raw("5s")})
        r = mp.run(timeout=30)
    assert r.rc == EX_OK, str(r)
    assert "Gone" in r.err and "mailpull: error:" not in r.err, str(r)
    assert sorted(digest(m) for m in mp.messages()) == sorted(digest(m) for m in msgs)


# ---- what is synced, and how ------------------------------------------------------

def sync_trace(mp):
    """(call, kind, path) of every sync call FI_SYNC_TRACE logged."""
    out = []
    for ln in fault_log(mp):
        parts = ln.split(" ", 3)
        if parts[0] == "trace" and len(parts) == 4:
            out.append((parts[1], parts[2], parts[3]))
    return out


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_created_directories_synced(mp, proto):
    """A fresh run creates the Maildir and the state directory several
    levels deep: the parent of every directory it creates is fsynced (or
    the new entry could vanish in a crash, taking delivered mail or the
    record of it along), and so is the state directory once the journal
    is created in it."""
    top = mp.path("fresh")
    maildir = os.path.join(top, "a", "b", "Maildir")
    state = os.path.join(top, "s", "t", "state")
    box = Box(mp, proto, keep=False, n=3, maildir=maildir, state_dir=state, create=False)
    r = box.run(fault_env(mp, mp.tmp, FI_SYNC_TRACE=1))
    assert r.rc == EX_OK, str(r)
    box.check_complete("first run")
    synced = {p for call, kind, p in sync_trace(mp) if call == "fsync" and kind == "dir"}
    created = [top, os.path.join(top, "a"), os.path.join(top, "a", "b"), maildir,
               os.path.join(top, "s"), os.path.join(top, "s", "t"), state]
    missing = [os.path.dirname(d) for d in created if os.path.dirname(d) not in synced]
    assert not missing, f"parents never fsynced: {missing}; synced: {sorted(synced)}"
    assert state in synced, f"state directory not fsynced after creating the journal"
    assert maildir in synced, "Maildir root not fsynced after creating tmp/ new/ cur/"


@pytest.mark.parametrize("proto", ["pop3", "imap"])
@pytest.mark.parametrize("errno_name", ["ENOSYS", "EINVAL"])
def test_syncfs_unavailable_falls_back(mp, proto, errno_name):
    """syncfs() missing (ENOSYS) or refused (EINVAL): the batch is made
    durable file by file with fdatasync instead, and the run succeeds."""
    box = Box(mp, proto, keep=False, n=6)
    r = box.run(fault_env(mp, box.maildir, FI_SYNCFS_ERRNO=errno_name, FI_SYNC_TRACE=1))
    assert r.rc == EX_OK, str(r)
    assert_fired(mp, "syncfs")
    box.check_complete("fallback run")
    synced = {os.path.basename(p) for call, kind, p in sync_trace(mp)
              if call == "fdatasync" and kind == "file"}
    names = {os.path.basename(p).split(":")[0] for p in maildir_files(box.maildir)}
    assert names <= synced, f"not fdatasynced: {sorted(names - synced)}"


@pytest.mark.parametrize("proto", ["pop3", "imap"])
@pytest.mark.parametrize("release,grouped", [("5.4.0-150-generic", False), ("4.19.0", False),
                                             ("5.8.0", True), ("6.1.0-18-amd64", True)])
def test_syncfs_only_where_it_reports_errors(mp, proto, release, grouped):
    """syncfs() reports write-back errors only since Linux 5.8: on an
    older kernel (as uname says) each message is fdatasynced instead."""
    box = Box(mp, proto, keep=False, n=6)
    r = box.run(fault_env(mp, mp.tmp, FI_SYNC_TRACE=1, FI_UNAME_RELEASE=release))
    assert r.rc == EX_OK, str(r)
    box.check_complete(f"kernel {release}")
    trace = sync_trace(mp)
    used = bool([t for t in trace if t[0] == "syncfs"])
    assert used == grouped, f"kernel {release}: syncfs {'not ' if grouped else ''}used: {trace}"
    if not grouped:
        synced = {os.path.basename(p) for call, kind, p in trace
                  if call == "fdatasync" and kind == "file"}
        names = {os.path.basename(p).split(":")[0] for p in maildir_files(box.maildir)}
        assert names <= synced, f"not fdatasynced: {sorted(names - synced)}"


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_sync_file_never_syncfs(mp, proto):
    """sync = file: every message is fdatasynced on its own and the whole
    file system is never flushed."""
    box = Box(mp, proto, keep=False, n=6)
    if proto == "pop3":
        acct = mp.pop3_account(box.user, box.maildir, keep=False, sync=Raw("file"))
    else:
        acct = mp.imap_account(box.user, box.maildir, keep=False, sync=Raw("file"))
    mp.configure(acct, state_dir=box.state_dir)
    r = box.run(fault_env(mp, mp.tmp, FI_SYNC_TRACE=1))
    assert r.rc == EX_OK, str(r)
    box.check_complete("sync = file")
    trace = sync_trace(mp)
    assert not [t for t in trace if t[0] == "syncfs"], f"syncfs called: {trace}"
    synced = {os.path.basename(p) for call, kind, p in trace
              if call == "fdatasync" and kind == "file"}
    names = {os.path.basename(p).split(":")[0] for p in maildir_files(box.maildir)}
    assert names <= synced, f"not fdatasynced: {sorted(names - synced)}"


@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_sync_batch_default_uses_syncfs(mp, proto):
    """The default (sync = batch) group-commits with one syncfs: the test
    above would pass for nothing if syncfs were never called anyway."""
    box = Box(mp, proto, keep=False, n=6)
    r = box.run(fault_env(mp, mp.tmp, FI_SYNC_TRACE=1))
    assert r.rc == EX_OK, str(r)
    assert [t for t in sync_trace(mp) if t[0] == "syncfs"], "no syncfs in a batch of 6"
