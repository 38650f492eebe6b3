"""Faults: the network cut at many byte offsets, and hostile servers.

Every case ends the same way: mailpull exits with a clear error naming the
account and host, nothing is lost, nothing is duplicated, nothing partial is
published, and nothing is deleted on the server before it is durable here.
"""

import collections
import os
import socket
import ssl
import threading
import time

import pytest

from conftest import (EX_OK, EX_TEMPFAIL, EX_PROTOCOL, Raw, make_message, digest,
                      assert_error)
from fakepop3 import FakePOP3, pop3_encode
from fakeimap import FakeIMAP, crlf

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


def account(mp, mode, user, maildir, port=None, **over):
    proto, keep = MODES[mode]
    if proto == "pop3":
        a = mp.pop3_account(user, maildir, keep=keep, timeout=Raw("10s"), **over)
        a["port"] = port or mp.dc.pop3s_port
    else:
        a = mp.imap_account(user, maildir, keep=keep, timeout=Raw("10s"), **over)
        a["port"] = port or mp.dc.imaps_port
    return a


class CutCase:
    def __init__(self, mp, mode, name):
        self.mp = mp
        self.mode = mode
        self.keep = MODES[mode][1]
        self.user = mp.new_user("cut")
        self.msgs = [make_message(i, tag="cut", size=MSG_SIZE) for i in range(NMSG)]
        self.want = collections.Counter(digest(m) for m in self.msgs)
        mp.dc.add_messages(self.user, self.msgs)
        self.maildir = mp.path(name, "Maildir")
        self.state = mp.path(name, "state")
        os.makedirs(mp.path(name))
        self.cfg_proxy = mp.path(name, "proxy.conf")
        self.cfg_direct = mp.path(name, "direct.conf")

    def run(self, port=None):
        cfg = self.cfg_proxy if port else self.cfg_direct
        self.mp.configure({"t1": account(self.mp, self.mode, self.user, self.maildir, port)},
                          path=cfg, state_dir=self.state)
        r = self.mp.start(config=cfg).finish(RUN_TIMEOUT)
        assert not r.timed_out, f"mailpull hung:\n{r}"
        return r

    def local(self):
        c = collections.Counter()
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            for n in (os.listdir(d) if os.path.isdir(d) else []):
                with open(os.path.join(d, n), "rb") as f:
                    c[digest(f.read())] += 1
        return c

    def server(self):
        return collections.Counter(digest(b) for b in self.mp.dc.bodies(self.user))

    def tmp(self):
        d = os.path.join(self.maildir, "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def check_safe(self, when):
        local = self.local()
        assert all(n == 1 for n in local.values()), f"{when}: duplicates {local}"
        assert set(local) <= set(self.want), f"{when}: damaged or foreign files in the Maildir"
        lost = set(self.want) - set(local) - set(self.server())
        assert not lost, f"{when}: {len(lost)} messages neither on the server nor here"

    def check_complete(self, when):
        assert self.local() == self.want, f"{when}: Maildir is not every message once"
        assert self.tmp() == [], f"{when}: left in tmp/: {self.tmp()}"
        srv = self.server()
        if self.keep:
            assert srv == self.want, f"{when}: server lost messages with keep = yes"
        else:
            assert not srv, f"{when}: server not emptied with keep = no"


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
    assert px.cuts == 1, "the proxy did not cut"
    when = f"{mode}: cut after {n} of {total} server bytes"
    # Past the last command's answer the session may already be complete
    # (only LOGOUT's or QUIT's answer and TLS close_notify lost).
    if r.rc == EX_OK:
        assert n > tail[-1], f"{when}: exit 0 though the session was cut early\n{r}"
    else:
        assert_error(r, EX_TEMPFAIL, "t1", mp.dc.host)
    case.check_safe(when)
    r2 = case.run()
    assert r2.rc == EX_OK, f"{when}: the direct rerun failed:\n{r2}"
    case.check_complete(f"{when}, after the rerun")
