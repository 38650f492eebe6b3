"""A private, throwaway Cyrus IMAP 3.6 for mailpull's integration tests (and
any bench that wants a second server): POP3 and IMAP, plain and implicit TLS,
on free loopback ports, with the helper interface of dovecot.Dovecot.

Usage:

    with Cyrus() as cy:
        user = cy.new_user()
        cy.add_messages(user, [b"Subject: hi\\n\\nbody\\n"])
        ... connect to 127.0.0.1:cy.pop3s_port, trusting cy.ca_file,
            with user / cy.password ...
        assert cy.count(user) == 0

Cyrus cannot be installed beside Dovecot (both provide imap-server), so
tests/deps.sh unpacks Debian's cyrus-common, cyrus-imapd, cyrus-pop3d and
sasl2-bin into ROOT (MAILPULL_CYRUS_ROOT, default
/var/cache/mailpull-test/cyrus), and the binaries run from there with
LD_LIBRARY_PATH pointing into it. Everything else lives in one work
directory: certificates, imapd.conf and cyrus.conf, the configdirectory,
the partition, the sasldb and the master's log. The master runs in the
foreground as our child (as root it drops to the CYRUS_USER account) and
is stopped by its PID.

Configuration that differs from Debian's on purpose:
    altnamespace, unixhierarchysep   yes: folders "Archive/2024", like Dovecot;
                                     a second IMAP port pair (imap_dot_port,
                                     imaps_dot_port) serves the same mail
                                     with Debian's defaults, "INBOX.Archive.2024"
    munge8bit: 0                     8-bit header bytes are stored as sent
    popminpoll: 0                    any number of POP3 logins per minute
    delete_mode, expunge_mode        immediate
    failedloginpause: 0              a wrong password is refused at once
    autocreate_quota: 0              a user's INBOX is created at first login
    no fsync (fsync=False, default)  like the Dovecot's mail_fsync = never: Cyrus
                                     fsyncs twice per message it stores, which
                                     costs more than the APPEND itself; its
                                     processes run with libeatmydata preloaded
    idled (cyrus.conf DAEMON)        IDLE hears of new mail at once; without it,
                                     imapd polls every imapidlepoll (60 s)

Users are SASL users in the private sasldb (saslpasswd2 with the realm
SERVERNAME, which is what Cyrus asks for) and all have the password
`self.password`; new_user() makes one. Messages are added with IMAP APPEND over
the plain loopback port, logged in as the user: many per command
(MULTIAPPEND with LITERAL+), so thousands load in a few seconds. Cyrus
stores messages with CRLF line ends; bodies() gives them back with LF, as
they were added.
"""

import glob
import itertools
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

from imaptext import crlf, from_mutf7, mutf7
from dovecot import (PASSWORD, PrivateServer, ensure_mail_user, free_port, make_ca,
                     make_server_cert, run, wait_port)

ROOT = os.environ.get("MAILPULL_CYRUS_ROOT", "/var/cache/mailpull-test/cyrus")
CYRUS_USER = "cyrustest"
SERVERNAME = "mailpull-cyrus"
# Messages per MULTIAPPEND command when loading many.
APPEND_BATCH = 500
# Turns fsync and friends into no-ops (Debian's libeatmydata1).
EATMYDATA = (glob.glob("/usr/lib/*-linux-gnu*/libeatmydata.so.1") or ["libeatmydata.so.1"])[0]

_seq = itertools.count()


def unavailable(root=ROOT):
    """Why Cyrus cannot run from root (None when it can)."""
    if not os.path.exists(os.path.join(root, ".complete")):
        return f"no unpacked Cyrus at {root} (run tests/deps.sh)"
    if os.geteuid() != 0:
        return "the private Cyrus needs root (it runs as its own user)"
    return None


def versions(root=ROOT):
    """"PACKAGE VERSION" lines of what deps.sh unpacked."""
    with open(os.path.join(root, ".versions")) as f:
        return [ln.strip() for ln in f if ln.strip()]


# ---- IMAP quoting ----------------------------------------------------------------

def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_date(t):
    """Unix seconds as an IMAP date-time (INTERNALDATE)."""
    return time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(t))


# ---- a small IMAP client ---------------------------------------------------------

class IMAPError(RuntimeError):
    pass


class Session:
    """One logged-in IMAP connection over the plain loopback port. Responses
    are lists of untagged replies, each a list of byte strings: the line's
    text pieces with the literals between them."""

    def __init__(self, host, port, user, password, timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rf = self.sock.makefile("rb")
        self.tags = itertools.count(1)
        greeting = self.rf.readline()
        if not greeting.startswith(b"* OK"):
            raise IMAPError(f"greeting: {greeting!r}")
        self.command(f"LOGIN {quote(user)} {quote(password)}")

    def _read_reply(self):
        parts = []
        while True:
            line = self.rf.readline()
            if not line:
                raise IMAPError("connection closed")
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if not m:
                parts.append(line.rstrip(b"\r\n"))
                return parts
            parts.append(line[:m.start()])
            parts.append(self.rf.read(int(m.group(1))))

    def send(self, cmd):
        """Sends a command (str, or bytes holding {N+} literals: LITERAL+,
        no waiting for continuations); returns its tag."""
        tag = f"c{next(self.tags)}"
        data = (tag + " ").encode() + (cmd.encode() if isinstance(cmd, str) else cmd)
        self.sock.sendall(data + b"\r\n")
        return tag

    def wait(self, tag):
        untagged = []
        while True:
            parts = self._read_reply()
            if parts[0].startswith(tag.encode() + b" "):
                status = parts[0][len(tag) + 1:]
                if not status.startswith(b"OK"):
                    raise IMAPError(f"{status.decode(errors='replace')}")
                return untagged
            untagged.append(parts)

    def command(self, cmd):
        return self.wait(self.send(cmd))

    def append(self, folder, messages, flags=None, dates=None):
        """MULTIAPPEND of messages (bytes) in one command."""
        pieces = [f"APPEND {quote(mutf7(folder))}".encode()]
        for i, m in enumerate(messages):
            m = crlf(m)
            fl = flags[i] if flags else None
            dt = dates[i] if dates else None
            pieces.append(b" ")
            if fl:
                pieces.append(f"({fl}) ".encode())
            if dt is not None:
                pieces.append(f'"{imap_date(dt)}" '.encode())
            pieces.append(f"{{{len(m)}+}}\r\n".encode() + m)
        return self.command(b"".join(pieces))

    def close(self):
        try:
            self.sock.sendall(b"z LOGOUT\r\n")
        except OSError:
            pass
        self.rf.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fetch_items(untagged):
    """{seq: {"UID": int, "FLAGS": [..], "RFC822.SIZE": int, "BODY": bytes}}
    from FETCH replies (only what we ask for)."""
    res = {}
    for parts in untagged:
        m = re.match(rb"\* (\d+) FETCH ", parts[0])
        if not m:
            continue
        text = b" ".join(p for i, p in enumerate(parts) if i % 2 == 0)
        item = {}
        u = re.search(rb"\bUID (\d+)", text)
        if u:
            item["UID"] = int(u.group(1))
        f = re.search(rb"\bFLAGS \(([^)]*)\)", text)
        if f:
            item["FLAGS"] = f.group(1).decode().split()
        s = re.search(rb"\bRFC822\.SIZE (\d+)", text)
        if s:
            item["RFC822.SIZE"] = int(s.group(1))
        if len(parts) > 1:
            item["BODY"] = parts[1]
        res[int(m.group(1))] = item
    return res


class Cyrus(PrivateServer):
    """A private Cyrus IMAP (POP3 + IMAP, plain and implicit TLS) on loopback."""

    name = "cyrus"

    def __init__(self, workdir=None, password=PASSWORD, root=ROOT, fsync=False):
        self._own_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="mailpull-cyrus-")
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.root = root
        self.password = password
        self.proc = None
        # What tests ask of dovecot.Dovecot, answered for this server.
        self.host = "127.0.0.1"
        self.wrong_host = None
        self.ipv6 = False
        self.addrs = ["127.0.0.1"]
        self.separator = "/"
        self.imapd_conf = os.path.join(self.workdir, "imapd.conf")
        self.imapd_dot_conf = os.path.join(self.workdir, "imapd-dot.conf")
        self.cyrus_conf = os.path.join(self.workdir, "cyrus.conf")
        self.log_path = os.path.join(self.workdir, "master.log")
        self.sasldb = os.path.join(self.workdir, "sasldb2")
        self.certdir = os.path.join(self.workdir, "certs")
        libs = glob.glob(os.path.join(root, "usr/lib/*-linux-gnu*"))
        self.env = dict(os.environ, LD_LIBRARY_PATH=":".join(libs))
        # Cyrus has no switch for it: fsync=False preloads libeatmydata.
        self.fsync = fsync or not os.path.exists(EATMYDATA)
        if not self.fsync:
            self.env["LD_PRELOAD"] = EATMYDATA
        self.users = set()
        self.start_seconds = None

    def bin(self, name):
        return os.path.join(self.root, "usr/lib/cyrus/bin", name)

    # ---- set-up -------------------------------------------------------------

    def _make_certs(self):
        os.makedirs(self.certdir, exist_ok=True)
        self.ca_file, ca_key = make_ca(self.certdir, "test", "mailpull Cyrus test CA")
        self.server_cert, self.server_key = make_server_cert(
            self.certdir, "server", self.ca_file, ca_key)
        for f in os.listdir(self.certdir):
            os.chmod(os.path.join(self.certdir, f), 0o644)
        os.chmod(self.certdir, 0o755)

    def _imapd_conf(self, netnews):
        w = self.workdir
        yes = "no" if netnews else "yes"
        return f"""# generated by tests/cyrus.py; private to {w}
configdirectory: {w}/conf
defaultpartition: default
partition-default: {w}/spool
servername: {SERVERNAME}
cyrus_user: {CYRUS_USER}
admins: cyradmin
altnamespace: {yes}
unixhierarchysep: {yes}
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self.sasldb}
sasl_mech_list: PLAIN LOGIN
failedloginpause: 0
popminpoll: 0
munge8bit: 0
reject8bit: 0
delete_mode: immediate
expunge_mode: immediate
autocreate_quota: 0
tls_server_cert: {self.server_cert}
tls_server_key: {self.server_key}
tls_versions: tls1_2 tls1_3
proc_path: {w}/run/proc
mboxname_lockpath: {w}/run/lock
idlesocket: {w}/run/idle
lmtpsocket: {w}/run/lmtp
notifysocket: {w}/run/notify
"""

    def _write_conf(self):
        pw = ensure_mail_user(CYRUS_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        # conf/socket: imapd binds its IDLE client socket there.
        for d in ("conf", "conf/socket", "spool", "run"):
            os.makedirs(os.path.join(self.workdir, d), exist_ok=True)
        used = set()
        ports = {}
        for name in ("pop3", "pop3s", "imap", "imaps", "imap_dot", "imaps_dot"):
            ports[name] = free_port(self.addrs, avoid=used)
            used.add(ports[name])
        self.pop3_port, self.pop3s_port = ports["pop3"], ports["pop3s"]
        self.imap_port, self.imaps_port = ports["imap"], ports["imaps"]
        self.imap_dot_port, self.imaps_dot_port = ports["imap_dot"], ports["imaps_dot"]
        with open(self.imapd_conf, "w") as f:
            f.write(self._imapd_conf(False))
        with open(self.imapd_dot_conf, "w") as f:
            f.write(self._imapd_conf(True))
        imapd, pop3d = self.bin("imapd"), self.bin("pop3d")
        c, d = self.imapd_conf, self.imapd_dot_conf
        h = self.host
        with open(self.cyrus_conf, "w") as f:
            f.write(f"""# generated by tests/cyrus.py
START {{
  recover cmd="{self.bin('ctl_cyrusdb')} -C {c} -r"
}}
SERVICES {{
  imap cmd="{imapd} -C {c}" listen="{h}:{self.imap_port}" prefork=0
  imaps cmd="{imapd} -s -C {c}" listen="{h}:{self.imaps_port}" prefork=0
  pop3 cmd="{pop3d} -C {c}" listen="{h}:{self.pop3_port}" prefork=0
  pop3s cmd="{pop3d} -s -C {c}" listen="{h}:{self.pop3s_port}" prefork=0
  imapdot cmd="{imapd} -C {d}" listen="{h}:{self.imap_dot_port}" prefork=0
  imapsdot cmd="{imapd} -s -C {d}" listen="{h}:{self.imaps_dot_port}" prefork=0
}}
EVENTS {{
}}
DAEMON {{
  idled cmd="{self.bin('idled')} -C {c}"
}}
""")
        for top, dirs, files in os.walk(self.workdir):
            for n in dirs + files:
                os.chown(os.path.join(top, n), self.uid, self.gid)
        os.chown(self.workdir, self.uid, self.gid)
        os.chmod(self.workdir, 0o755)

    def start(self, timeout=20.0):
        why = unavailable(self.root)
        if why:
            raise RuntimeError(why)
        t0 = time.monotonic()
        if not os.path.exists(os.path.join(self.certdir, "server.pem")):
            self._make_certs()
        else:
            self.ca_file = os.path.join(self.certdir, "test-ca.pem")
            self.server_cert = os.path.join(self.certdir, "server.pem")
            self.server_key = os.path.join(self.certdir, "server.key")
        self._write_conf()
        self.saslpasswd("cyradmin")
        open(self.log_path, "w").close()
        os.chown(self.log_path, self.uid, self.gid)
        self.proc = subprocess.Popen(
            [self.bin("master"), "-C", self.imapd_conf, "-M", self.cyrus_conf,
             "-p", os.path.join(self.workdir, "run", "master.pid"), "-D", "-L", self.log_path],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for port in (self.pop3_port, self.pop3s_port, self.imap_port, self.imaps_port,
                         self.imap_dot_port, self.imaps_dot_port):
                wait_port(self.host, port, timeout, self.proc)
            # The first login after a start takes half a second (databases
            # are made): pay it here, so that start_seconds says what a
            # start costs.
            Session(self.host, self.imap_port, "cyradmin", self.password).close()
        except Exception:
            out = self.log_text()
            self.stop()
            raise RuntimeError(f"cyrus did not start:\n{out}")
        self.start_seconds = time.monotonic() - t0
        return self


    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # ---- users ----------------------------------------------------------------

    def saslpasswd(self, user, password=None):
        """Creates (or sets the password of) a SASL user in the private sasldb."""
        pw = (password or self.password).encode()
        run([os.path.join(self.root, "usr/sbin/saslpasswd2"), "-p", "-c", "-f", self.sasldb,
             "-u", SERVERNAME, user], input=pw, env=self.env, user=self.uid, group=self.gid)

    def new_user(self, prefix="u"):
        """A user no other test has used with this server, able to log in
        with self.password (its INBOX appears at its first login)."""
        user = f"{prefix}{os.getpid()}x{next(_seq)}x{int(time.time() * 1000) % 100000}".lower()
        self.ensure_user(user)
        return user

    def ensure_user(self, user):
        if user not in self.users:
            self.saslpasswd(user)
            self.users.add(user)

    def session(self, user, dot=False):
        """A logged-in IMAP session of user (dot: in Debian's namespace)."""
        self.ensure_user(user)
        return Session(self.host, self.imap_dot_port if dot else self.imap_port, user,
                       self.password)

    # ---- mail -------------------------------------------------------------------

    def add_messages(self, user, messages, folder="INBOX", flags=None, dates=None):
        """Appends messages (bytes; LF or CRLF line ends) to folder, in that
        order, APPEND_BATCH per command. flags: a flag string per message;
        dates: Unix seconds per message (INTERNALDATE)."""
        messages = [m.encode() if isinstance(m, str) else m for m in messages]
        with self.session(user) as s:
            for i in range(0, len(messages), APPEND_BATCH):
                j = i + APPEND_BATCH
                s.append(folder, messages[i:j], flags and flags[i:j], dates and dates[i:j])

    def add_message_files(self, user, paths, folder="INBOX"):
        """Appends the messages in files (LF or CRLF line ends), in that
        order, APPEND_BATCH per command, reading one batch at a time: a
        large pristine set (the bench's) never sits in memory whole."""
        with self.session(user) as s:
            for i in range(0, len(paths), APPEND_BATCH):
                batch = []
                for p in paths[i:i + APPEND_BATCH]:
                    with open(p, "rb") as f:
                        batch.append(f.read())
                s.append(folder, batch)

    def copy_all(self, user, src, dst="INBOX"):
        """COPYs every message of src into dst, in one command. Within a
        partition Cyrus links the message files and copies their index
        records: far faster than appending them again, which makes a
        folder loaded once a cheap source of fresh INBOXes."""
        with self.session(user) as s:
            s.command(f"EXAMINE {quote(mutf7(src))}")
            s.command(f"COPY 1:* {quote(mutf7(dst))}")

    def add_message(self, user, data, mtime=None, folder="INBOX"):
        """One message; mtime (Unix seconds) becomes its INTERNALDATE."""
        self.add_messages(user, [data], folder, dates=None if mtime is None else [mtime])

    save_messages = add_messages

    def save_message(self, user, data, folder="INBOX"):
        self.add_messages(user, [data], folder)

    def create_mailbox(self, user, *names):
        """Creates folders ("Archive/2024"; Cyrus makes no parents). One
        that exists is left as it is."""
        with self.session(user) as s:
            for name in names:
                try:
                    s.command(f"CREATE {quote(mutf7(name))}")
                except IMAPError as e:
                    if "already exists" not in str(e).lower():
                        raise

    def delete_mailbox(self, user, name):
        with self.session(user) as s:
            s.command(f"DELETE {quote(mutf7(name))}")

    def mailboxes(self, user):
        """Folder names (UTF-8), sorted."""
        with self.session(user) as s:
            lines = s.command('LIST "" "*"')
        names = []
        for parts in lines:
            if len(parts) > 1:      # the name came as a literal
                names.append(parts[1].decode())
                continue
            m = re.match(rb'\* LIST \([^)]*\) (?:"[^"]*"|NIL) (.*)$', parts[0])
            if m:
                n = m.group(1).decode()
                names.append(n[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                             if n.startswith('"') else n)
        return sorted(from_mutf7(n) for n in names)

    def status(self, user, folder="INBOX"):
        """{"messages", "uidnext", "uidvalidity", "unseen"}: ints from Cyrus."""
        with self.session(user) as s:
            lines = s.command(f"STATUS {quote(mutf7(folder))} "
                              "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        text = b" ".join(parts[-1] for parts in lines).decode()
        return {k.lower(): int(v) for k, v in re.findall(r"([A-Z]+) (\d+)", text)}

    def count(self, user, folder="INBOX"):
        return self.status(user, folder)["messages"]

    def uidvalidity(self, user, folder="INBOX"):
        return self.status(user, folder)["uidvalidity"]

    def _fetch(self, user, folder, items):
        """FETCH items of every message in folder, in sequence order."""
        with self.session(user) as s:
            exists = 0
            for parts in s.command(f"EXAMINE {quote(mutf7(folder))}"):
                m = re.match(rb"\* (\d+) EXISTS", parts[0])
                if m:
                    exists = int(m.group(1))
            # Cyrus answers NO to FETCH 1:* in an empty folder.
            res = fetch_items(s.command(f"FETCH 1:* ({items})")) if exists else {}
        return [res[k] for k in sorted(res)]

    def bodies(self, user, folder="INBOX"):
        """The messages in folder, in UID order, with LF line ends."""
        return [m["BODY"].replace(b"\r\n", b"\n")
                for m in self._fetch(user, folder, "UID BODY.PEEK[]")]

    def _by_message_id(self, user, folder, want):
        out = {}
        for m in self._fetch(user, folder, f"UID {want}BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"):
            hdr = m["BODY"].decode("utf-8", "replace")
            mid = hdr.split(":", 1)[1].strip() if ":" in hdr else ""
            out[mid] = m
        return out

    def flags(self, user, folder="INBOX"):
        """{Message-ID: frozenset of flags} without \\Recent (session-bound)."""
        return {mid: frozenset(f for f in m["FLAGS"] if f != "\\Recent")
                for mid, m in self._by_message_id(user, folder, "FLAGS ").items()}

    def uids(self, user, folder="INBOX"):
        """{Message-ID: UID}."""
        return {mid: m["UID"] for mid, m in self._by_message_id(user, folder, "").items()}

    def add_flags(self, user, flags, folder="INBOX", query=("all",)):
        """Adds flags ("\\Seen \\Flagged") to the messages query selects:
        ("all",) or ("header", "Message-ID", "<id>"), as Dovecot's helper takes."""
        with self.session(user) as s:
            s.command(f"SELECT {quote(mutf7(folder))}")
            if tuple(q.lower() for q in query) == ("all",):
                uids = "1:*"
            elif len(query) == 3 and query[0].lower() == "header":
                hits = s.command(f"UID SEARCH HEADER {quote(query[1])} {quote(query[2])}")
                found = [n for p in hits for n in p[0].split()[2:]]
                if not found:
                    raise RuntimeError(f"no message matches {query!r} in {folder!r}")
                uids = b",".join(found).decode()
            else:
                raise ValueError(f"query {query!r} not supported")
            s.command(f"UID STORE {uids} +FLAGS.SILENT ({flags})")

    def flag_message(self, user, message_id, flags, folder="INBOX"):
        self.add_flags(user, flags, folder, ("header", "Message-ID", message_id))

    def recreate_mailbox(self, user, folder, messages, flags=None):
        """Deletes folder and creates it again holding messages (in that
        order, so UIDs are handed out anew). Cyrus gives the new folder a
        UIDVALIDITY above the old one's at once. flags: {Message-ID:
        "\\Seen ..."} to set again afterwards. Returns the new UIDVALIDITY."""
        if folder.upper() == "INBOX":
            raise ValueError("INBOX cannot be deleted")
        old = self.uidvalidity(user, folder)
        self.delete_mailbox(user, folder)
        self.create_mailbox(user, folder)
        new = self.uidvalidity(user, folder)
        if new == old:
            raise RuntimeError(f"UIDVALIDITY of {folder!r} stays {old}")
        self.add_messages(user, messages, folder)
        for mid, fl in (flags or {}).items():
            self.flag_message(user, mid, fl, folder)
        return new

    def expunge_all(self, user, folder="INBOX"):
        with self.session(user) as s:
            s.command(f"SELECT {quote(mutf7(folder))}")
            s.command("STORE 1:* +FLAGS.SILENT (\\Deleted)")
            s.command("EXPUNGE")


if __name__ == "__main__":
    # Manual use: start, print the connection data, wait for Ctrl-C.
    import sys
    with Cyrus() as cy:
        print(f"workdir {cy.workdir}\nca_file {cy.ca_file}\npassword {cy.password}\n"
              f"pop3s {cy.pop3s_port} pop3 {cy.pop3_port} imaps {cy.imaps_port} "
              f"imap {cy.imap_port} imaps-dot {cy.imaps_dot_port} imap-dot {cy.imap_dot_port}\n"
              f"started in {cy.start_seconds:.2f} s", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
        sys.exit(0)
