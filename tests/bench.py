"""mailpull against its peers on the same private Dovecot and the same mail.

    python3 tests/bench.py BUILD/mailpull [--rounds 3] [--count 5000] [--large]
                                          [--proto pop3|imap|send|all] [--send-count 1000]
                                          [--cache DIR] [--mpop mpop] [--mbsync mbsync] [--msmtp msmtp]

POP3: mailpull (keep = no, a fresh Maildir) against mpop (keep off, delivery
maildir, tls on, tls_trust_file the test CA, pipelining auto), both over
POP3S. IMAP: mailpull (keep = yes, folders INBOX) against isync's mbsync
(IMAPS with the test CA as CertificateFile, a MaildirStore, a Channel
pulling INBOX only: Sync Pull, Create Near, Expunge None), both over IMAPS;
after each IMAP run the server must still hold every message. --proto
picks one protocol. A pristine mailbox of COUNT ~4 KiB messages (plus 5 x 20 MiB with
--large) is built once under the cache directory; before every run it is
restored with hard links (`cp -al`) into a fresh Dovecot user, without
index files, and indexed by doveadm outside the timing. Runs are
interleaved (A B A B ...) because file I/O timings on these machines swing
by 3x between identical runs; the table quotes medians and the ratio
peer / mailpull (above 1: mailpull is faster or smaller).

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
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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


# ---- the contenders ----------------------------------------------------------

def run_mailpull(args, dc, user, work):
    md = os.path.join(work, "Maildir")
    cfg = os.path.join(work, "mailpull.conf")
    acct = mprun.dovecot_pop3_account(dc, user, md, keep=False,
                                      timeout=mprun.Raw("300s"))
    mprun.write_config(cfg, {"bench": acct}, state_dir=os.path.join(work, "state"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work,
           "XDG_STATE_HOME": os.path.join(work, "xdg-state")}
    r = mprun.run([args.binary, "-q", "-c", cfg], timeout=args.timeout, env=env,
                  measure_rss=True)
    return r, md


def run_mpop(args, dc, user, work):
    md = os.path.join(work, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    rc = os.path.join(work, "mpoprc")
    text = f"""defaults
tls on
tls_starttls off
tls_trust_file {dc.ca_file}
pipelining auto
keep off
received_header off
timeout 300

account bench
host {dc.host}
port {dc.pop3s_port}
user {user}
password {dc.password}
auth user
delivery maildir {md}
uidls_file {os.path.join(work, "uidls")}
"""
    fd = os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    r = mprun.run([args.mpop, "-q", "-C", rc, "bench"], timeout=args.timeout,
                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work},
                  measure_rss=True)
    return r, md


def run_mailpull_imap(args, dc, user, work):
    md = os.path.join(work, "Maildir")
    cfg = os.path.join(work, "mailpull.conf")
    acct = mprun.dovecot_imap_account(dc, user, md, keep=True, folders=["INBOX"],
                                      timeout=mprun.Raw("300s"))
    mprun.write_config(cfg, {"bench": acct}, state_dir=os.path.join(work, "state"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work,
           "XDG_STATE_HOME": os.path.join(work, "xdg-state")}
    r = mprun.run([args.binary, "-q", "-c", cfg], timeout=args.timeout, env=env,
                  measure_rss=True)
    return r, md


def run_mbsync(args, dc, user, work):
    """isync's mbsync pulling INBOX into a Maildir, leaving the server alone."""
    md = os.path.join(work, "Maildir")
    os.makedirs(os.path.join(work, "mbsync-folders"), exist_ok=True)
    rc = os.path.join(work, "mbsyncrc")
    # mbsync matches only DNS names of the certificate, not its IP addresses.
    text = f"""IMAPAccount bench
Host localhost
Port {dc.imaps_port}
User {user}
Pass {dc.password}
SSLType IMAPS
SSLVersions TLSv1.2 TLSv1.3
CertificateFile {dc.ca_file}
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
"""
    fd = os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    r = mprun.run([args.mbsync, "-q", "-c", rc, "bench"], timeout=args.timeout,
                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work},
                  measure_rss=True)
    return r, md


# (protocol, client, runner, whether the client leaves the mail on the server)
CONTENDERS = [
    ("pop3", "mailpull", run_mailpull, False),
    ("pop3", "mpop", run_mpop, False),
    ("imap", "mailpull", run_mailpull_imap, True),
    ("imap", "mbsync", run_mbsync, True),
]


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


# ---- main --------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the mailpull binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--large", action="store_true", help=f"add {LARGE_COUNT} x 20 MiB messages")
    ap.add_argument("--cache", default=os.environ.get("MAILPULL_BENCH_CACHE",
                                                       "/var/tmp/mailpull-bench"))
    ap.add_argument("--proto", choices=("pop3", "imap", "send", "all"), default="all")
    ap.add_argument("--send-count", type=int, default=1000,
                    help="messages per sending run (default 1000)")
    ap.add_argument("--mpop", default=shutil.which("mpop") or "mpop")
    ap.add_argument("--mbsync", default=shutil.which("mbsync") or "mbsync")
    ap.add_argument("--msmtp", default=shutil.which("msmtp") or "msmtp")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)

    os.makedirs(args.cache, exist_ok=True)
    os.chmod(args.cache, 0o755)
    contenders = [c for c in CONTENDERS if args.proto in ("all", c[0])]
    expect = args.count + (LARGE_COUNT if args.large else 0)
    if contenders:
        pristine = build_pristine(args.cache, args.count, args.large)
        want = pristine_digests(pristine)

    # Dovecot's files live next to the pristine set: hard links need one file system.
    work = os.path.join(args.cache, f"run-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    results = {(p, n): [] for p, n, _, _ in contenders}
    send_results = None
    failed = False
    # LMTP and auth listeners for the sending section's Postfix.
    dc = Dovecot(workdir=os.path.join(work, "dovecot"), lmtp=True, auth_inet=True,
                 auth_delays=False)
    try:
        dc.start()
        if contenders:
            log(f"Dovecot POP3S on {dc.host}:{dc.pop3s_port}, IMAPS on {dc.imaps_port}; "
                f"{expect} messages per run, {args.rounds} rounds")
        for rnd in range(args.rounds if contenders else 0):
            for proto, name, fn, keeps in contenders:
                user = f"bench{rnd}{proto}{name}"
                restore(dc, pristine, user, expect)
                out = os.path.join(work, f"{name}-{rnd}")
                os.makedirs(out)
                r, md = fn(args, dc, user, out)
                got = count_maildir(md)
                left = dc.count(user)
                # Outside the timing: every message arrived, byte for byte, once.
                same = got == expect and \
                    digests(mprun.maildir_files(md), name == "mbsync") == want
                ok = r.rc == 0 and same and left == (expect if keeps else 0)
                log(f"  round {rnd + 1} {proto} {name:9s} wall {r.elapsed:7.2f} s  "
                    f"cpu {r.cpu:7.2f} s  rss {r.maxrss_kib / 1024:7.1f} MiB  "
                    f"got {got}/{expect}{'' if same else ' (content differs)'}, {left} left"
                    f"{'' if ok else '  FAILED'}")
                if not ok:
                    failed = True
                    log(str(r))
                else:
                    results[(proto, name)].append(r)
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(os.path.join(dc.maildir_root, user), ignore_errors=True)
        if args.proto in ("all", "send"):
            send_results, send_failed = bench_send(args, dc, work)
            failed = failed or send_failed
    finally:
        dc.stop()
        shutil.rmtree(work, ignore_errors=True)

    if contenders:
        report_fetch(args, contenders, results, expect)
    if send_results is not None:
        report_send(args, send_results)
    return 1 if failed else 0


def report_fetch(args, contenders, results, expect):
    log("")
    log(f"{'proto':5s} {'client':9s} {'wall s':>8s} {'cpu s':>8s} {'rss MiB':>8s}   "
        f"(medians of {args.rounds}; {expect} messages)")
    med = {}
    for (proto, name), rs in results.items():
        m = (median([r.elapsed for r in rs]), median([r.cpu for r in rs]),
             median([r.maxrss_kib / 1024 for r in rs]))
        med[(proto, name)] = m
        log(f"{proto:5s} {name:9s} {m[0]:8.2f} {m[1]:8.2f} {m[2]:8.1f}")
    for proto, name, _, _ in contenders:
        if name == "mailpull" or (proto, "mailpull") not in med:
            continue
        a, b = med[(proto, "mailpull")], med[(proto, name)]
        ratios = ["%.2f" % (y / x) if x > 0 else "n/a" for x, y in zip(a, b)]
        log(f"{proto:5s} {name}/mailpull: wall {ratios[0]}  cpu {ratios[1]}  rss {ratios[2]}")


if __name__ == "__main__":
    sys.exit(main())
