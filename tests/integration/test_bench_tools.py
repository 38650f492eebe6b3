"""The bench's helpers (tests/bench/): the delay proxy forwards byte-exact
in both directions and delays, and the raw-wire reference counts what the
server holds, over POP3 and IMAP, on each server. Fast: a few messages.
The helpers are built beside the mailpull binary under test
(BUILDDIR/bench/, `make bench-tools`); without them these tests skip."""

import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import make_message


@pytest.fixture(scope="module")
def tools(mailpull_bin):
    d = os.path.join(os.path.dirname(mailpull_bin), "bench")
    if not all(os.access(os.path.join(d, t), os.X_OK)
               for t in ("delayproxy", "rawwire", "filecreate")):
        pytest.skip(f"no bench helpers in {d} (make bench-tools)")
    return d


class Proxy:
    def __init__(self, tools, target_port, rtt_ms):
        self.proc = subprocess.Popen([os.path.join(tools, "delayproxy"), "0", str(target_port),
                                      str(rtt_ms)], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline().split()[1])

    def stop(self):
        """Stops it; returns its totals {conns, up, down, turns, cpu}."""
        self.proc.terminate()
        out = self.proc.stdout.read().split()
        self.proc.wait(10)
        return {k: float(v) for k, v in zip(out[::2], out[1::2])}


def test_proxy_delays_and_forwards_byte_exact(tools):
    blob = os.urandom(3 << 20)
    srv = socket.create_server(("127.0.0.1", 0))
    got_up = []

    def serve():
        c, _ = srv.accept()
        with c:
            assert c.recv(1) == b"p"
            c.sendall(b"p")                     # one ping-pong
            n, h = 0, hashlib.sha256()
            while n < len(blob):                # the client's upload
                d = c.recv(65536)
                if not d:
                    break
                h.update(d)
                n += len(d)
            got_up.append(h.digest())
            c.sendall(blob)                     # and a download back
            c.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    px = Proxy(tools, srv.getsockname()[1], 200)
    try:
        c = socket.create_connection(("127.0.0.1", px.port))
        t0 = time.monotonic()
        c.sendall(b"p")
        assert c.recv(1) == b"p"
        rtt = time.monotonic() - t0
        c.sendall(blob)
        h, n = hashlib.sha256(), 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            h.update(d)
            n += len(d)
        c.close()
    finally:
        totals = px.stop()
    t.join(10)
    assert rtt >= 0.2          # a round trip costs at least the RTT given
    assert got_up == [hashlib.sha256(blob).digest()]
    assert (n, h.digest()) == (len(blob), hashlib.sha256(blob).digest())
    assert totals["conns"] == 1
    assert totals["up"] == 1 + len(blob) and totals["down"] == 1 + len(blob)


@pytest.mark.servers()
@pytest.mark.parametrize("proto", ["pop3", "imap"])
def test_rawwire_counts_what_the_server_holds(tools, mp, proto):
    dc = mp.dc
    user = mp.new_user()
    msgs = [make_message(i, size=1000 + 700 * i) for i in range(7)]
    msgs.append(b"Subject: dots\n\n.leading dot\n..two\n.\nend\n")
    dc.add_messages(user, msgs)
    # What the server sends: CRLF line ends.
    size = sum(len(m) + m.count(b"\n") for m in msgs)
    port = dc.pop3s_port if proto == "pop3" else dc.imaps_port
    px = Proxy(tools, port, 20)
    try:
        cmd = [os.path.join(tools, "rawwire"), proto, "localhost", str(px.port), user,
               dc.password, dc.ca_file]
        ok = subprocess.run(cmd + [str(len(msgs)), str(size)], capture_output=True,
                            text=True, timeout=60)
        bad = subprocess.run(cmd + [str(len(msgs)), str(size + 1)], capture_output=True,
                             text=True, timeout=60)
    finally:
        totals = px.stop()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split()[:4] == ["messages", str(len(msgs)), "bytes", str(size)]
    assert bad.returncode == 1 and "do not match" in bad.stderr
    assert totals["conns"] == 2 and totals["down"] > 2 * size
    assert dc.count(user) == len(msgs)          # nothing changed on the server


def test_filecreate_makes_the_files(tools, tmp_path):
    sizes = tmp_path / "sizes"
    sizes.write_text("0\n10\n70000\n")
    for opt in ([], ["--fsync"]):
        d = tmp_path / f"md{len(opt)}"
        r = subprocess.run([os.path.join(tools, "filecreate")] + opt + [str(d), str(sizes)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[:4] == ["files", "3", "bytes", "70010"]
        assert sorted(os.path.getsize(d / "new" / f) for f in os.listdir(d / "new")) == \
            [0, 10, 70000]
        assert os.listdir(d / "tmp") == []
