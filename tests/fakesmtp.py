"""A small scripted SMTP submission server that can misbehave, for tests.

In process, as the other fake servers:

    with FakeSMTP(tls="implicit", certfile=..., keyfile=..., record="/tmp/rec.jsonl",
                  user="u", password="secret", dot_tempfail=1) as srv:
        ... run the client against 127.0.0.1:srv.port ...
        assert srv.transactions[0]["final"]["code"] == 451

or as a program (prints "PORT <n>" on stdout once listening, serves until
SIGTERM/SIGINT):

    python3 tests/fakesmtp.py --tls starttls --cert C --key K --record R \
        [--script script.json] [--KNOB VALUE ...]

A script file is a JSON object of the knobs below (the command line's
--knob options override it; dashes and underscores are the same).

Knobs (behaviours):
    tls             "implicit" or "starttls" (plain until STARTTLS)
    certfile, keyfile   the server certificate; context: an SSLContext instead
    user, password  what AUTH PLAIN and AUTH LOGIN accept (user None: any user)
    auth_required   MAIL before a successful AUTH gets 530 (default True)
    greeting        the greeting (str, sent with CRLF; bytes as they are)
    hostname        the name in the greeting and EHLO reply
    extensions      the EHLO keywords (default: PIPELINING, SIZE <size_limit>,
                    8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, AUTH PLAIN LOGIN,
                    and STARTTLS before TLS in starttls mode)
    size_limit      SIZE's number (default 10485760); a message over it gets
                    552 5.3.4 to the final dot; SIZE=n over it gets 552 to MAIL
    no_starttls     STARTTLS is not advertised (and answered 502)
    starttls_reply  the reply to STARTTLS (default "220 2.0.0 Ready to start TLS");
                    TLS starts only when it begins with "220"
    inject          bytes sent in the same write right after the STARTTLS reply
    dot_tempfail    the first N messages get 451 4.3.0 to the final dot
    dot_permfail    every message gets 554 5.6.0 to the final dot
    refuse_rcpt     list of addresses refused with 550 5.1.1
    tempfail_rcpt   list of addresses refused with 450 4.2.1
    drop_after_dot  the connection is closed after the final dot, no reply
                    (true: every message; an int N: the first N messages)
    slow_dot        seconds to sleep before replying to the final dot (the
                    transaction is recorded, with "final": null, before the sleep)
    reply_421_at    a verb ("MAIL", "RCPT", "DATA", "DOT", "EHLO", "AUTH")
                    answered "421 4.3.2 shutting down" and the connection closed
    script          {VERB: reply} replacing the normal handling of VERB
                    (str: one line, CRLF added; bytes: as is; callable(conn, cmd)
                    returning False to end the session)
    timeout         socket timeout in seconds (default 60)

Record (file `record`, JSON lines, one object per event, flushed at once;
also kept in srv.events, transactions in srv.transactions):
    {"event": "connect", "conn": n}
    {"event": "command", "conn": n, "line": "MAIL FROM:<a@b> SIZE=12", "tls": bool}
        (AUTH lines and SASL answers recorded as "AUTH PLAIN ***" / "***")
    {"event": "auth", "conn": n, "mech": "PLAIN", "user": "u", "ok": bool}
    {"event": "starttls", "conn": n, "early": "<latin-1 bytes sent before the handshake>"}
    {"event": "transaction", "conn": n, "tls": bool, "authenticated_as": "u",
     "mail_from": "a@b", "mail_params": "SIZE=12 BODY=8BITMIME",
     "mail_reply": "250 2.1.0 Ok",
     "rcpts": [{"to": "x@y", "params": "", "reply": "250 2.1.5 Ok"}, ...],
     "data_reply": "354 ...",
     "data": "<base64 of the message, dot-stuffing undone, without the final dot>",
     "raw": "<base64 of the bytes received after 354, final '.\\r\\n' included>",
     "final": {"code": 250, "reply": "250 2.0.0 Ok: queued as N"} or null (dropped,
              or not replied yet: slow_dot)}
    {"event": "final", "conn": n, "index": k, "code": 250, "reply": "..."}
        (written after a slow_dot sleep, when the reply is given)
    {"event": "close", "conn": n}
"""

import argparse
import base64
import json
import signal
import socket
import ssl
import sys
import threading
import time


def smtp_unstuff(raw):
    """The message in raw (bytes after 354 up to and including CRLF.CRLF), undotted."""
    body = raw[:-3] if raw.endswith(b".\r\n") else raw
    out = []
    for ln in body.split(b"\r\n"):
        out.append(ln[1:] if ln.startswith(b".") else ln)
    return b"\r\n".join(out)


class _Conn:
    def __init__(self, srv, sock, n):
        self.srv = srv
        self.sock = sock
        self.n = n
        self.buf = b""
        self.tls = False

    def recv_more(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def recv_line(self):
        while b"\n" not in self.buf:
            if not self.recv_more():
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def recv_data(self):
        """Bytes up to and including the CRLF.CRLF end of DATA (raw), or None on close."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 3
                break
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                end = i + 5
                break
            start = max(0, len(self.buf) - 4)
            if not self.recv_more():
                return None
        raw, self.buf = self.buf[:end], self.buf[end:]
        return raw

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self, text):
        self.send(text + "\r\n")

    def start_tls(self):
        early = self.buf
        self.buf = b""
        self.srv._log({"event": "starttls", "conn": self.n, "early": early.decode("latin-1")})
        if early:
            self.srv.early_data.append(early)
        self.sock = self.srv._ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True


class _Closed(Exception):
    pass


class FakeSMTP:
    def __init__(self, tls="implicit", certfile=None, keyfile=None, context=None,
                 user=None, password="secret", auth_required=True,
                 greeting=None, hostname="fake.smtp.test", extensions=None,
                 size_limit=10485760, no_starttls=False,
                 starttls_reply="220 2.0.0 Ready to start TLS", inject=b"",
                 dot_tempfail=0, dot_permfail=False, refuse_rcpt=(), tempfail_rcpt=(),
                 drop_after_dot=False, slow_dot=0, reply_421_at=None, script=None,
                 record=None, host="127.0.0.1", timeout=60.0):
        if tls not in ("implicit", "starttls"):
            raise ValueError("tls must be implicit or starttls")
        self.tls = tls
        self.user = user
        self.password = password
        self.auth_required = auth_required
        self.hostname = hostname
        self.greeting = greeting if greeting is not None else \
            f"220 {hostname} ESMTP fake ready"
        self.extensions = list(extensions) if extensions is not None else None
        self.size_limit = size_limit
        self.no_starttls = no_starttls
        self.starttls_reply = starttls_reply
        self.inject = inject.encode("latin-1") if isinstance(inject, str) else inject
        self.dot_tempfail = int(dot_tempfail)
        self.dot_permfail = dot_permfail
        self.refuse_rcpt = {a.lower() for a in refuse_rcpt}
        self.tempfail_rcpt = {a.lower() for a in tempfail_rcpt}
        self.drop_after_dot = drop_after_dot
        self.slow_dot = float(slow_dot)
        self.reply_421_at = reply_421_at.upper() if reply_421_at else None
        self.script = {k.upper(): v for k, v in (script or {}).items()}
        self.host = host
        self.timeout = timeout
        self.lock = threading.Lock()
        self.events = []
        self.transactions = []
        self.commands = []
        self.early_data = []
        self.tls_errors = []
        self.connections = 0
        self.messages_seen = 0      # final dots received, all connections
        self._record_path = record
        self._record = open(record, "a", encoding="utf-8") if record else None
        self._stop = threading.Event()
        self._threads = []
        self._ctx = context
        if context is None:
            if not certfile:
                raise ValueError("TLS needs certfile and keyfile (or context)")
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._ctx.load_cert_chain(certfile, keyfile)

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
        for t in self._threads:
            t.join(5)
        self._lsock.close()
        if self._record:
            self._record.close()
            self._record = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- record -------------------------------------------------------------

    def _log(self, ev):
        with self.lock:
            self.events.append(ev)
            if self._record:
                self._record.write(json.dumps(ev) + "\n")
                self._record.flush()

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
            t = threading.Thread(target=self._serve, args=(s, self.connections), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, s, n):
        s.settimeout(self.timeout)
        c = _Conn(self, s, n)
        self._log({"event": "connect", "conn": n})
        try:
            if self.tls == "implicit":
                c.start_tls()
            self._session(c)
        except _Closed:
            pass
        except (OSError, ssl.SSLError, ValueError) as e:
            self.tls_errors.append(repr(e))
        finally:
            try:
                c.sock.close()
            except OSError:
                pass
            self._log({"event": "close", "conn": n})

    def _ehlo_lines(self, c):
        if self.extensions is not None:
            ext = list(self.extensions)
        else:
            ext = ["PIPELINING", f"SIZE {self.size_limit}", "8BITMIME", "SMTPUTF8",
                   "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"]
        if self.tls == "starttls" and not c.tls and not self.no_starttls:
            ext.insert(0, "STARTTLS")
        return [self.hostname] + ext

    def _check_auth(self, c, mech, user, pw):
        ok = (self.user is None or user == self.user) and pw == self.password
        self._log({"event": "auth", "conn": c.n, "mech": mech, "user": user, "ok": ok})
        return ok

    def _recv_cmd(self, c, secret=False):
        raw = c.recv_line()
        if raw is None:
            raise _Closed()
        cmd = raw.decode("latin-1")
        shown = "***" if secret else cmd
        if not secret and cmd[:5].upper() == "AUTH ":
            shown = " ".join(cmd.split(" ")[:2]) + (" ***" if len(cmd.split(" ")) > 2 else "")
        with self.lock:
            self.commands.append(shown)
        self._log({"event": "command", "conn": c.n, "line": shown, "tls": c.tls})
        return cmd

    def _auth(self, c, cmd):
        parts = cmd.split(" ")
        mech = parts[1].upper() if len(parts) > 1 else ""
        try:
            if mech == "PLAIN":
                if len(parts) > 2:
                    resp = parts[2]
                else:
                    c.line("334 ")
                    resp = self._recv_cmd(c, secret=True)
                if resp == "*":
                    c.line("501 5.7.0 Authentication cancelled")
                    return None
                f = base64.b64decode(resp, validate=True).split(b"\0")
                if len(f) != 3:
                    raise ValueError("bad PLAIN")
                user, pw = f[1].decode("utf-8"), f[2].decode("utf-8")
            elif mech == "LOGIN":
                if len(parts) > 2:
                    user = base64.b64decode(parts[2], validate=True).decode("utf-8")
                else:
                    c.line("334 VXNlcm5hbWU6")
                    user = base64.b64decode(self._recv_cmd(c, secret=True),
                                            validate=True).decode("utf-8")
                c.line("334 UGFzc3dvcmQ6")
                pw = base64.b64decode(self._recv_cmd(c, secret=True),
                                      validate=True).decode("utf-8")
            else:
                c.line("504 5.5.4 Unrecognized authentication type")
                return None
        except (ValueError, UnicodeDecodeError):
            c.line("501 5.5.2 Cannot decode response")
            return None
        if self._check_auth(c, mech, user, pw):
            c.line("235 2.7.0 Authentication successful")
            return user
        c.line("535 5.7.8 Error: authentication failed")
        return None

    def _maybe_421(self, c, verb):
        if self.reply_421_at == verb:
            c.line("421 4.3.2 fake.smtp.test shutting down")
            raise _Closed()

    def _session(self, c):
        if isinstance(self.greeting, bytes):
            c.send(self.greeting)
        else:
            c.line(self.greeting)
        authed = None
        txn = None
        while not self._stop.is_set():
            cmd = self._recv_cmd(c)
            parts = cmd.split(" ")
            verb = parts[0].upper()
            if verb in self.script:
                reply = self.script[verb]
                if callable(reply):
                    if reply(c, cmd) is False:
                        return
                else:
                    c.send(reply + "\r\n" if isinstance(reply, str) else reply)
                continue
            if verb in ("EHLO", "HELO", "AUTH", "MAIL", "RCPT", "DATA"):
                self._maybe_421(c, verb)
            if verb == "EHLO":
                lines = self._ehlo_lines(c)
                c.send("".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n")
                txn = None
            elif verb == "HELO":
                c.line(f"250 {self.hostname}")
                txn = None
            elif verb == "STARTTLS":
                if c.tls or self.tls != "starttls" or self.no_starttls:
                    c.line("502 5.5.1 STARTTLS not available")
                    continue
                c.send(self.starttls_reply.encode() + b"\r\n" + self.inject)
                if self.starttls_reply.startswith("220"):
                    c.start_tls()
                    authed = None
                    txn = None
            elif verb == "AUTH":
                if authed is not None:
                    c.line("503 5.5.1 Already authenticated")
                elif not c.tls:
                    c.line("538 5.7.11 Encryption required")
                else:
                    authed = self._auth(c, cmd)
            elif verb == "NOOP":
                c.line("250 2.0.0 Ok")
            elif verb == "RSET":
                txn = None
                c.line("250 2.0.0 Ok")
            elif verb == "QUIT":
                c.line("221 2.0.0 Bye")
                return
            elif verb == "MAIL":
                txn = self._mail(c, cmd, authed, txn)
            elif verb == "RCPT":
                self._rcpt(c, cmd, txn)
            elif verb == "DATA":
                if self._data(c, txn) is False:
                    return
                txn = None
            else:
                c.line("502 5.5.2 Error: command not recognized")

    @staticmethod
    def _path(arg, prefix):
        """The address and parameters of "FROM:<a> P=V" (None if malformed)."""
        if arg[:len(prefix)].upper() != prefix:
            return None
        rest = arg[len(prefix):].lstrip(" ")
        if not rest.startswith("<") or ">" not in rest:
            return None
        addr, params = rest[1:].split(">", 1)
        return addr, params.strip()

    def _mail(self, c, cmd, authed, txn):
        if txn is not None:
            c.line("503 5.5.1 Error: nested MAIL command")
            return txn
        if self.auth_required and authed is None:
            c.line("530 5.7.0 Authentication required")
            return None
        p = self._path(cmd[5:], "FROM:")
        if p is None:
            c.line("501 5.5.4 Syntax: MAIL FROM:<address>")
            return None
        for prm in p[1].split():
            k, _, v = prm.partition("=")
            if k.upper() == "SIZE" and v.isdigit() and self.size_limit \
                    and int(v) > self.size_limit:
                c.line("552 5.3.4 Message size exceeds fixed limit")
                return None
        reply = "250 2.1.0 Ok"
        c.line(reply)
        return {"event": "transaction", "conn": c.n, "tls": c.tls, "authenticated_as": authed,
                "mail_from": p[0], "mail_params": p[1], "mail_reply": reply, "rcpts": [],
                "data_reply": None, "data": None, "raw": None, "final": None}

    def _rcpt(self, c, cmd, txn):
        if txn is None:
            c.line("503 5.5.1 Error: need MAIL command")
            return
        p = self._path(cmd[5:], "TO:")
        if p is None:
            c.line("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        if p[0].lower() in self.refuse_rcpt:
            reply = f"550 5.1.1 <{p[0]}>: Recipient address rejected: User unknown"
        elif p[0].lower() in self.tempfail_rcpt:
            reply = f"450 4.2.1 <{p[0]}>: Recipient address temporarily unavailable"
        else:
            reply = "250 2.1.5 Ok"
        txn["rcpts"].append({"to": p[0], "params": p[1], "reply": reply})
        c.line(reply)

    def _data(self, c, txn):
        if txn is None:
            c.line("503 5.5.1 Error: need MAIL command")
            return True
        if not any(r["reply"].startswith("2") for r in txn["rcpts"]):
            c.line("554 5.5.1 Error: no valid recipients")
            return True
        txn["data_reply"] = "354 End data with <CR><LF>.<CR><LF>"
        c.line(txn["data_reply"])
        raw = c.recv_data()
        if raw is None:
            self._log(dict(txn, final=None, raw=None, data=None, cut=True))
            raise _Closed()
        with self.lock:
            k = self.messages_seen
            self.messages_seen += 1
        data = smtp_unstuff(raw)
        txn["raw"] = base64.b64encode(raw).decode()
        txn["data"] = base64.b64encode(data).decode()
        if self.reply_421_at == "DOT":
            txn["final"] = {"code": 421, "reply": "421 4.3.2 shutting down"}
            self._log(txn)
            with self.lock:
                self.transactions.append(txn)
            c.line("421 4.3.2 fake.smtp.test shutting down")
            return False
        drop = self.drop_after_dot
        if drop is True or (not isinstance(drop, bool) and k < int(drop)):
            self._log(txn)
            with self.lock:
                self.transactions.append(txn)
            return False
        if k < self.dot_tempfail:
            reply = "451 4.3.0 Error: queue file write error"
        elif self.dot_permfail:
            reply = "554 5.6.0 Error: message content rejected"
        elif self.size_limit and len(data) > self.size_limit:
            reply = "552 5.3.4 Error: message file too big"
        else:
            reply = f"250 2.0.0 Ok: queued as FAKE{k + 1}"
        if self.slow_dot > 0:
            self._log(txn)
            with self.lock:
                self.transactions.append(txn)
            time.sleep(self.slow_dot)
            txn["final"] = {"code": int(reply[:3]), "reply": reply}
            self._log({"event": "final", "conn": c.n, "index": k, "code": int(reply[:3]),
                       "reply": reply})
        else:
            txn["final"] = {"code": int(reply[:3]), "reply": reply}
            self._log(txn)
            with self.lock:
                self.transactions.append(txn)
        c.line(reply)
        return True


def load_record(path):
    """The events of a record file (a list of dicts; data/raw decoded to bytes)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for ln in f:
            ev = json.loads(ln)
            for k in ("data", "raw"):
                if ev.get(k) is not None:
                    ev[k] = base64.b64decode(ev[k])
            out.append(ev)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="scripted fake SMTP submission server")
    ap.add_argument("--script", help="JSON file of knobs")
    ap.add_argument("--tls", choices=("implicit", "starttls"))
    ap.add_argument("--cert", dest="certfile")
    ap.add_argument("--key", dest="keyfile")
    ap.add_argument("--record")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--size-limit", type=int)
    ap.add_argument("--no-starttls", action="store_true", default=None)
    ap.add_argument("--starttls-reply")
    ap.add_argument("--inject")
    ap.add_argument("--dot-tempfail", type=int)
    ap.add_argument("--dot-permfail", action="store_true", default=None)
    ap.add_argument("--refuse-rcpt", action="append")
    ap.add_argument("--tempfail-rcpt", action="append")
    ap.add_argument("--drop-after-dot", type=int, help="N: the first N messages (0: none)")
    ap.add_argument("--slow-dot", type=float)
    ap.add_argument("--reply-421-at")
    ap.add_argument("--extensions", help="comma-separated EHLO keywords (\"\": none)")
    ap.add_argument("--host")
    a = vars(ap.parse_args(argv))
    knobs = {}
    script = a.pop("script")
    if script:
        with open(script, encoding="utf-8") as f:
            knobs = {k.replace("-", "_"): v for k, v in json.load(f).items()}
    if a["extensions"] is not None:
        a["extensions"] = [x for x in a["extensions"].split(",") if x]
    knobs.update({k: v for k, v in a.items() if v is not None})
    srv = FakeSMTP(**knobs).start()
    print(f"PORT {srv.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
