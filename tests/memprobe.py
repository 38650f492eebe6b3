#!/usr/bin/python3
"""Peak RSS of mailpull runs on large mailboxes: POP3 (keep = no) and IMAP
(keep = yes) fetches of COUNT small messages (and of the bench's 20 MiB
ones with --large), then a no-new-mail IMAP poll of the fetched folder:
its time, commands sent (from the -v trace), message bytes and peak RSS.

    python3 tests/memprobe.py build/mailpull --count 5000 --count 100000

Pristine mailboxes come from bench.py (built once under
MAILPULL_BENCH_CACHE, restored with hard links and indexed by doveadm).
Peak RSS is GNU time's %M, as in the tests. --smaps samples
/proc/PID/smaps_rollup every few milliseconds and prints the largest.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import mprun  # noqa: E402
from dovecot import Dovecot  # noqa: E402


def sample_smaps(pid, stop, out):
    """Keep the smaps of mailpull (GNU time's child) with the largest Rss."""
    best = 0
    while not stop.is_set():
        try:
            kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
            if kids:
                text = open(f"/proc/{kids[0]}/smaps_rollup").read()
                m = re.search(r"^Rss:\s+(\d+)", text, re.M)
                if m and int(m.group(1)) > best:
                    best = int(m.group(1))
                    out["rollup"] = text
                    out["smaps"] = open(f"/proc/{kids[0]}/smaps").read()
        except (OSError, IndexError):
            pass
        time.sleep(0.002)


def run(args, cfg, work, verbose=False):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work,
           "XDG_STATE_HOME": os.path.join(work, "xdg-state")}
    argv = args.wrap.split() + [args.binary, "-v" if verbose else "-q", "-c", cfg]
    p = mprun.Proc(argv, env=env, measure_rss=True)
    sm = {}
    t = None
    stop = threading.Event()
    if args.smaps:
        t = threading.Thread(target=sample_smaps, args=(p.pid, stop, sm))
        t.start()
    r = p.finish(timeout=args.timeout)
    if t:
        stop.set()
        t.join()
        r.extra = sm
    return r


def top_mappings(smaps, n=12):
    """The mappings with the largest Rss, summed by name."""
    by = {}
    name = None
    for line in smaps.splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split()
            name = parts[5] if len(parts) > 5 else "[anon]"
        elif line.startswith("Rss:"):
            by[name] = by.get(name, 0) + int(line.split()[1])
    return sorted(by.items(), key=lambda kv: -kv[1])[:n]


def report(tag, r, extra=""):
    print(f"{tag:34s} rc {r.rc} wall {r.elapsed:6.2f} s cpu {r.cpu:6.2f} s "
          f"rss {r.maxrss_kib / 1024:6.2f} MiB {extra}", flush=True)
    if r.rc != 0:
        print(str(r))
    if r.extra.get("rollup"):
        keys = ("Rss", "Shared_Clean", "Private_Clean", "Private_Dirty", "Anonymous")
        got = dict(re.findall(r"^(\w+):\s+(\d+) kB", r.extra["rollup"], re.M))
        print("      at the peak: " + ", ".join(f"{k} {got.get(k, '?')} KiB" for k in keys))
    if r.extra.get("smaps"):
        for name, kib in top_mappings(r.extra["smaps"]):
            print(f"      {kib:7d} KiB  {name}")


def tree_digest(top):
    """Names and sizes of every file under top: equal before and after a poll
    that must change nothing."""
    out = []
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out.append((os.path.relpath(p, top), st.st_size, st.st_mtime_ns))
    return sorted(out)


def probe(args, dc, work, count, large):
    pristine = bench.build_pristine(args.cache, count, large)
    expect = count + (bench.LARGE_COUNT if large else 0)
    tag = f"{count}{'+large' if large else ''}"
    for proto in args.proto:
        user = f"probe{proto}{count}{'l' if large else ''}"
        bench.restore(dc, pristine, user, expect)
        out = os.path.join(work, user)
        os.makedirs(out)
        md = os.path.join(out, "Maildir")
        cfg = os.path.join(out, "mailpull.conf")
        state = os.path.join(out, "state")
        if proto == "pop3":
            acct = mprun.dovecot_pop3_account(dc, user, md, keep=False,
                                              timeout=mprun.Raw("600s"))
        else:
            acct = mprun.dovecot_imap_account(dc, user, md, keep=True, folders=["INBOX"],
                                              timeout=mprun.Raw("600s"))
        mprun.write_config(cfg, {"probe": acct}, state_dir=state)
        r = run(args, cfg, out)
        got = bench.count_maildir(md)
        report(f"{tag} {proto} fetch", r, f"got {got}/{expect}")
        if proto == "imap" and r.rc == 0:
            before = tree_digest(out)
            r = run(args, cfg, out, verbose=True)
            cmds = [ln for ln in r.err.splitlines() if re.search(r"(>|C:) ", ln)]
            fetches = [ln for ln in cmds if re.search(r"FETCH", ln, re.I)]
            same = tree_digest(out) == before
            report(f"{tag} imap no-new poll", r,
                   f"{len(cmds)} commands, {len(fetches)} FETCH, unchanged {same}")
            if args.trace:
                print(r.err[-4000:])
            sizes = {f: os.path.getsize(os.path.join(d, f))
                     for d, _, fs in os.walk(state) for f in fs}
            print(f"      state files: {sizes}")
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(os.path.join(dc.maildir_root, user), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--count", type=int, action="append")
    ap.add_argument("--large", action="store_true", help="also COUNT + the 20 MiB messages")
    ap.add_argument("--proto", action="append", choices=("pop3", "imap"))
    ap.add_argument("--smaps", action="store_true", help="sample smaps at the peak")
    ap.add_argument("--trace", action="store_true", help="print the poll's -v trace tail")
    ap.add_argument("--wrap", default="", help="a command to run mailpull under, e.g. "
                    "'heaptrack -o /tmp/hp' (peak RSS is then the wrapper's too)")
    ap.add_argument("--cache", default=os.environ.get("MAILPULL_BENCH_CACHE",
                                                       "/var/tmp/mailpull-bench"))
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.count = args.count or [5000]
    args.proto = args.proto or ["pop3", "imap"]
    os.makedirs(args.cache, exist_ok=True)
    work = os.path.join(args.cache, f"probe-{os.getpid()}")
    os.makedirs(work)
    dc = Dovecot(workdir=os.path.join(work, "dovecot"))
    try:
        dc.start()
        for count in args.count:
            probe(args, dc, work, count, False)
        if args.large:
            probe(args, dc, work, min(args.count), True)
    finally:
        dc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
