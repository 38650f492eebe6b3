"""Writing mailpull configuration files and running programs with limits and
measurements, shared by the integration tests, the demo and the bench.

Peak RSS: the kernel's ru_maxrss of a child started straight from a large
Python process is polluted: exec() keeps the larger of the old and new
image's high-water mark, and the old image is (a vfork of) this process.
So peak RSS is taken from GNU time (a 1 MiB process that forks the command
itself and reports the child's wait4() ru_maxrss); CPU time comes from our
own wait4() of it, which includes its reaped child.
"""

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

GNU_TIME = "/usr/bin/time"
# Deadlines stretch by this factor where mailpull runs many times slower
# than native (valgrind); the integration conftest sets it.
TIME_SCALE = float(os.environ.get("MAILPULL_TIME_SCALE", "1"))


class Raw(str):
    """A configuration value written without quotes (keywords, sizes, durations)."""


def conf_value(v):
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(conf_value(x) for x in v) + " }"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Raw):
        return str(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def render_config(accounts, state_dir=None, extra=""):
    """accounts: {name: {key: value}} (dicts keep order). Returns the text."""
    out = ["# written by the mailpull tests\n"]
    if state_dir is not None:
        out.append(f"state_dir = {conf_value(state_dir)}\n")
    if extra:
        out.append(extra.rstrip("\n") + "\n")
    for name, keys in accounts.items():
        out.append(f"\naccount {conf_value(name)} {{\n")
        for k, v in keys.items():
            if v is None:
                continue
            out.append(f"    {k} = {conf_value(v)}\n")
        out.append("}\n")
    return "".join(out)


def write_config(path, accounts, state_dir=None, mode=0o600, extra=""):
    # Written beside and renamed over, as editors do: a daemon that notices
    # the change must never read a half-written file.
    text = render_config(accounts, state_dir, extra)
    tmp = f"{path}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def dovecot_pop3_account(dc, user, maildir, **over):
    """Account settings for the harness Dovecot over POP3S."""
    a = {
        "protocol": Raw("pop3"),
        "host": dc.host,
        "port": dc.pop3s_port,
        "tls": Raw("implicit"),
        "tls_ca_file": dc.ca_file,
        "user": user,
        "password": dc.password,
        "maildir": maildir,
        "keep": False,
        "timeout": Raw("30s"),
    }
    a.update(over)
    return a


def dovecot_imap_account(dc, user, maildir, **over):
    """Account settings for the harness Dovecot over IMAPS (keep: the
    IMAP default, yes, unless given)."""
    a = {
        "protocol": Raw("imap"),
        "host": dc.host,
        "port": dc.imaps_port,
        "tls": Raw("implicit"),
        "tls_ca_file": dc.ca_file,
        "user": user,
        "password": dc.password,
        "maildir": maildir,
        "timeout": Raw("30s"),
    }
    a.update(over)
    return a


@dataclass
class Result:
    cmd: list
    rc: int
    stdout: bytes = b""
    stderr: bytes = b""
    elapsed: float = 0.0
    cpu: float = 0.0
    maxrss_kib: int = 0        # 0: not measured
    signal: int = 0            # killed by this signal (rc is then -signal)
    timed_out: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def out(self):
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self):
        return self.stderr.decode("utf-8", "replace")

    def __str__(self):
        return (f"{' '.join(map(str, self.cmd))}\n  exit {self.rc}"
                f"{' (timed out)' if self.timed_out else ''}\n"
                f"  stdout: {self.out[-3000:]}\n  stderr: {self.err[-3000:]}")


class Proc:
    """A started program whose output goes to files; finish() waits with
    wait4(), a deadline and, past it, SIGKILL."""

    def __init__(self, cmd, env=None, cwd=None, measure_rss=False, stdin=None):
        self.cmd = [str(c) for c in cmd]
        self._rssfile = None
        argv = self.cmd
        if measure_rss and os.access(GNU_TIME, os.X_OK):
            fd, self._rssfile = tempfile.mkstemp(prefix="mailpull-rss-")
            os.close(fd)
            argv = [GNU_TIME, "-f", "%M", "-o", self._rssfile, "--"] + self.cmd
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.start = time.monotonic()
        self.p = subprocess.Popen(argv, env=env, cwd=cwd,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  stdout=self._out, stderr=self._err)
        self.pid = self.p.pid
        self.result = None

    def poll(self):
        """Non-blocking: a Result when the program has ended, else None."""
        if self.result is not None:
            return self.result
        pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        return self._done(status, ru)

    def kill(self, sig=signal.SIGKILL):
        if self.result is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def finish(self, timeout=60.0):
        deadline = time.monotonic() + timeout * TIME_SCALE
        while True:
            r = self.poll()
            if r is not None:
                return r
            if time.monotonic() >= deadline:
                self.kill()
                _, status, ru = os.wait4(self.pid, 0)
                r = self._done(status, ru)
                r.timed_out = True
                return r
            time.sleep(0.005)

    def _done(self, status, ru):
        elapsed = time.monotonic() - self.start
        # Tell subprocess the child is gone so it does not wait for it again.
        self.p.returncode = os.waitstatus_to_exitcode(status)
        rc = self.p.returncode
        self._out.seek(0)
        self._err.seek(0)
        r = Result(cmd=self.cmd, rc=rc, stdout=self._out.read(), stderr=self._err.read(),
                   elapsed=elapsed, cpu=ru.ru_utime + ru.ru_stime)
        self._out.close()
        self._err.close()
        if os.WIFSIGNALED(status):
            r.signal = os.WTERMSIG(status)
        if self._rssfile:
            try:
                with open(self._rssfile) as f:
                    lines = [ln.strip() for ln in f if ln.strip()]
                r.maxrss_kib = int(lines[-1]) if lines else 0
            except (OSError, ValueError):
                r.maxrss_kib = 0
            os.unlink(self._rssfile)
            # GNU time reports a child killed by signal N as status 128+N.
        self.result = r
        return r


def run(cmd, timeout=60.0, **kw):
    return Proc(cmd, **kw).finish(timeout)


def maildir_files(maildir, subs=("new", "cur")):
    out = []
    for sub in subs:
        d = os.path.join(maildir, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, n) for n in sorted(os.listdir(d))]
    return out


def maildir_messages(maildir):
    """Contents of every message in new/ and cur/."""
    res = []
    for p in maildir_files(maildir):
        with open(p, "rb") as f:
            res.append(f.read())
    return res


def base_name(path):
    """A Maildir file's unique name without its ":2,FLAGS" info part."""
    return os.path.basename(path).split(":", 1)[0]
