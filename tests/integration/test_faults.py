"""Faults: the network cut at many byte offsets, and hostile servers.

Every case ends the same way: mailpull exits with a clear error naming the
account and host, nothing is lost, nothing is duplicated, nothing partial is
published, and nothing is deleted on the server before it is durable here.
"""

import collections
import socket
import threading
import time

import pytest

import mprun  # noqa: E402
from conftest import (EX_OK, EX_TEMPFAIL, EX_PROTOCOL, Raw, make_message, digest,
                      assert_error, FetchCase)
from fakepop3 import FakePOP3
from fakeimap import FakeIMAP

RUN_TIMEOUT = 20.0
NMSG = 4
MSG_SIZE = 12000


# ---- a TCP proxy that cuts the connection -----------------------------------

class CutProxy:
    """127.0.0.1 proxy to (host, port). Each connection is closed on both
    sides once `cut` bytes have come from the server (None: never). Records,
    per connection, the server byte count at each client write, and the
    total the server sent."""

    def __init__(self, host, port, cut=None):
        self.upstream = (host, port)
        self.cut = cut
        self.totals = []
        self.timelines = []
        self.cuts = 0
        self._stop = threading.Event()
        self._threads = []

    def __enter__(self):
        self._ls = socket.socket()
        self._ls.bind(("127.0.0.1", 0))
        self._ls.listen(8)
        self._ls.settimeout(0.1)
        self.port = self._ls.getsockname()[1]
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._ls.close()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self._ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, c):
        s = socket.create_connection(self.upstream, timeout=10)
        idx = len(self.totals)
        self.totals.append(0)
        self.timelines.append([])
        done = threading.Event()
        lock = threading.Lock()

        def close_both():
            with lock:
                if done.is_set():
                    return
                done.set()
                for x in (c, s):
                    try:
                        x.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    x.close()

        def up():       # client -> server
            try:
                while not done.is_set():
                    data = c.recv(65536)
                    if not data:
                        break
                    self.timelines[idx].append(self.totals[idx])
                    s.sendall(data)
            except OSError:
                pass
            if not done.is_set():
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        def down():     # server -> client, counted and cut
            try:
                while not done.is_set():
                    data = s.recv(65536)
                    if not data:
                        break
                    if self.cut is not None and self.totals[idx] + len(data) >= self.cut:
                        data = data[:self.cut - self.totals[idx]]
                        c.sendall(data)
                        self.totals[idx] += len(data)
                        self.cuts += 1
                        break
                    c.sendall(data)
                    self.totals[idx] += len(data)
            except OSError:
                pass
            close_both()

        c.settimeout(30)
        s.settimeout(30)
        t = threading.Thread(target=up, daemon=True)
        t.start()
        down()
        t.join(5)


# ---- network cut against the private Dovecot ----------------------------------

MODES = {
    "pop3-keep-no": ("pop3", False),
    "imap-keep-yes": ("imap", True),
    "imap-keep-no": ("imap", False),
}
NCUTS = 12

_calibration = {}


def CutCase(mp, mode, name):
    proto, keep = MODES[mode]
    return FetchCase(mp, proto, keep, name, nmsg=NMSG, size=MSG_SIZE, tag="cut",
                     run_timeout=RUN_TIMEOUT, timeout=Raw("10s"))


def calibrate(mp, mode):
    """One uncut session through the proxy: the server's byte count in all,
    and at each client write."""
    if mode not in _calibration:
        case = CutCase(mp, mode, f"calib-{mode}")
        with CutProxy(mp.dc.host, case_port(mp, mode)) as px:
            r = case.run(px.port)
        assert r.rc == EX_OK, f"uncut session through the proxy failed:\n{r}"
        case.check_complete("uncut session")
        assert len(px.totals) == 1, px.totals
        _calibration[mode] = (px.totals[0], px.timelines[0])
    return _calibration[mode]


def case_port(mp, mode):
    return mp.dc.pop3s_port if MODES[mode][0] == "pop3" else mp.dc.imaps_port


def cut_offsets(total, timeline):
    """NCUTS offsets: inside the TLS handshake, login, spread over the message
    bodies, and around the last commands (DELE / STORE + EXPUNGE / QUIT)."""
    offs = {200, 3000}
    for f in (0.15, 0.3, 0.45, 0.6, 0.75, 0.9):
        offs.add(int(total * f))
    # The server's byte count when the client sent its last commands: cut
    # just before and just after the answers to them start.
    tail = sorted(set(timeline))[-3:]
    for t in tail:
        offs.add(t + 1)
    offs.add(tail[-1] + 30)
    offs = sorted(o for o in offs if 0 < o < total)
    return offs[:NCUTS], tail


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("k", range(NCUTS))
def test_network_cut(mp, mode, k):
    total, timeline = calibrate(mp, mode)
    offs, tail = cut_offsets(total, timeline)
    if k >= len(offs):
        pytest.skip("fewer distinct offsets in this session")
    n = offs[k]
    case = CutCase(mp, mode, f"cut{n}")
    with CutProxy(mp.dc.host, case_port(mp, mode), cut=n) as px:
        r = case.run(px.port)
    when = f"{mode}: cut after {n} of {total} server bytes"
    # The server's last bytes (its answer to LOGOUT or QUIT, TLS close_notify)
    # may not come at all when mailpull closes first, so an offset among the
    # last commands may find nothing left to cut: then the run must be whole.
    if px.cuts == 0:
        assert n > tail[0], f"{when}: the proxy did not cut"
        assert r.rc == EX_OK, f"{when}: not cut, yet the run failed\n{r}"
        case.check_complete(f"{when} (the server's last bytes never came)")
        return
    # Success after a cut is a claim that the job is done: every message
    # here once, and the server as `keep` says. Only a cut past the last
    # needed answer (LOGOUT's, or TLS close_notify) can leave that true.
    if r.rc == EX_OK:
        case.check_complete(f"{when}: exit 0 after the cut")
        return
    assert_error(r, EX_TEMPFAIL, "t1", mp.dc.host)
    case.check_safe(when)
    r2 = case.run()
    assert r2.rc == EX_OK, f"{when}: the direct rerun failed:\n{r2}"
    case.check_complete(f"{when}, after the rerun")


# ---- hostile fake servers ---------------------------------------------------

FAKE_MSGS = [make_message(i, tag="fake", size=3000) for i in range(3)]
WANT = collections.Counter(digest(m) for m in FAKE_MSGS)


def fake_pop3(mp, **kw):
    kw.setdefault("messages", FAKE_MSGS)
    return FakePOP3(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                    capa=["USER", "UIDL", "TOP", "PIPELINING"], **kw)


def fake_imap(mp, **kw):
    kw.setdefault("messages", FAKE_MSGS)
    return FakeIMAP(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key, **kw)


def fake_account(mp, srv, proto, **over):
    a = {
        "protocol": Raw(proto),
        "host": "127.0.0.1",
        "port": srv.port,
        "tls": Raw("implicit"),
        "tls_ca_file": mp.dc.ca_file,
        "user": "alice",
        "password": srv.password,
        "maildir": mp.maildir(),
        "keep": proto == "imap",
        "timeout": Raw("5s"),
    }
    a.update(over)
    return a


def run_fake(mp, srv, proto, limit=RUN_TIMEOUT, **over):
    mp.configure(fake_account(mp, srv, proto, **over))
    r = mp.start().finish(limit)
    assert not r.timed_out, f"mailpull hung:\n{r}"
    print(f"exit {r.rc} in {r.elapsed:.1f} s; stderr: {r.stderr!r}")   # shown with -s
    assert_no_crash(r)
    return r


def assert_no_crash(r):
    assert r.signal == 0 and r.rc >= 0, f"mailpull died:\n{r}"
    assert r.rc in (EX_OK, 64, 74, EX_TEMPFAIL, EX_PROTOCOL, 77, 78), f"odd exit status:\n{r}"
    for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "Assertion"):
        assert bad not in r.err, f"{bad}:\n{r}"


def local(mp):
    return collections.Counter(digest(m) for m in mp.messages())


def assert_whole(mp):
    """Every published file is a whole message, once; tmp/ is empty."""
    got = local(mp)
    assert set(got) <= set(WANT), "a partial or damaged message was published"
    assert all(n == 1 for n in got.values()), f"duplicates: {got}"
    assert mp.tmp_files() == [], f"left in tmp/: {mp.tmp_files()}"
    return got


def test_pop3_duplicate_uidl(mp):
    with fake_pop3(mp, uids=["same", "other", "same"]) as srv:
        r = run_fake(mp, srv, "pop3")
    assert_error(r, EX_PROTOCOL, "t1", "127.0.0.1")
    assert "DELE" not in srv.verbs(), srv.commands
    assert len(srv.messages) == 3
    assert_whole(mp)


def test_pop3_list_size_differs_from_retr(mp):
    """LIST says one size, RETR brings another: stored as received."""
    sizes = [10, 10 ** 6, len(FAKE_MSGS[2]) + 7]
    with fake_pop3(mp, list_sizes=sizes) as srv:
        r = run_fake(mp, srv, "pop3")
    assert r.rc == EX_OK, str(r)
    assert assert_whole(mp) == WANT
    assert srv.messages == [], "delivered messages were not deleted (keep = no)"


def test_pop3_close_mid_message(mp):
    def retr(c, i, payload):
        if i == 1:
            c.send(payload[:len(payload) // 2])
            return False
        c.send(payload)
    with fake_pop3(mp, on_retr=retr) as srv:
        r = run_fake(mp, srv, "pop3")
    assert_error(r, EX_TEMPFAIL, "t1", "127.0.0.1")
    assert "DELE" not in srv.verbs(), srv.commands
    assert len(srv.messages) == 3
    assert digest(FAKE_MSGS[1]) not in assert_whole(mp)


def test_pop3_dele_ok_but_kept(mp):
    """The server says +OK to DELE and keeps the message: the next runs
    fetch nothing twice."""
    with fake_pop3(mp, dele_keeps=True) as srv:
        r1 = run_fake(mp, srv, "pop3")
        assert r1.rc == EX_OK, str(r1)
        first_retr = srv.verbs().count("RETR")
        r2 = run_fake(mp, srv, "pop3")
        r3 = run_fake(mp, srv, "pop3")
    assert first_retr == 3
    assert r2.rc == EX_OK and r3.rc == EX_OK, f"{r2}\n{r3}"
    assert srv.verbs().count("RETR") == 3, "a message was fetched again"
    assert assert_whole(mp) == WANT
    # mailpull asks again to delete what the server still lists.
    assert srv.verbs().count("DELE") >= 6, srv.verbs()


def test_pop3_trickling_body_times_out(mp):
    """One byte a second during a body, timeout = 3s: mailpull gives up in
    bounded time, whatever the per-read progress."""
    def retr(c, i, payload):
        if i == 0:
            c.send(payload)
            return
        c.send(payload[:200])
        for b in payload[200:240]:
            time.sleep(1)
            c.send(bytes([b]))
        return False
    with fake_pop3(mp, on_retr=retr) as srv:
        t0 = time.monotonic()
        r = run_fake(mp, srv, "pop3", limit=30, keep=True, timeout=Raw("3s"))
        elapsed = time.monotonic() - t0
    assert_error(r, EX_TEMPFAIL, "t1", "127.0.0.1")
    # A minimum transfer rate, not only a per-read timeout.
    assert "slower than" in r.err or "timed out" in r.err, str(r)
    assert elapsed < 12 * mprun.TIME_SCALE, f"gave up only after {elapsed:.1f} s"
    assert digest(FAKE_MSGS[1]) not in assert_whole(mp)


SPOOF = "\x1b[2J\x1b]0;owned\x07\x1b[31m[ALERT] mailpull: error: SPOOFED\r" \
        "mailpull: error: SPOOFED2\x08\x08\x9b31m"


def assert_escaped(r):
    raw = r.stderr
    for c in (b"\x1b", b"\x07", b"\x08", b"\r", b"\x9b", b"\xc2\x9b"):
        assert c not in raw, f"raw {c!r} reached stderr:\n{raw!r}"
    assert b"SPOOFED" in raw, f"the server text was not shown at all:\n{raw!r}"
    assert b"\\x1b" in raw or b"\\033" in raw or b"\\e" in raw, raw
    for line in raw.split(b"\n"):
        if line.startswith(b"mailpull:"):
            assert line.startswith(b"mailpull: error: account t1"), \
                f"a line that looks like mailpull's own came from the server: {line!r}"


def test_pop3_escape_sequences_in_server_text(mp):
    def retr(c, i, payload):
        c.send(b"-ERR " + SPOOF.encode("latin-1") + b"\r\n")
    with fake_pop3(mp, greeting="+OK " + SPOOF, on_retr=retr) as srv:
        r = run_fake(mp, srv, "pop3")
    assert r.rc != EX_OK, str(r)
    assert_escaped(r)
    assert "DELE" not in srv.verbs()


def test_imap_alert_with_escape_sequences(mp):
    """An [ALERT] full of escape sequences, in the greeting and mid-fetch (no
    bare CR: an IMAP line with one is refused outright)."""
    spoof = SPOOF.replace("\r", " ")

    def fetch(srv, c, i, uid, data):
        c.send(b"* OK [ALERT] " + spoof.encode("latin-1") + b"\r\n")
        c.send(f"* {i + 1} FETCH (UID {uid} BODY[] {{{len(data)}}}\r\n".encode() + data + b")\r\n")
    with fake_imap(mp, greeting="* OK [ALERT] " + spoof, on_fetch=fetch) as srv:
        r = run_fake(mp, srv, "imap")
    assert_no_crash(r)
    if r.rc == EX_OK:
        assert assert_whole(mp) == WANT
    # Whether shown or not, nothing raw and nothing posing as mailpull.
    raw = r.stderr
    assert b"\x1b" not in raw and b"\r" not in raw and b"\x07" not in raw, raw
    for line in raw.split(b"\n"):
        if line.startswith(b"mailpull:"):
            assert not line.startswith(b"mailpull: error: SPOOFED"), raw
            assert b"SPOOFED" not in line or line.startswith(b"mailpull: "), raw


def test_imap_unsolicited_expunge_mid_fetch(mp):
    """Another client expunges message 1 while message 2 is being fetched."""
    def fetch(srv, c, i, uid, data):
        if uid == 2 and 1 in srv.uids:
            with srv.lock:
                j = srv.uids.index(1)
                del srv.uids[j], srv.messages[j], srv.flags[j]
            c.send(f"* {j + 1} EXPUNGE\r\n".encode())
        seq = srv.uids.index(uid) + 1
        c.send(f"* {seq} FETCH (UID {uid} BODY[] {{{len(data)}}}\r\n".encode() + data + b")\r\n")
    with fake_imap(mp, on_fetch=fetch) as srv:
        r1 = run_fake(mp, srv, "imap")
        r2 = run_fake(mp, srv, "imap")
    assert r1.rc == EX_OK, str(r1)
    assert r2.rc == EX_OK, str(r2)
    assert assert_whole(mp) == WANT


# A BODY[] literal is streamed to disk, so its size matters only against the
# per-message cap: 2^32 + 1 bytes is over the 1 GiB one, refused before a byte
# of it is read (a protocol error); a literal cut short by the server closing
# is a network error.
@pytest.mark.parametrize("literal", ["{-5}", "{99999999999999999999}", "{4294967297}",
                                     "{12x}", "cut"])
def test_imap_bad_literal(mp, literal):
    def fetch(srv, c, i, uid, data):
        if uid != 2:
            c.send(f"* {i + 1} FETCH (UID {uid} BODY[] {{{len(data)}}}\r\n".encode()
                   + data + b")\r\n")
            return
        if literal == "cut":
            c.send(f"* {i + 1} FETCH (UID {uid} BODY[] {{{len(data)}}}\r\n".encode()
                   + data[:len(data) // 2])
        else:
            c.send(f"* {i + 1} FETCH (UID {uid} BODY[] {literal}\r\n".encode() + data[:100])
        return False
    with fake_imap(mp, on_fetch=fetch) as srv:
        r = run_fake(mp, srv, "imap", keep=False)
    want = EX_TEMPFAIL if literal == "cut" else EX_PROTOCOL
    assert_error(r, want, "t1", "127.0.0.1")
    if literal == "{4294967297}":
        assert "1 GiB" in r.err, str(r)
    assert digest(FAKE_MSGS[1]) not in assert_whole(mp)
    assert "UID EXPUNGE" not in srv.verbs() or len(srv.messages) >= 2


@pytest.mark.parametrize("proto", ["pop3", "imap"])
@pytest.mark.parametrize("where", ["greeting", "response", "utf8-only"])
def test_nul_and_invalid_utf8(mp, proto, where):
    junk = b"\x00hidden\xff\xfe\xc3(\xed\xa0\x80"
    if where == "utf8-only":
        junk = junk[1:]
    kw = {}
    if where == "greeting":
        kw["greeting"] = (b"+OK ready " if proto == "pop3" else b"* OK ready ") + junk
    elif proto == "pop3":
        kw["on_retr"] = lambda c, i, payload: c.send(b"-ERR no " + junk + b"\r\n")
    else:
        def fetch(srv, c, i, uid, data):
            c.send(f"* {i + 1} FETCH (UID {uid} BODY[] \"".encode() + junk + b"\")\r\n")
        kw["on_fetch"] = fetch
    srv = (fake_pop3 if proto == "pop3" else fake_imap)(mp, **kw)
    with srv:
        r = run_fake(mp, srv, proto)
    assert b"\x00" not in r.stderr and b"\xff" not in r.stderr, r.stderr
    if proto == "imap" and where == "utf8-only":
        # BODY[] "..." is a legal 8-bit quoted string: that is the message.
        assert r.rc == EX_OK, str(r)
        assert mp.messages() == [junk] * 3
        return
    assert_error(r, EX_PROTOCOL, "t1", "127.0.0.1")
    assert "DELE" not in srv.verbs()
    assert_whole(mp)
