"""mailpull against its peers and the physical limits, on Dovecot and Cyrus, at several round-trip times.

    python3 tests/bench.py BUILD/mailpull [--tools DIR] [--server dovecot|cyrus|all]
                                          [--proto pop3|imap|send|all] [--rtt 0,20,100]
                                          [--rounds 3] [--rounds-slow 2] [--count 5000] [--large]
                                          [--poll] [--poll-count 100000] [--poll-rounds 3]
                                          [--send-count 1000] [--cache DIR]
                                          [--mpop mpop] [--mbsync mbsync] [--msmtp msmtp]

A condition is a server (the private Dovecot, tests/dovecot.py; the private
Cyrus 3.6, tests/cyrus.py), a protocol (POP3S, IMAPS: implicit TLS) and a
round-trip time. This kernel has no sch_netem, so every run goes through a
fresh delay proxy (DIR/delayproxy, tests/bench/delayproxy.c) that forwards
each chunk RTT/2 later each way and counts the bytes and turns. In each
condition, round after round (interleaved, because file I/O timings on
these machines swing by 3x between identical runs):
  mailpull  POP3: keep = no, a fresh Maildir; IMAP: keep = yes, folders INBOX
  peer      POP3: mpop (keep off, delivery maildir, tls on, tls_trust_file
            the test CA, pipelining auto); IMAP: isync's mbsync (IMAPS, the
            test CA as CertificateFile, a MaildirStore, a Channel pulling
            INBOX only: Sync Pull, Create Near, Expunge None)
  raw       DIR/rawwire: one connection, every message moved with maximal
            pipelining and discarded, bytes checked (the wire's limit)
  files     DIR/filecreate: the same sizes created in tmp/, renamed into
            new/, then one syncfs (and, for information, with an fsync each)
Limit = max(raw, files); the tables give medians, peer/mailpull (goal
>= 1.5), mailpull/limit (goal <= 1.25) and peak RSS. Rounds above 100 ms:
--rounds-slow. A pristine mailbox of COUNT ~4 KiB messages (plus 5 x 20 MiB
with --large) is built once under the cache directory; for Dovecot it is
restored before every run with hard links (`cp -al`) into a fresh user,
without index files, and indexed by doveadm outside the timing; Cyrus gets
it once by MULTIAPPEND into a folder "Pristine" and, before every run that
needs it, a fresh INBOX by one COPY. After each run, outside the timing,
every message must have arrived once, byte for byte, and the server must
still hold every message (IMAP, raw) or none (POP3).

--poll (make bench): a POLL_COUNT-message pristine set (built once, cached)
restored into Dovecot and fetched once by mailpull over IMAP (keep = yes),
then mailpull again at each RTT with nothing new: its time, the proxy's
turns (about the round trips) and bytes each way; then a POP3 fetch of as
many, for peak RSS at that size.

Wall time is measured here; CPU (user + system) is wait4()'s of GNU time
with its reaped child; peak RSS is GNU time's report of the child alone.

Sending (--proto send, or all): SEND_COUNT (default 1000) ~2 KiB messages
from one Dovecot user to another through a private Postfix
(tests/postfix.py: its submission port, STARTTLS, AUTH by the Dovecot; the
implicit TLS port would add Postfix's own ~40 ms per connection: its
greeting follows its last handshake record and waits, by Nagle, for the
client's delayed ACK). msmtp the way its users run it, one process per
message (`msmtp -C RC -a bench -t` with the message on standard input; tls
on, tls_starttls on, tls_trust_file the test CA); mailpull queues each with its own `mailpull -c CONF sendmail -t`
(one process per message, timed as "queue") and then submits them all in
one `mailpull -q -c CONF send` (timed as "send"; save_sent = no, as msmtp
keeps no copy; the local maildir/.Sent copy is made). Postfix puts what
it accepts on hold during the timing (an end-of-data HOLD), so no delivery
work competes with the client for the CPU; afterwards it is released into
the Dovecot and, outside the timing, every message must have arrived once, byte
for byte below the trace fields, and mailpull's outbox must be empty. CPU
is the sum of wait4()'s over the client processes; no RSS is taken there.
"""

import argparse
import collections
import hashlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cyrus as cyrus_mod  # noqa: E402
from dovecot import Dovecot, ensure_mail_user  # noqa: E402
import mprun  # noqa: E402
import postfix as postfix_mod  # noqa: E402

LARGE_COUNT = 5
LARGE_SIZE = 20 * 1024 * 1024
SMALL_SIZE = 4096
SEND_SIZE = 2048


def log(msg):
    print(msg, flush=True)


# ---- the pristine mailbox ----------------------------------------------------

def small_message(i):
    head = (f"From: Sender {i % 97} <sender{i % 97}@example.org>\n"
            f"To: bench@example.org\n"
            f"Subject: bench message {i}\n"
            f"Date: Tue, 25 Nov 2025 10:{i % 60:02d}:00 +0000\n"
            f"Message-ID: <bench-{i}@example.org>\n\n").encode()
    line = f"{i:08d} the quick brown fox jumps over the lazy dog 0123456789 .,;:\n".encode()
    body = (line * (SMALL_SIZE // len(line) + 1))[: SMALL_SIZE - len(head)]
    body = body[: body.rfind(b"\n") + 1]
    return head + body


def large_message(i):
    head = (f"From: Big <big@example.org>\nSubject: large message {i}\n"
            f"Message-ID: <bench-large-{i}@example.org>\n\n").encode()
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4\n"
    body = line * ((LARGE_SIZE - len(head)) // len(line))
    return head + body


def write_pristine_file(cur, name_base, data, uid, gid):
    # ,S= and ,W= (size with CRLF) let Dovecot answer LIST without reading.
    vsize = len(data) + data.count(b"\n")
    name = f"{name_base},S={len(data)},W={vsize}:2,"
    path = os.path.join(cur, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, 0o600)


def build_pristine(cache, count, large):
    """CACHE/pristine-COUNT[-large]/{cur,new,tmp}, built once."""
    name = f"pristine-{count}" + ("-large" if large else "")
    top = os.path.join(cache, name)
    if os.path.exists(os.path.join(top, "complete")):
        return top
    pw = ensure_mail_user()
    shutil.rmtree(top, ignore_errors=True)
    if large:
        small = build_pristine(cache, count, False)
        subprocess.run(["cp", "-al", small, top], check=True, timeout=600)
        os.unlink(os.path.join(top, "complete"))
        cur = os.path.join(top, "cur")
        log(f"adding {LARGE_COUNT} x {LARGE_SIZE >> 20} MiB messages to {top}")
        for i in range(LARGE_COUNT):
            write_pristine_file(cur, f"1700000000.L{i}P1.bench", large_message(i),
                                pw.pw_uid, pw.pw_gid)
    else:
        log(f"building {count} messages in {top} (once)")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(top, sub))
        cur = os.path.join(top, "cur")
        t0 = time.monotonic()
        for i in range(count):
            write_pristine_file(cur, f"1700000000.M{i}P1.bench", small_message(i),
                                pw.pw_uid, pw.pw_gid)
        log(f"  {time.monotonic() - t0:.1f} s")
    for d in (top, os.path.join(top, "cur"), os.path.join(top, "new"),
              os.path.join(top, "tmp")):
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o700)
    open(os.path.join(top, "complete"), "w").close()
    return top


def restore(dc, pristine, user, expect):
    """A fresh Dovecot user whose INBOX is the pristine set, already indexed."""
    home = os.path.join(dc.maildir_root, user)
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    os.chown(home, dc.uid, dc.gid)
    md = dc.user_maildir(user)
    subprocess.run(["cp", "-al", pristine, md], check=True, timeout=600)
    try:
        os.unlink(os.path.join(md, "complete"))
    except FileNotFoundError:
        pass
    dc.clear_indexes(user)
    n = dc.count(user)
    if n != expect:
        raise RuntimeError(f"restored mailbox of {user} holds {n} messages, not {expect}")


def count_maildir(md):
    return len(mprun.maildir_files(md))


def digests(paths, strip_tuid=False):
    """Counter of content hashes; strip_tuid drops the X-TUID header line
    mbsync adds to every message it stores (its own bookkeeping)."""
    c = collections.Counter()
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        if strip_tuid:
            head, sep, body = data.partition(b"\n\n")
            head = re.sub(rb"(?m)^X-TUID: [^\n]*\n?", b"", head + b"\n", count=1)[:-1]
            data = head + sep + body
        c[hashlib.sha256(data).hexdigest()] += 1
    return c


def pristine_digests(pristine):
    return digests(mprun.maildir_files(pristine))


# ---- the wire ------------------------------------------------------------------

class Wire:
    """A delay proxy (tests/bench/delayproxy.c) in front of one server port
    for one run: the client connects to self.port; stop() returns what
    crossed it {conns, up, down, turns, cpu} (bytes up = client to server)."""

    def __init__(self, tools, target_port, rtt_ms):
        self.proc = subprocess.Popen([os.path.join(tools, "delayproxy"), "-6", "0",
                                      str(target_port), str(rtt_ms)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "port":
            self.proc.kill()
            raise RuntimeError(f"delayproxy did not start: {line!r}")
        self.port = int(line[1])

    def stop(self):
        self.proc.terminate()
        out = self.proc.stdout.read().split()
        self.proc.wait(30)
        return {k: float(v) for k, v in zip(out[::2], out[1::2])}


def check_proxy(args):
    """The proxy itself, before anything else: a ping-pong through it must
    cost the RTT, and a bulk transfer (32 MiB from a local server) must not
    be slowed beyond the delay and the 4 MiB window. Returns whether every
    ping-pong cost at least the RTT."""
    blob = os.urandom(32 << 20)
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(60)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                if c.recv(1) == b"p":
                    while c.recv(1) == b"p":
                        c.sendall(b"p")
                else:
                    c.sendall(blob)

    threading.Thread(target=serve, daemon=True).start()

    def bulk(port):
        c = socket.create_connection(("127.0.0.1", port))
        t0 = time.monotonic()
        c.sendall(b"b")
        n = 0
        while n < len(blob):
            d = c.recv(1 << 16)
            if not d:
                break
            n += len(d)
        c.close()
        return time.monotonic() - t0, n

    direct, _ = bulk(srv.getsockname()[1])
    ok = True
    for rtt in args.rtts:
        wire = Wire(args.tools, srv.getsockname()[1], rtt)
        try:
            c = socket.create_connection(("127.0.0.1", wire.port))
            c.sendall(b"p")
            times = []
            for _ in range(10):
                t0 = time.monotonic()
                c.sendall(b"p")
                c.recv(1)
                times.append(time.monotonic() - t0)
            c.close()
            dt, n = bulk(wire.port)
        finally:
            w = wire.stop()
        pp = median(times) * 1000
        ok = ok and min(times) * 1000 >= rtt and n == len(blob)
        log(f"proxy at {rtt:3d} ms: ping-pong {pp:7.2f} ms; 32 MiB in {dt:.3f} s "
            f"(direct {direct:.3f} s, so the delay + window cost {dt - direct:+.3f} s); "
            f"proxy cpu {w['cpu']:.2f} s")
    srv.close()
    return ok


# ---- the servers ---------------------------------------------------------------

class DovecotSide:
    """Every run gets a fresh user restored from the pristine set."""

    label = "Dovecot"

    def __init__(self, dc, pristine, expect):
        self.srv, self.pristine, self.expect = dc, pristine, expect
        self.seq = 0

    def prepare(self):
        self.seq += 1
        user = f"bench{self.seq}"
        restore(self.srv, self.pristine, user, self.expect)
        return user

    def done(self, user):
        shutil.rmtree(os.path.join(self.srv.maildir_root, user), ignore_errors=True)

    def count(self, user):
        return self.srv.count(user)


class CyrusSide:
    """The pristine set is appended once (MULTIAPPEND, outside every timing)
    into a folder "Pristine" of one user; before a run whose INBOX is not
    whole (POP3 empties it), INBOX is emptied and filled again by one COPY
    from there (Cyrus links the files: about a second for 5 000)."""

    label = "Cyrus"
    user = "benchcyrus"

    def __init__(self, cy, pristine, expect):
        self.srv, self.expect = cy, expect
        cy.ensure_user(self.user)
        cy.create_mailbox(self.user, "Pristine")
        t0 = time.monotonic()
        cy.add_message_files(self.user, mprun.maildir_files(pristine), "Pristine")
        n = cy.count(self.user, "Pristine")
        if n != expect:
            raise RuntimeError(f"Cyrus's Pristine folder holds {n} messages, not {expect}")
        log(f"Cyrus: {expect} messages appended in {time.monotonic() - t0:.1f} s (once)")

    def prepare(self):
        n = self.srv.count(self.user)
        if n != self.expect:
            if n:
                self.srv.expunge_all(self.user)
            self.srv.copy_all(self.user, "Pristine", "INBOX")
            n = self.srv.count(self.user)
            if n != self.expect:
                raise RuntimeError(f"Cyrus INBOX holds {n} messages, not {self.expect}")
        return self.user

    def done(self, user):
        pass

    def count(self, user):
        return self.srv.count(user)


# ---- the contenders ----------------------------------------------------------

def client_env(work):
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work,
            "XDG_STATE_HOME": os.path.join(work, "xdg-state")}


def run_mailpull(args, srv, user, work, port, proto, keep=None, md=None, state=None):
    md = md or os.path.join(work, "Maildir")
    cfg = os.path.join(work, "mailpull.conf")
    if proto == "pop3":
        acct = mprun.dovecot_pop3_account(srv, user, md, keep=bool(keep), port=port,
                                          timeout=mprun.Raw("300s"))
    else:
        acct = mprun.dovecot_imap_account(srv, user, md, keep=keep is not False,
                                          folders=["INBOX"], port=port,
                                          timeout=mprun.Raw("300s"))
    mprun.write_config(cfg, {"bench": acct}, state_dir=state or os.path.join(work, "state"))
    r = mprun.run([args.binary, "-q", "-c", cfg], timeout=args.timeout, env=client_env(work),
                  measure_rss=True)
    return r, md


def write_rc(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def run_mpop(args, srv, user, work, port, proto):
    md = os.path.join(work, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    rc = os.path.join(work, "mpoprc")
    write_rc(rc, f"""defaults
tls on
tls_starttls off
tls_trust_file {srv.ca_file}
pipelining auto
keep off
received_header off
timeout 300

account bench
host {srv.host}
port {port}
user {user}
password {srv.password}
auth user
delivery maildir {md}
uidls_file {os.path.join(work, "uidls")}
""")
    r = mprun.run([args.mpop, "-q", "-C", rc, "bench"], timeout=args.timeout,
                  env=client_env(work), measure_rss=True)
    return r, md


def run_mbsync(args, srv, user, work, port, proto):
    """isync's mbsync pulling INBOX into a Maildir, leaving the server alone."""
    md = os.path.join(work, "Maildir")
    os.makedirs(os.path.join(work, "mbsync-folders"), exist_ok=True)
    rc = os.path.join(work, "mbsyncrc")
    # mbsync matches only DNS names of the certificate, not its IP addresses.
    write_rc(rc, f"""IMAPAccount bench
Host localhost
Port {port}
User {user}
Pass {srv.password}
SSLType IMAPS
SSLVersions TLSv1.2 TLSv1.3
CertificateFile {srv.ca_file}
Timeout 300

IMAPStore bench-remote
Account bench

MaildirStore bench-local
Path {work}/mbsync-folders/
Inbox {md}

Channel bench
Far :bench-remote:
Near :bench-local:
Patterns INBOX
Sync Pull
Create Near
Remove None
Expunge None
SyncState *
""")
    r = mprun.run([args.mbsync, "-q", "-c", rc, "bench"], timeout=args.timeout,
                  env=client_env(work), measure_rss=True)
    return r, md


def run_raw(args, srv, user, work, port, proto):
    """The raw-wire reference: rawwire checks the count and bytes itself."""
    r = mprun.run([os.path.join(args.tools, "rawwire"), proto, "localhost", str(port), user,
                   srv.password, srv.ca_file, str(args.expect), str(args.wire_bytes)],
                  timeout=args.timeout, measure_rss=True)
    return r, None


def run_files(args, work, fsync):
    """The file-creation reference: its own timing (create + one syncfs)."""
    d = os.path.join(work, "files")
    r = mprun.run([os.path.join(args.tools, "filecreate")] + (["--fsync"] if fsync else [])
                  + [d, args.sizes_file], timeout=args.timeout)
    shutil.rmtree(d, ignore_errors=True)
    if r.rc == 0:
        f = r.out.split()
        r.elapsed = float(f[f.index("total") + 1])
    return r


PEERS = {"pop3": ("mpop", run_mpop), "imap": ("mbsync", run_mbsync)}


def one_fetch_run(args, side, proto, name, rtt, work, want):
    """One timed run of a client (or raw) through a fresh proxy; checks
    what it did outside the timing. Returns a result dict or None."""
    srv = side.srv
    user = side.prepare()
    port = srv.pop3s_port if proto == "pop3" else srv.imaps_port
    wire = Wire(args.tools, port, rtt)
    try:
        if name == "mailpull":
            r, md = run_mailpull(args, srv, user, work, wire.port, proto)
        elif name == "raw":
            r, md = run_raw(args, srv, user, work, wire.port, proto)
        else:
            r, md = PEERS[proto][1](args, srv, user, work, wire.port, proto)
    finally:
        w = wire.stop()
    left = side.count(user)
    keeps = proto == "imap" or name == "raw"
    if md is None:
        got, same = args.expect, r.rc == 0
    else:
        got = count_maildir(md)
        same = got == args.expect and \
            digests(mprun.maildir_files(md), name == "mbsync") == want
    ok = r.rc == 0 and same and left == (args.expect if keeps else 0)
    log(f"  {side.label:7s} {proto} {rtt:3d} ms {name:9s} wall {r.elapsed:7.2f} s  "
        f"cpu {r.cpu:6.2f} s  rss {r.maxrss_kib / 1024:6.1f} MiB  "
        f"wire up {w.get('up', 0) / 1024:8.0f} KiB down {w.get('down', 0) / 1024:8.0f} KiB "
        f"turns {w.get('turns', 0):6.0f} proxy cpu {w.get('cpu', 0):5.2f} s  "
        f"got {got}/{args.expect}{'' if same else ' (content differs)'}, {left} left"
        f"  load {os.getloadavg()[0]:.1f}{'' if ok else '  FAILED'}")
    side.done(user)
    if not ok:
        log(str(r))
        return None
    return {"wall": r.elapsed, "cpu": r.cpu, "rss": r.maxrss_kib / 1024, "wire": w,
            "down": w.get("down", 0), "load": os.getloadavg()[0]}


def bench_fetch(args, sides, want, work):
    """Every condition (server x protocol x RTT), its runs interleaved round
    by round. Returns ({(server, proto, rtt): {name: [result]}}, failed)."""
    results, failed = {}, False
    for rtt in args.rtts:
        rounds = args.rounds_slow if rtt >= 100 else args.rounds
        for rnd in range(rounds):
            log(f"round {rnd + 1}/{rounds} at {rtt} ms")
            for side in sides:
                for proto in args.protos:
                    key = (side.label, proto, rtt)
                    res = results.setdefault(key, collections.defaultdict(list))
                    res["rounds"] = rounds
                    for name in ("mailpull", PEERS[proto][0], "raw"):
                        out = os.path.join(work, f"{name}-{rnd}")
                        os.makedirs(out)
                        try:
                            r = one_fetch_run(args, side, proto, name, rtt, out, want)
                        except Exception as e:      # the other conditions still count
                            log(f"  {side.label} {proto} {rtt} ms {name}: FAILED: {e}")
                            r = None
                        shutil.rmtree(out, ignore_errors=True)
                        if r is None:
                            failed = True
                        else:
                            res[name].append(r)
                    for fs in (False, True):
                        r = run_files(args, work, fs)
                        name = "files+fsync" if fs else "files"
                        log(f"  {side.label:7s} {proto} {rtt:3d} ms {name:11s} "
                            f"{r.out.strip() if r.rc == 0 else 'FAILED'}")
                        if r.rc != 0:
                            failed = True
                            log(f"  filecreate FAILED: {r}")
                        else:
                            res[name].append({"wall": r.elapsed})
    return results, failed


# ---- the no-new-mail poll and the scale ------------------------------------------

def bench_poll(args, dc, work):
    """A POLL_COUNT-message IMAP folder fetched once (keep = yes), then
    mailpull again at each RTT: nothing new, so no message bytes may cross
    the wire. Also a POP3 fetch of as many, for peak RSS at that size.
    Returns (summary dict, failed)."""
    n = args.poll_count
    out = {"count": n}
    t0 = time.monotonic()
    pristine = build_pristine(args.cache, n, False)
    out["build"] = time.monotonic() - t0
    want = pristine_digests(pristine)
    t0 = time.monotonic()
    restore(dc, pristine, "benchpoll", n)
    out["restore"] = time.monotonic() - t0
    log(f"poll: {n} messages: pristine set {out['build']:.1f} s (built once, then cached), "
        f"restored and indexed by Dovecot in {out['restore']:.1f} s")
    pw = os.path.join(work, "poll")
    os.makedirs(pw)
    md, state = os.path.join(pw, "Maildir"), os.path.join(pw, "state")
    failed = False

    def fetch(rtt, proto="imap", user="benchpoll", keep=True, where=pw, maildir=md):
        wire = Wire(args.tools, dc.imaps_port if proto == "imap" else dc.pop3s_port, rtt)
        try:
            r, _ = run_mailpull(args, dc, user, where, wire.port, proto, keep=keep,
                                md=maildir, state=os.path.join(where, "state"))
        finally:
            w = wire.stop()
        return r, w

    r, w = fetch(0)
    got = count_maildir(md)
    ok = r.rc == 0 and got == n and digests(mprun.maildir_files(md)) == want
    out["first"] = (r.elapsed, r.maxrss_kib / 1024, w)
    log(f"  first fetch (IMAP, 0 ms): wall {r.elapsed:.2f} s  rss {r.maxrss_kib / 1024:.1f} MiB"
        f"  got {got}/{n}{'' if ok else '  FAILED'}")
    if not ok:
        log(str(r))
        return out, True
    out["polls"] = {}
    for rtt in args.rtts:
        for rnd in range(args.poll_rounds):
            r, w = fetch(rtt)
            got = count_maildir(md)
            ok = r.rc == 0 and got == n and dc.count("benchpoll") == n
            log(f"  poll {rtt:3d} ms: wall {r.elapsed:6.3f} s  rss {r.maxrss_kib / 1024:5.1f} MiB"
                f"  wire up {w['up']:.0f} B down {w['down']:.0f} B turns {w['turns']:.0f}"
                f"  {got} in the Maildir{'' if ok else '  FAILED'}")
            if ok:
                out["polls"].setdefault(rtt, []).append((r.elapsed, w, r.maxrss_kib / 1024))
            else:
                log(str(r))
                failed = True
    shutil.rmtree(os.path.join(dc.maildir_root, "benchpoll"), ignore_errors=True)
    shutil.rmtree(pw, ignore_errors=True)
    # POP3 at the same size: peak RSS (keep = no, like the main section).
    restore(dc, pristine, "benchpoll3", n)
    pw3 = os.path.join(work, "poll3")
    os.makedirs(pw3)
    md3 = os.path.join(pw3, "Maildir")
    r, w = fetch(0, "pop3", "benchpoll3", False, pw3, md3)
    got = count_maildir(md3)
    left = dc.count("benchpoll3")
    ok = r.rc == 0 and got == n and left == 0 and digests(mprun.maildir_files(md3)) == want
    out["pop3"] = (r.elapsed, r.maxrss_kib / 1024)
    log(f"  POP3 fetch (0 ms): wall {r.elapsed:.2f} s  rss {r.maxrss_kib / 1024:.1f} MiB"
        f"  got {got}/{n}, {left} left{'' if ok else '  FAILED'}")
    if not ok:
        log(str(r))
        failed = True
    shutil.rmtree(os.path.join(dc.maildir_root, "benchpoll3"), ignore_errors=True)
    shutil.rmtree(pw3, ignore_errors=True)
    return out, failed


# ---- sending ---------------------------------------------------------------------

def send_message(i, tag, frm, to):
    """A ~2 KiB message with every field a client would add already there
    (so neither client adds one and what arrives can be compared)."""
    head = (f"From: Bench Sender <{frm}>\n"
            f"To: <{to}>\n"
            f"Subject: send bench {tag} {i}\n"
            f"Date: Tue, 25 Nov 2025 10:{i % 60:02d}:00 +0000\n"
            f"Message-ID: <send-{tag}-{i}@mail.test>\n\n").encode()
    line = f"{i:08d} the quick brown fox jumps over the lazy dog 0123456789 .,;:\n".encode()
    body = (line * (SEND_SIZE // len(line) + 1))[: SEND_SIZE - len(head)]
    body = body[: body.rfind(b"\n") + 1]
    return head + body


def strip_trace(data):
    """A delivered message without the trace fields Postfix and Dovecot put on top."""
    lines = data.split(b"\n")
    i = 0
    while i < len(lines) and lines[i].split(b":", 1)[0].lower() in (
            b"return-path", b"delivered-to", b"received", b"x-original-to"):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\n".join(lines[i:])


def write_messages(work, msgs):
    d = os.path.join(work, "messages")
    os.makedirs(d)
    paths = []
    for i, m in enumerate(msgs):
        p = os.path.join(d, f"{i:05d}.eml")
        with open(p, "wb") as f:
            f.write(m)
        paths.append(p)
    return paths


def run_each(argv, paths, env, cwd, timeout):
    """Runs argv once per file, the file on standard input, one after the
    other. Returns (wall s, CPU s summed over the processes, failures,
    the first failure's stderr)."""
    errpath = os.path.join(cwd, "stderr.txt")
    failures, first_err = 0, ""
    cpu = 0.0
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    with open(errpath, "w+b") as err:
        for p in paths:
            mark = err.tell()
            with open(p, "rb") as f:
                proc = subprocess.Popen(argv, stdin=f, stdout=subprocess.DEVNULL, stderr=err,
                                        env=env, cwd=cwd)
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += ru.ru_utime + ru.ru_stime
            if proc.returncode != 0:
                failures += 1
                if not first_err:
                    err.seek(mark)
                    first_err = (f"{' '.join(argv)} < {p}: exit {proc.returncode}\n"
                                 + err.read().decode("utf-8", "replace")[-2000:])
                    err.seek(0, os.SEEK_END)
            if time.monotonic() > deadline:
                failures += len(paths) - paths.index(p) - 1
                first_err = first_err or "timed out"
                break
    return time.monotonic() - t0, cpu, failures, first_err


def send_msmtp(args, pf, sender, paths, work):
    rc = os.path.join(work, "msmtprc")
    text = f"""defaults
tls on
tls_starttls on
tls_trust_file {pf.ca_file}
auth on
timeout 300

account bench
host {pf.host}
port {pf.submission_port}
user {sender}
password {pf.dc.password}
from {pf.address(sender)}
"""
    fd = os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work}
    wall, cpu, fails, err = run_each([args.msmtp, "-C", rc, "-a", "bench", "-t"], paths, env,
                                     work, args.timeout)
    return {"queue": None, "send": wall, "cpu": cpu, "failures": fails, "error": err,
            "outbox": None}


def send_mailpull(args, pf, sender, paths, work):
    md = os.path.join(work, "Maildir")
    cfg = os.path.join(work, "mailpull.conf")
    acct = mprun.dovecot_imap_account(pf.dc, sender, md, timeout=mprun.Raw("300s"),
                                      smtp_host=pf.host, smtp_port=pf.submission_port,
                                      smtp_tls=mprun.Raw("starttls"),
                                      save_sent=mprun.Raw("no"))
    mprun.write_config(cfg, {"bench": acct}, state_dir=os.path.join(work, "state"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work,
           "XDG_STATE_HOME": os.path.join(work, "xdg-state")}
    q_wall, q_cpu, fails, err = run_each([args.binary, "-c", cfg, "sendmail", "-t"], paths, env,
                                         work, args.timeout)
    res = {"queue": q_wall, "send": None, "cpu": q_cpu, "failures": fails, "error": err}
    if fails:
        res["outbox"] = None
        return res
    r = mprun.run([args.binary, "-q", "-c", cfg, "send"], timeout=args.timeout, env=env)
    res["send"] = r.elapsed
    res["cpu"] += r.cpu
    if r.rc != 0:
        res["failures"] = len(paths)
        res["error"] = str(r)
    res["outbox"] = len(mprun.maildir_files(os.path.join(md, ".Outbox")))
    return res


SEND_CONTENDERS = [
    ("msmtp", send_msmtp),
    ("mailpull", send_mailpull),
]


def wait_inbox(dc, pf, user, n, timeout):
    """Releases what the bench's Postfix holds and waits for n messages in
    user's INBOX, asking again every two seconds (mail still being put on
    hold during a release waits for the next)."""
    deadline = time.monotonic() + timeout
    last_flush = 0.0
    while True:
        got = dc.count(user)
        if got >= n or time.monotonic() >= deadline:
            return got
        if time.monotonic() - last_flush >= 2.0:
            pf.release_held()
            last_flush = time.monotonic()
        time.sleep(0.2)


def bench_send(args, dc, work):
    """The sending section: rounds of msmtp and mailpull, interleaved.
    Returns ({client: [result]}, whether something failed)."""
    results = {name: [] for name, _ in SEND_CONTENDERS}
    failed = False
    why = postfix_mod.unavailable()
    if why:
        log(f"send: not run: {why}")
        return results, True
    pf = postfix_mod.Postfix(dc, workdir=os.path.join(work, "postfix"), main=postfix_mod.HOLD)
    try:
        pf.start()
        log(f"Postfix submission (STARTTLS) on {pf.host}:{pf.submission_port}; "
            f"{args.send_count} messages of ~{SEND_SIZE // 1024} KiB per run, "
            f"{args.rounds} rounds")
        sender = "benchsender"
        dc.ensure_mailbox(sender)
        for rnd in range(args.rounds):
            for name, fn in SEND_CONTENDERS:
                rcpt = f"benchrcpt{rnd}{name}"
                shutil.rmtree(os.path.join(dc.maildir_root, rcpt), ignore_errors=True)
                dc.ensure_mailbox(rcpt)
                out = os.path.join(work, f"send-{name}-{rnd}")
                os.makedirs(out)
                msgs = [send_message(i, f"{name}{rnd}", pf.address(sender), pf.address(rcpt))
                        for i in range(args.send_count)]
                paths = write_messages(out, msgs)
                res = fn(args, pf, sender, paths, out)
                # Outside the timing: deliver, then every message once, byte for byte.
                # A failed run may have submitted some: a short wait is enough then.
                got = wait_inbox(dc, pf, rcpt, len(msgs),
                                 120 + len(msgs) / 10 if res["failures"] == 0 else 5)
                same = got == len(msgs) and collections.Counter(
                    hashlib.sha256(strip_trace(b)).hexdigest() for b in dc.bodies(rcpt)) == \
                    collections.Counter(hashlib.sha256(m).hexdigest() for m in msgs)
                left = res["outbox"] or 0
                ok = res["failures"] == 0 and same and left == 0
                q = "      -" if res["queue"] is None else f"{res['queue']:7.2f}"
                snd = "      -" if res["send"] is None else f"{res['send']:7.2f}"
                notes = ""
                if got == len(msgs) and not same:
                    notes += " (content differs)"
                if left:
                    notes += f", {left} left in the outbox"
                if res["failures"]:
                    notes += f", {res['failures']} runs failed"
                log(f"  round {rnd + 1} send {name:9s} queue {q} s  send {snd} s  "
                    f"cpu {res['cpu']:7.2f} s  delivered {got}/{len(msgs)}{notes}"
                    f"{'' if ok else '  FAILED'}")
                if not ok:
                    failed = True
                    if res["error"]:
                        log(res["error"])
                    if got != len(msgs):
                        log(pf.log_tail(2000))
                else:
                    results[name].append(res)
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(os.path.join(dc.maildir_root, rcpt), ignore_errors=True)
                # The next run starts with an empty queue, whatever this one left.
                pf.purge_queue()
    except Exception as e:      # the other sections' results still count
        log(f"send: FAILED: {e}")
        failed = True
    finally:
        pf.stop()
    return results, failed


def report_send(args, results):
    log("")
    log(f"{'send':5s} {'client':9s} {'queue s':>8s} {'send s':>8s} {'total s':>8s} "
        f"{'cpu s':>8s}   (medians of {args.rounds}; {args.send_count} messages)")
    med = {}
    for name, rs in results.items():
        if not rs:
            log(f"{'send':5s} {name:9s} {'(no successful run)':>35s}")
            continue
        queue = [r["queue"] or 0.0 for r in rs]
        send = [r["send"] for r in rs]
        total = [a + b for a, b in zip(queue, send)]
        m = (median(queue), median(send), median(total), median([r["cpu"] for r in rs]))
        med[name] = m
        qtxt = f"{m[0]:8.2f}" if any(r["queue"] is not None for r in rs) else f"{'-':>8s}"
        log(f"{'send':5s} {name:9s} {qtxt} {m[1]:8.2f} {m[2]:8.2f} {m[3]:8.2f}")
    if "msmtp" in med and "mailpull" in med:
        a, b = med["mailpull"], med["msmtp"]
        ratio = ["%.2f" % (y / x) if x > 0 else "n/a" for x, y in ((a[2], b[2]), (a[3], b[3]),
                                                                 (a[1], b[2]))]
        log(f"{'send':5s} msmtp/mailpull: wall {ratio[0]}  cpu {ratio[1]}  "
            f"(against mailpull's send alone: wall {ratio[2]})")


# ---- reports -------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else float("nan")


def med_of(res, name, field="wall"):
    return median([r[field] for r in res.get(name, [])])


def condition_name(server, proto, rtt):
    return f"{server} {'loopback' if rtt == 0 else f'{rtt} ms RTT'} {proto.upper()}"


def ratio(a, b):
    return a / b if b and b == b and a == a else float("nan")


def report_fetch(args, results):
    """The per-condition detail, then the compact table of the issue."""
    log("")
    log(f"fetch: {args.expect} messages per run; medians of the rounds; wall s, cpu s, "
        f"rss MiB, bytes from the server (proxy count)")
    rows = []
    for key in sorted(results, key=lambda k: (k[0] != "Dovecot", k[2], k[1])):
        server, proto, rtt = key
        res = results[key]
        peer = PEERS[proto][0]
        m = {n: med_of(res, n) for n in ("mailpull", peer, "raw", "files", "files+fsync")}
        limit = max(m["raw"], m["files"])
        for n in ("mailpull", peer, "raw"):
            log(f"  {condition_name(*key):26s} {n:9s} wall {m[n]:7.2f}  "
                f"cpu {med_of(res, n, 'cpu'):6.2f}  rss {med_of(res, n, 'rss'):6.1f}  "
                f"down {median([r['wire']['down'] for r in res.get(n, [])]) / 2**20:7.2f} MiB  "
                f"({len(res.get(n, []))} runs)")
        log(f"  {condition_name(*key):26s} files {m['files']:.2f} s (fsync each "
            f"{m['files+fsync']:.2f} s); limit {limit:.2f} s; {peer}/mailpull "
            f"{ratio(m[peer], m['mailpull']):.2f} (goal >= 1.5); mailpull/limit "
            f"{ratio(m['mailpull'], limit):.2f} (goal <= 1.25)")
        rows.append((key, res, m, limit))
    log("")
    log(f"| condition | mailpull | peer | raw wire | files + 1 flush (fsync each) | limit "
        f"| peer/mailpull (>= 1.5) | mailpull/limit (<= 1.25) | peak RSS mailpull / peer "
        f"| rounds | load |")
    log("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, res, m, limit in rows:
        peer = PEERS[key[1]][0]
        pr, lr = ratio(m[peer], m["mailpull"]), ratio(m["mailpull"], limit)
        # mbsync deflates (COMPRESS=DEFLATE) where the server offers it (Cyrus):
        # fewer bytes than the raw wire, which does not.
        pd, rd = med_of(res, peer, "down"), med_of(res, "raw", "down")
        note = f" (deflate: {pd / rd * 100:.0f}% of the bytes)" if pd < 0.7 * rd else ""
        log(f"| {condition_name(*key)} | {m['mailpull']:.2f} s | {peer} {m[peer]:.2f} s{note} "
            f"| {m['raw']:.2f} s | {m['files']:.2f} s ({m['files+fsync']:.2f} s) "
            f"| {limit:.2f} s | {pr:.2f}{'' if pr >= 1.5 else ' ✗'} "
            f"| {lr:.2f}{'' if lr <= 1.25 else ' ✗'} "
            f"| {med_of(res, 'mailpull', 'rss'):.1f} / {med_of(res, peer, 'rss'):.1f} MiB "
            f"| {res['rounds']} | {med_of(res, 'mailpull', 'load'):.1f} |")
    log(f"(load: the 1-minute load average after mailpull's runs, on {os.cpu_count()} CPUs; "
        f"rounds above 100 ms: --rounds-slow)")


def report_poll(args, out, results):
    log("")
    n = out["count"]
    log(f"no-new-mail poll of a {n}-message IMAP folder already fetched (keep = yes); "
        f"medians of {args.poll_rounds}")
    log(f"  setting it up: pristine set {out['build']:.1f} s (cached after the first build), "
        f"restore + Dovecot index {out['restore']:.1f} s"
        + (f", first fetch {out['first'][0]:.1f} s" if "first" in out else ""))
    log("| RTT | poll wall | turns (round trips) | bytes up | bytes down | peak RSS |")
    log("|---|---|---|---|---|---|")
    for rtt, rs in sorted(out.get("polls", {}).items()):
        log(f"| {rtt} ms | {median([r[0] for r in rs]):.3f} s "
            f"| {median([r[1]['turns'] for r in rs]):.0f} "
            f"| {median([r[1]['up'] for r in rs]):.0f} "
            f"| {median([r[1]['down'] for r in rs]):.0f} "
            f"| {median([r[2] for r in rs]):.1f} MiB |")
    small = {p: med_of(results.get(("Dovecot", p, 0), {}), "mailpull", "rss")
             for p in ("pop3", "imap")}
    big = {"imap": out["first"][1] if "first" in out else float("nan"),
           "pop3": out["pop3"][1] if "pop3" in out else float("nan")}
    log("")
    log(f"| peak RSS of mailpull (goal < 8 MiB, flat) | {args.expect} messages | {n} messages |")
    log("|---|---|---|")
    for p in ("pop3", "imap"):
        log(f"| {p.upper()} (Dovecot, loopback) | {small[p]:.1f} MiB | {big[p]:.1f} MiB |")


# ---- main --------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the mailpull binary")
    ap.add_argument("--tools", help="the built helpers (default: BINARY's dir/bench)")
    ap.add_argument("--server", choices=("dovecot", "cyrus", "all"), default="all")
    ap.add_argument("--rtt", default="0,20,100", help="round-trip times in ms (0,20,100)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rounds-slow", type=int, default=2,
                    help="rounds at 100 ms and above (default 2, bounded by --rounds)")
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--large", action="store_true", help=f"add {LARGE_COUNT} x 20 MiB messages")
    ap.add_argument("--cache", default=os.environ.get("MAILPULL_BENCH_CACHE",
                                                       "/var/tmp/mailpull-bench"))
    ap.add_argument("--proto", choices=("pop3", "imap", "send", "fetch", "all"), default="all",
                    help="fetch: POP3 and IMAP without the sending section")
    ap.add_argument("--poll", action="store_true",
                    help="the no-new-mail poll and the scale section (make bench: on)")
    ap.add_argument("--poll-count", type=int, default=100000)
    ap.add_argument("--poll-rounds", type=int, default=3)
    ap.add_argument("--send-count", type=int, default=1000,
                    help="messages per sending run (default 1000)")
    ap.add_argument("--mpop", default=shutil.which("mpop") or "mpop")
    ap.add_argument("--mbsync", default=shutil.which("mbsync") or "mbsync")
    ap.add_argument("--msmtp", default=shutil.which("msmtp") or "msmtp")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.tools = os.path.abspath(args.tools or os.path.join(os.path.dirname(args.binary),
                                                            "bench"))
    args.rtts = [int(x) for x in args.rtt.split(",") if x.strip()]
    args.rounds_slow = min(args.rounds_slow, args.rounds)
    args.protos = [p for p in ("pop3", "imap") if args.proto in ("all", "fetch", p)]
    args.servers = ["dovecot", "cyrus"] if args.server == "all" else [args.server]
    return args


def start_sides(args, dc, work, pristine):
    sides = []
    if "dovecot" in args.servers:
        sides.append(DovecotSide(dc, pristine, args.expect))
    if "cyrus" in args.servers:
        why = cyrus_mod.unavailable()
        if why:
            log(f"Cyrus: not run: {why}")
            return sides, None, True
        cy = cyrus_mod.Cyrus(workdir=os.path.join(work, "cyrus"))
        cy.start()
        log(f"Cyrus ({', '.join(cyrus_mod.versions())}) POP3S on {cy.pop3s_port}, "
            f"IMAPS on {cy.imaps_port}")
        try:
            sides.append(CyrusSide(cy, pristine, args.expect))
        except Exception:
            cy.stop()
            raise
        return sides, cy, False
    return sides, None, False


def main():
    args = parse_args()
    t_start = time.monotonic()
    for t in ("delayproxy", "rawwire", "filecreate"):
        if not os.access(os.path.join(args.tools, t), os.X_OK):
            sys.exit(f"bench: no {t} in {args.tools} (make BUILDDIR=... bench-tools)")
    os.makedirs(args.cache, exist_ok=True)
    os.chmod(args.cache, 0o755)
    args.expect = args.count + (LARGE_COUNT if args.large else 0)
    # Dovecot's files live next to the pristine set: hard links need one file system.
    work = os.path.join(args.cache, f"run-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chmod(work, 0o755)
    if args.protos:
        pristine = build_pristine(args.cache, args.count, args.large)
        want = pristine_digests(pristine)
        files = mprun.maildir_files(pristine)
        sizes = [os.path.getsize(p) for p in files]
        args.wire_bytes = 0
        for p in files:
            with open(p, "rb") as f:
                args.wire_bytes += f.read().count(b"\n")
        args.wire_bytes += sum(sizes)
        args.sizes_file = os.path.join(work, "sizes")
        with open(args.sizes_file, "w") as f:
            f.write("".join(f"{n}\n" for n in sizes))
    results, send_results, poll_out = {}, None, None
    failed = not check_proxy(args)
    if failed:
        log("proxy: a ping-pong cost less than the RTT: FAILED")
    cy = None
    # LMTP and auth listeners for the sending section's Postfix.
    dc = Dovecot(workdir=os.path.join(work, "dovecot"), lmtp=True, auth_inet=True,
                 auth_delays=False)
    try:
        dc.start()
        if args.protos:
            sides, cy, f = start_sides(args, dc, work, pristine)
            failed = failed or f
            log(f"fetch: {', '.join(s.label for s in sides)}; {'/'.join(args.protos)}; "
                f"RTT {args.rtt} ms; {args.expect} messages per run; {args.rounds} rounds "
                f"({args.rounds_slow} at 100 ms and above)")
            results, f = bench_fetch(args, sides, want, work)
            failed = failed or f
            # The tables at once: the sections after this one take minutes.
            report_fetch(args, results)
            log("")
        if args.poll:
            try:
                poll_out, f = bench_poll(args, dc, work)
            except Exception as e:
                log(f"poll: FAILED: {e}")
                poll_out, f = None, True
            failed = failed or f
        if args.proto in ("all", "send"):
            send_results, send_failed = bench_send(args, dc, work)
            failed = failed or send_failed
    finally:
        if cy is not None:
            cy.stop()
        dc.stop()
        shutil.rmtree(work, ignore_errors=True)

    if results:
        report_fetch(args, results)
    if poll_out is not None:
        report_poll(args, poll_out, results)
    if send_results is not None:
        report_send(args, send_results)
    log(f"\nbench: {time.monotonic() - t_start:.0f} s in all{'; SOME RUNS FAILED' if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
