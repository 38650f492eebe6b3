"""A small scripted POP3 server that can misbehave, for tests.

It records every byte it receives (per connection, before and after any TLS
upgrade) so a test can assert what a client did or did not send.

    with FakePOP3(capa=["USER", "UIDL"]) as srv:        # no STLS offered
        ... run the client against 127.0.0.1:srv.port ...
        assert b"PASS" not in srv.received_all()

Knobs:
    tls         None (plain; STLS possible) or "implicit"
    certfile, keyfile   the server certificate for TLS / STLS
    capa        the CAPA lines (STLS is only offered when listed)
    stls_reply  the reply to STLS; TLS starts only when it begins with "+OK"
    inject      bytes sent in the same write right after the STLS reply
    greeting    the greeting line (None: send nothing and stall)
    messages    message contents (bytes, LF line ends) served by STAT/UIDL/
                LIST/RETR/TOP; DELE + QUIT removes them
    password    accepted by PASS and AUTH PLAIN (any user)
    stall_on    command verbs ("RETR", ...) at which the server stops
                answering until release() (or stop())
    uids        UIDL strings (default "fake-<n>")
    list_sizes  sizes LIST reports (default: the true ones)
    on_retr     callable(conn, index, payload) that sends the RETR answer
                itself (payload: "+OK" line and encoded message); return
                False to stop serving the connection
    dele_keeps  DELE answers +OK but nothing is ever removed
    capa_tls    the CAPA lines once TLS is up (default: capa)
    context     an ssl.SSLContext to serve TLS with instead of one made
                from certfile/keyfile (e.g. one offering only TLS 1.0)
    script      {VERB: reply} played instead of the normal handling of VERB:
                a str is sent as one line (CRLF added), bytes as they are,
                a callable(conn, command) does it itself and returns False
                to end the session
    downgrade   RETR and TOP replace every non-ASCII byte of the header by
                "?", as servers without RFC 6856 UTF-8 mode may, unless the
                client sent UTF8 (accepted in the AUTHORIZATION state when
                a CAPA line "UTF8" is offered)
    greeting may also be a callable(conn), which plays the greeting itself
    and returns False to end the session.
"""

import base64
import socket
import ssl
import threading
import time


def downgrade_header(data):
    """data with each non-ASCII byte of its header replaced by "?"."""
    head, sep, body = data.partition(b"\n\n")
    return bytes(b if b < 0x80 else 0x3F for b in head) + sep + body


def pop3_encode(data):
    """The RETR payload for data: CRLF line ends, dot-stuffed, terminated."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for ln in lines:
        if ln.endswith(b"\r"):
            ln = ln[:-1]
        if ln.startswith(b"."):
            ln = b"." + ln
        out.append(ln + b"\r\n")
    out.append(b".\r\n")
    return b"".join(out)


class _Conn:
    def __init__(self, srv, sock):
        self.srv = srv
        self.sock = sock
        self.buf = b""
        self.record = bytearray()
        srv._records.append(self.record)
        self.tls = False
        self.utf8 = False

    def recv_line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.record += data
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self, text):
        self.send(text + "\r\n")

    def start_tls(self):
        # Bytes the client sent before the handshake would be misread as TLS.
        if self.buf:
            self.srv.early_data.append(self.buf)
        self.buf = b""
        self.sock.settimeout(self.srv.timeout)
        self.sock = self.srv._ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True


class FakePOP3:
    def __init__(self, tls=None, certfile=None, keyfile=None,
                 capa=("USER", "UIDL", "TOP", "SASL PLAIN"),
                 stls_reply="+OK Begin TLS negotiation", inject=b"",
                 greeting="+OK fake POP3 ready", messages=(), password="secret",
                 stall_on=(), uids=None, host="127.0.0.1", timeout=60.0,
                 list_sizes=None, on_retr=None, dele_keeps=False, capa_tls=None,
                 context=None, script=None, downgrade=False):
        self.tls = tls
        self.capa = list(capa)
        self.capa_tls = list(capa_tls) if capa_tls is not None else self.capa
        self.script = {k.upper(): v for k, v in (script or {}).items()}
        self.stls_reply = stls_reply
        self.inject = inject
        self.greeting = greeting
        self.password = password
        self.stall_on = {s.upper() for s in stall_on}
        self.list_sizes = list(list_sizes) if list_sizes else None
        self.on_retr = on_retr
        self.dele_keeps = dele_keeps
        self.downgrade = downgrade
        self.host = host
        self.timeout = timeout
        self.lock = threading.Lock()
        self.messages = [m if isinstance(m, bytes) else m.encode() for m in messages]
        self.uids = list(uids) if uids else [f"fake-{i + 1}" for i in range(len(self.messages))]
        self.commands = []          # decoded command lines, all connections
        self.early_data = []        # bytes a client sent between STLS and the handshake
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
        """Lets a stalled session go on."""
        self._release.set()

    # ---- what was received --------------------------------------------------

    def received(self):
        """Bytes received, one bytes object per connection (TLS decrypted)."""
        return [bytes(r) for r in self._records]

    def received_all(self):
        return b"".join(self.received())

    def verbs(self):
        return [c.split(" ", 1)[0].upper() for c in self.commands]

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

    def _session(self, c):
        if self.greeting is None:
            self._wait_release()
            return
        if callable(self.greeting):
            if self.greeting(c) is False:
                return
        else:
            c.send(self.greeting + b"\r\n" if isinstance(self.greeting, bytes)
                   else self.greeting + "\r\n")
        user = None
        authed = False
        deleted = set()
        while not self._stop.is_set():
            raw = c.recv_line()
            if raw is None:
                return
            cmd = raw.decode("latin-1")
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
                    if reply(c, cmd) is False:
                        return
                else:
                    c.send(reply + "\r\n" if isinstance(reply, str) else reply)
                continue
            with self.lock:
                msgs = list(self.messages)
                uids = list(self.uids)
            if verb == "CAPA":
                capa = self.capa_tls if c.tls else self.capa
                c.send("+OK capability list follows\r\n"
                       + "".join(x + "\r\n" for x in capa) + ".\r\n")
            elif verb == "STLS":
                if c.tls or self._ctx is None:
                    c.line("-ERR STLS not available")
                    continue
                if self.stls_reply.startswith("+OK"):
                    c.send(self.stls_reply.encode() + b"\r\n" + self.inject)
                    c.start_tls()
                else:
                    c.send(self.stls_reply.encode() + b"\r\n" + self.inject)
            elif verb == "UTF8":
                offered = any(x.split(" ")[0].upper() == "UTF8"
                              for x in (self.capa_tls if c.tls else self.capa))
                if offered and not authed:
                    c.utf8 = True
                    c.line("+OK UTF8 enabled")
                else:
                    c.line("-ERR UTF8 not available")
            elif verb == "USER":
                user = parts[1] if len(parts) > 1 else ""
                c.line("+OK")
            elif verb == "PASS":
                if user is not None and cmd[5:] == self.password:
                    authed = True
                    c.line("+OK logged in")
                else:
                    c.line("-ERR [AUTH] authentication failed")
            elif verb == "AUTH":
                if len(parts) >= 2 and parts[1].upper() == "PLAIN":
                    if len(parts) >= 3:
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
                        authed = True
                        c.line("+OK logged in")
                    else:
                        c.line("-ERR [AUTH] authentication failed")
                else:
                    c.line("-ERR unsupported mechanism")
            elif verb == "QUIT":
                if authed and deleted and not self.dele_keeps:
                    with self.lock:
                        keep = [i for i in range(len(self.messages)) if i not in deleted]
                        self.messages = [self.messages[i] for i in keep]
                        self.uids = [self.uids[i] for i in keep]
                c.line("+OK bye")
                return
            elif not authed:
                c.line("-ERR not authenticated")
            elif verb == "NOOP":
                c.line("+OK")
            elif verb == "RSET":
                deleted.clear()
                c.line("+OK")
            elif verb == "STAT":
                live = [i for i in range(len(msgs)) if i not in deleted]
                size = sum(len(pop3_encode(msgs[i])) - 3 for i in live)
                c.line(f"+OK {len(live)} {size}")
            elif verb in ("UIDL", "LIST"):
                def val(i):
                    if verb == "UIDL":
                        return uids[i]
                    if self.list_sizes:
                        return str(self.list_sizes[i])
                    return str(len(pop3_encode(msgs[i])) - 3)
                if len(parts) > 1:
                    i = self._index(parts[1], msgs, deleted)
                    if i is None:
                        c.line("-ERR no such message")
                    else:
                        c.line(f"+OK {i + 1} {val(i)}")
                else:
                    c.send("+OK\r\n" + "".join(f"{i + 1} {val(i)}\r\n" for i in range(len(msgs))
                                               if i not in deleted) + ".\r\n")
            elif verb in ("RETR", "TOP"):
                i = self._index(parts[1] if len(parts) > 1 else "", msgs, deleted)
                if i is None:
                    c.line("-ERR no such message")
                    continue
                data = msgs[i]
                if self.downgrade and not c.utf8:
                    data = downgrade_header(data)
                if verb == "TOP":
                    n = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
                    head, sep, body = data.partition(b"\n\n")
                    data = head + sep + b"".join(body.splitlines(True)[:n])
                payload = b"+OK message follows\r\n" + pop3_encode(data)
                if verb == "RETR" and self.on_retr:
                    if self.on_retr(c, i, payload) is False:
                        return
                    continue
                c.send(payload)
            elif verb == "DELE":
                i = self._index(parts[1] if len(parts) > 1 else "", msgs, deleted)
                if i is None:
                    c.line("-ERR no such message")
                else:
                    deleted.add(i)
                    c.line("+OK deleted")
            else:
                c.line("-ERR unknown command")

    @staticmethod
    def _index(arg, msgs, deleted):
        if not arg.isdigit():
            return None
        i = int(arg) - 1
        if i < 0 or i >= len(msgs) or i in deleted:
            return None
        return i
