"""A small scripted IMAP server that can misbehave, for tests.

Like fakepop3, it records every byte it receives (per connection, TLS
decrypted) so a test can assert what a client did or did not send.

    with FakeIMAP(caps=["IMAP4rev1", "AUTH=PLAIN"]) as srv:   # no STARTTLS
        ... run the client against 127.0.0.1:srv.port ...
        assert b"LOGIN" not in srv.received_all()

Knobs:
    tls             None (plain; STARTTLS possible) or "implicit"
    certfile, keyfile   the server certificate for TLS / STARTTLS
    caps            capabilities before TLS (STARTTLS is only offered when
                    listed; LOGINDISABLED likewise)
    caps_tls        capabilities once TLS is up (default: caps without
                    STARTTLS and LOGINDISABLED)
    greeting        the greeting line without CRLF ("* OK ..." or
                    "* PREAUTH ..."; None: send nothing and stall)
    starttls_reply  the text after the tag in the reply to STARTTLS; TLS
                    starts only when it begins with "OK"
    inject          bytes sent in the same write right after that reply
    messages        message contents (bytes, LF line ends; sent with CRLF)
                    in the one folder INBOX, UIDs 1..n
    flags           per message, a list of flags (default none)
    password        accepted by LOGIN and AUTHENTICATE PLAIN (any user)
    uidvalidity     of INBOX
    stall_on        command names ("UID", "SELECT", ...) at which the server
                    stops answering until release() (or stop())
    ghost_folders   more folder names LIST returns and SELECT refuses (NO
                    [NONEXISTENT]), as when another client deletes them
                    between the two
    extra_folders   empty folders LIST returns before INBOX (names as bytes
                    or str, sent as literals, so any byte but CR and LF
                    goes) and SELECT accepts
    on_fetch        callable(server, conn, index, uid, data) called for each
                    message a UID FETCH of BODY[] returns; it sends the FETCH
                    response itself (data: the message, CRLF); return False
                    to stop serving the connection
    context         an ssl.SSLContext to serve TLS with instead of one made
                    from certfile/keyfile (e.g. one offering only TLS 1.0)
    script          {COMMAND: reply} played instead of the normal handling
                    of COMMAND: a str (or a list of them) is sent line by
                    line with "{tag}" replaced by the command's tag, a
                    callable(conn, tag, command) does it itself and returns
                    False to end the session
    caps_auth       capabilities once logged in (default: as before login),
                    in the tagged OK of LOGIN/AUTHENTICATE and later
    downgrade       BODY[] replaces every non-ASCII byte of the header by "?",
                    as servers may without RFC 6855, unless the client enabled
                    UTF8=ACCEPT (ENABLE works when the capability is listed)
    utf8_folder     a folder name (str) LIST returns besides INBOX, holding
                    the same messages: in modified UTF-7, or in UTF-8 once
                    UTF8=ACCEPT is enabled; SELECT takes it only in the form
                    that matches
    greeting may also be a callable(conn), which plays the greeting itself
    and returns False to end the session.
"""

import base64
import re
import socket
import ssl
import threading
import time

from imaptext import crlf, mutf7


def downgrade_header(data):
    """data with each non-ASCII byte of its header replaced by "?"."""
    m = re.search(rb"\r?\n\r?\n", data)
    cut = m.start() if m else len(data)
    return bytes(b if b < 0x80 else 0x3F for b in data[:cut]) + data[cut:]


def quote(s):
    if s is None:
        return "NIL"
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header_field(data, name):
    head = data.split(b"\n\n", 1)[0]
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*(.*(?:\n[ \t].*)*)", head)
    if not m:
        return None
    return re.sub(rb"\r?\n[ \t]", b" ", m.group(1)).strip().decode("utf-8", "replace")


def envelope(data):
    """A minimal ENVELOPE: date, subject, from (name and address), message-id."""
    frm = header_field(data, "From")
    from_part = "NIL"
    if frm:
        m = re.match(r"\s*(.*?)\s*<([^@>]*)@([^>]*)>", frm)
        if m:
            from_part = f"(({quote(m.group(1) or None)} NIL {quote(m.group(2))} "\
                        f"{quote(m.group(3))}))"
        elif "@" in frm:
            mb, host = frm.strip().split("@", 1)
            from_part = f"((NIL NIL {quote(mb)} {quote(host)}))"
    return (f"({quote(header_field(data, 'Date'))} {quote(header_field(data, 'Subject'))} "
            f"{from_part} {from_part} {from_part} NIL NIL NIL NIL "
            f"{quote(header_field(data, 'Message-ID'))})")


def parse_set(spec, maxuid):
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        lo = maxuid if lo == "*" else int(lo)
        hi = lo if not hi else (maxuid if hi == "*" else int(hi))
        if lo > hi:
            lo, hi = hi, lo
        out.update(range(lo, hi + 1))
    return out


class _Conn:
    def __init__(self, srv, sock):
        self.srv = srv
        self.sock = sock
        self.buf = b""
        self.record = bytearray()
        srv._records.append(self.record)
        self.tls = False
        self.extra = False          # an extra (empty) folder is selected
        self.utf8 = False
        self.authed = False

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.record += data
        self.buf += data
        return True

    def recv_line(self):
        while b"\n" not in self.buf:
            if not self._fill():
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def recv_bytes(self, n):
        while len(self.buf) < n:
            if not self._fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self, text):
        self.send(text + "\r\n")

    def start_tls(self):
        if self.buf:
            self.srv.early_data.append(self.buf)
        self.buf = b""
        self.sock.settimeout(self.srv.timeout)
        self.sock = self.srv._ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True


class FakeIMAP:
    def __init__(self, tls=None, certfile=None, keyfile=None,
                 caps=("IMAP4rev1", "STARTTLS", "AUTH=PLAIN", "SASL-IR", "UIDPLUS"),
                 caps_tls=None, greeting="* OK fake IMAP ready",
                 starttls_reply="OK Begin TLS negotiation now", inject=b"",
                 messages=(), flags=None, password="secret", uidvalidity=4242,
                 stall_on=(), host="127.0.0.1", timeout=60.0, on_fetch=None,
                 context=None, script=None, ghost_folders=(), extra_folders=(),
                 downgrade=False, utf8_folder=None, caps_auth=None):
        self.tls = tls
        self.caps = list(caps)
        self.script = {k.upper(): v for k, v in (script or {}).items()}
        if caps_tls is None:
            caps_tls = [c for c in self.caps if c.upper() not in ("STARTTLS", "LOGINDISABLED")]
        self.caps_tls = list(caps_tls)
        self.greeting = greeting
        self.starttls_reply = starttls_reply
        self.inject = inject
        self.password = password
        self.uidvalidity = uidvalidity
        self.stall_on = {s.upper() for s in stall_on}
        self.on_fetch = on_fetch
        self.ghost_folders = list(ghost_folders)
        self.extra_folders = [f if isinstance(f, bytes) else f.encode() for f in extra_folders]
        self.downgrade = downgrade
        self.utf8_folder = utf8_folder
        self.caps_auth = list(caps_auth) if caps_auth is not None else None
        self.host = host
        self.timeout = timeout
        self.lock = threading.Lock()
        self.messages = [m if isinstance(m, bytes) else m.encode() for m in messages]
        self.flags = [list(f) for f in flags] if flags else [[] for _ in self.messages]
        self.uids = list(range(1, len(self.messages) + 1))
        self.commands = []          # decoded command lines (tag stripped), all connections
        self.early_data = []        # bytes a client sent between STARTTLS and the handshake
        self.tls_errors = []
        self.connections = 0
        self.stalled = threading.Event()
        self._release = threading.Event()
        self._records = []
        self._stop = threading.Event()
        self._threads = []
        self._ctx = context
        if context is None and certfile:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._ctx.load_cert_chain(certfile, keyfile)
        elif context is None and tls == "implicit":
            raise ValueError("implicit TLS needs certfile and keyfile (or context)")

    # ---- life cycle ---------------------------------------------------------

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._lsock = socket.socket(fam, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((self.host, 0))
        self._lsock.listen(16)
        self._lsock.settimeout(0.2)
        self.port = self._lsock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        self._release.set()
        for t in self._threads:
            t.join(5)
        self._lsock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def release(self):
        self._release.set()

    # ---- what was received --------------------------------------------------

    def received(self):
        return [bytes(r) for r in self._records]

    def received_all(self):
        return b"".join(self.received())

    def verbs(self):
        """Command names, upper case; "UID FETCH" etc. for UID commands."""
        out = []
        for c in self.commands:
            parts = c.split(" ")
            v = parts[0].upper()
            if v == "UID" and len(parts) > 1:
                v += " " + parts[1].upper()
            out.append(v)
        return out

    # ---- serving ------------------------------------------------------------

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                s, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, s):
        s.settimeout(self.timeout)
        c = _Conn(self, s)
        try:
            if self.tls == "implicit":
                c.start_tls()
            self._session(c)
        except (OSError, ssl.SSLError, ValueError) as e:
            self.tls_errors.append(repr(e))
        finally:
            try:
                c.sock.close()
            except OSError:
                pass

    def _wait_release(self):
        self.stalled.set()
        deadline = time.monotonic() + self.timeout
        while not self._release.is_set() and time.monotonic() < deadline:
            self._release.wait(0.1)

    def _read_command(self, c):
        """One command line with its literals ({n} and {n+}) joined in."""
        line = c.recv_line()
        if line is None:
            return None
        while True:
            m = re.search(rb"\{(\d+)(\+?)\}$", line)
            if not m:
                return line
            if not m.group(2):
                c.line("+ go ahead")
            lit = c.recv_bytes(int(m.group(1)))
            rest = c.recv_line()
            if lit is None or rest is None:
                return None
            line = line[:m.start()] + b'"' + lit + b'"' + rest

    def _caps(self, c):
        if c.authed and self.caps_auth is not None:
            return " ".join(self.caps_auth)
        return " ".join(self.caps_tls if c.tls else self.caps)

    def _session(self, c):
        if self.greeting is None:
            self._wait_release()
            return
        if callable(self.greeting):
            if self.greeting(c) is False:
                return
            greeting = b""
        else:
            greeting = self.greeting if isinstance(self.greeting, bytes) \
                else self.greeting.encode()
            c.send(greeting + b"\r\n")
        authed = c.authed = greeting.upper().startswith(b"* PREAUTH")
        selected = False
        while not self._stop.is_set():
            raw = self._read_command(c)
            if raw is None:
                return
            text = raw.decode("latin-1")
            tag, _, cmd = text.partition(" ")
            with self.lock:
                self.commands.append(cmd)
            parts = cmd.split(" ")
            verb = parts[0].upper()
            if verb in self.stall_on:
                self._wait_release()
                if self._stop.is_set():
                    return
            if verb in self.script:
                reply = self.script[verb]
                if callable(reply):
                    if reply(c, tag, cmd) is False:
                        return
                    continue
                for ln in [reply] if isinstance(reply, str) else reply:
                    c.line(ln.replace("{tag}", tag))
                continue
            if verb == "CAPABILITY":
                c.line(f"* CAPABILITY {self._caps(c)}")
                c.line(f"{tag} OK CAPABILITY completed")
            elif verb == "NOOP":
                c.line(f"{tag} OK NOOP completed")
            elif verb == "LOGOUT":
                c.line("* BYE logging out")
                c.line(f"{tag} OK LOGOUT completed")
                return
            elif verb == "STARTTLS":
                if c.tls or self._ctx is None or "STARTTLS" not in [x.upper() for x in self.caps]:
                    c.line(f"{tag} BAD STARTTLS not available")
                    continue
                c.send(f"{tag} {self.starttls_reply}\r\n".encode() + self.inject)
                if self.starttls_reply.upper().startswith("OK"):
                    c.start_tls()
            elif verb == "LOGIN":
                if "LOGINDISABLED" in self._caps(c).upper().split():
                    c.line(f"{tag} NO [PRIVACYREQUIRED] LOGIN disabled")
                    continue
                args = re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', cmd[6:])
                vals = [a or b for a, b in args]
                if len(vals) == 2 and vals[1] == self.password:
                    authed = c.authed = True
                    c.line(f"{tag} OK [CAPABILITY {self._caps(c)}] logged in")
                else:
                    c.line(f"{tag} NO [AUTHENTICATIONFAILED] authentication failed")
            elif verb == "AUTHENTICATE":
                mech = parts[1].upper() if len(parts) > 1 else ""
                if mech != "PLAIN" or f"AUTH={mech}" not in self._caps(c).upper().split():
                    c.line(f"{tag} NO unsupported mechanism")
                    continue
                if len(parts) > 2:
                    resp = parts[2]
                else:
                    c.line("+ ")
                    r = c.recv_line()
                    if r is None:
                        return
                    resp = r.decode("latin-1")
                try:
                    fields = base64.b64decode(resp).split(b"\0")
                except ValueError:
                    fields = []
                if len(fields) == 3 and fields[2].decode("latin-1") == self.password:
                    authed = c.authed = True
                    c.line(f"{tag} OK [CAPABILITY {self._caps(c)}] logged in")
                else:
                    c.line(f"{tag} NO [AUTHENTICATIONFAILED] authentication failed")
            elif not authed:
                c.line(f"{tag} BAD not authenticated")
            elif verb == "ENABLE":
                want = [x.upper() for x in parts[1:]]
                if "UTF8=ACCEPT" in want and "UTF8=ACCEPT" in self._caps(c).upper().split():
                    c.utf8 = True
                    c.line("* ENABLED UTF8=ACCEPT")
                c.line(f"{tag} OK ENABLE completed")
            elif verb == "ID":
                c.line(f"{tag} OK {verb} completed")
            elif verb == "NAMESPACE":
                c.line('* NAMESPACE (("" "/")) NIL NIL')
                c.line(f"{tag} OK NAMESPACE completed")
            elif verb in ("LIST", "LSUB"):
                for x in self.extra_folders:
                    c.send(f'* {verb} (\\HasNoChildren) "/" {{{len(x)}}}\r\n'.encode() + x
                           + b"\r\n")
                c.line(f'* {verb} (\\HasNoChildren) "/" INBOX')
                for g in self.ghost_folders:
                    c.line(f'* {verb} (\\HasNoChildren) "/" {g}')
                if self.utf8_folder:
                    name = self.utf8_folder if c.utf8 else mutf7(self.utf8_folder)
                    c.send(f'* {verb} (\\HasNoChildren) "/" "{name}"\r\n'.encode())
                c.line(f"{tag} OK {verb} completed")
            elif verb in ("SELECT", "EXAMINE"):
                box = cmd.split(" ", 1)[1].strip('"') if " " in cmd else ""
                if self.utf8_folder:
                    want = self.utf8_folder.encode() if c.utf8 else mutf7(self.utf8_folder).encode()
                    if box.encode("latin-1") == want:
                        box = "INBOX"
                if box.encode("latin-1") in self.extra_folders:
                    c.line("* 0 EXISTS")
                    c.line(f"* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid")
                    c.line("* OK [UIDNEXT 1] predicted next UID")
                    c.extra = True
                    selected = True
                    c.line(f"{tag} OK [READ-ONLY] {verb} completed")
                    continue
                c.extra = False
                if box.upper() != "INBOX":
                    c.line(f"{tag} NO [NONEXISTENT] no such mailbox")
                    continue
                with self.lock:
                    n = len(self.messages)
                    nxt = (self.uids[-1] + 1) if self.uids else 1
                c.line(f"* {n} EXISTS")
                c.line("* 0 RECENT")
                c.line("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)")
                c.line(f"* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid")
                c.line(f"* OK [UIDNEXT {nxt}] predicted next UID")
                selected = True
                rw = "READ-ONLY" if verb == "EXAMINE" else "READ-WRITE"
                c.line(f"{tag} OK [{rw}] {verb} completed")
            elif verb == "CLOSE":
                selected = False
                c.line(f"{tag} OK CLOSE completed")
            elif not selected:
                c.line(f"{tag} BAD no mailbox selected")
            elif verb == "EXPUNGE":
                with self.lock:
                    i = 0
                    while i < len(self.uids):
                        if "\\Deleted" in self.flags[i]:
                            c.line(f"* {i + 1} EXPUNGE")
                            del self.uids[i], self.messages[i], self.flags[i]
                        else:
                            i += 1
                c.line(f"{tag} OK EXPUNGE completed")
            elif verb == "UID" and len(parts) > 2 and c.extra:
                c.line(f"{tag} OK UID {parts[1].upper()} completed")
            elif verb == "UID" and len(parts) > 2:
                self._uid_command(c, tag, parts[1].upper(), parts[2:])
            else:
                c.line(f"{tag} BAD unknown command")

    INTERNALDATE = "25-Nov-2025 10:00:00 +0000"

    @staticmethod
    def _matches(args, uid, flags, maxuid):
        """The SEARCH keys tests need, ANDed: ALL, [UN]SEEN, [UN]DELETED,
        [UN]FLAGGED, [UN]ANSWERED, BEFORE/SINCE date, UID set, a bare set."""
        date = time.strptime(FakeIMAP.INTERNALDATE.split()[0], "%d-%b-%Y")
        toks = [t.upper() for t in args if t]
        i = 0
        while i < len(toks):
            t = toks[i]
            if t in ("ALL", "CHARSET"):
                i += 2 if t == "CHARSET" else 1
                continue
            neg = t.startswith("UN")
            name = "\\" + (t[2:] if neg else t).capitalize()
            if t in ("SEEN", "UNSEEN", "DELETED", "UNDELETED", "FLAGGED", "UNFLAGGED",
                     "ANSWERED", "UNANSWERED"):
                if (name in flags) == neg:
                    return False
            elif t in ("BEFORE", "SINCE") and i + 1 < len(toks):
                d = time.strptime(toks[i + 1].strip('"').title(), "%d-%b-%Y")
                if (t == "BEFORE" and not date < d) or (t == "SINCE" and not date >= d):
                    return False
                i += 1
            elif t == "UID" and i + 1 < len(toks):
                if uid not in parse_set(toks[i + 1], maxuid):
                    return False
                i += 1
            elif re.fullmatch(r"[0-9*:,]+", t):
                if uid not in parse_set(t, maxuid):
                    return False
            i += 1
        return True

    def _uid_command(self, c, tag, sub, args):
        with self.lock:
            uids = list(self.uids)
            msgs = list(self.messages)
            flags = [list(f) for f in self.flags]
        maxuid = uids[-1] if uids else 0
        if sub == "FETCH":
            want = parse_set(args[0], maxuid) if uids else set()
            items = " ".join(args[1:]).upper()
            for i, uid in enumerate(uids):
                if uid not in want:
                    continue
                data = crlf(msgs[i])
                if self.downgrade and not c.utf8 and "BODY" in items:
                    data = downgrade_header(data)
                out = [f"UID {uid}"]
                if "FLAGS" in items:
                    out.append(f"FLAGS ({' '.join(flags[i])})")
                if "RFC822.SIZE" in items:
                    out.append(f"RFC822.SIZE {len(data)}")
                if "INTERNALDATE" in items:
                    out.append(f'INTERNALDATE "{self.INTERNALDATE}"')
                if "ENVELOPE" in items:
                    out.append(f"ENVELOPE {envelope(msgs[i])}")
                head = f"* {i + 1} FETCH ({' '.join(out)}"
                if "BODY" in items and "[]" in items and self.on_fetch:
                    if self.on_fetch(self, c, i, uid, data) is False:
                        raise ConnectionAbortedError("on_fetch ended the session")
                elif "BODY" in items and "[]" in items:
                    c.send(f"{head} BODY[] {{{len(data)}}}\r\n".encode() + data + b")\r\n")
                    if "PEEK" not in items and "\\Seen" not in flags[i]:
                        with self.lock:
                            self.flags[i].append("\\Seen")
                else:
                    c.line(head + ")")
            c.line(f"{tag} OK UID FETCH completed")
        elif sub == "SEARCH":
            res = [str(uid) for i, uid in enumerate(uids)
                   if self._matches(args, uid, flags[i], maxuid)]
            c.line("* SEARCH" + "".join(" " + u for u in res))
            c.line(f"{tag} OK UID SEARCH completed")
        elif sub == "STORE":
            want = parse_set(args[0], maxuid) if uids else set()
            fl = re.findall(r"\\\w+", " ".join(args[2:]))
            with self.lock:
                for i, uid in enumerate(self.uids):
                    if uid in want and args[1].upper().startswith("+FLAGS"):
                        for f in fl:
                            if f not in self.flags[i]:
                                self.flags[i].append(f)
            c.line(f"{tag} OK UID STORE completed")
        elif sub == "EXPUNGE":
            if "UIDPLUS" not in self._caps(c).upper().split():
                c.line(f"{tag} BAD UID EXPUNGE needs UIDPLUS")
                return
            want = parse_set(args[0], maxuid) if uids else set()
            with self.lock:
                i = 0
                while i < len(self.uids):
                    if self.uids[i] in want and "\\Deleted" in self.flags[i]:
                        c.line(f"* {i + 1} EXPUNGE")
                        del self.uids[i], self.messages[i], self.flags[i]
                    else:
                        i += 1
            c.line(f"{tag} OK UID EXPUNGE completed")
        else:
            c.line(f"{tag} BAD unknown UID command")
