"""Scripted IMAP, POP3 and SMTP servers over implicit TLS that speak SCRAM
(RFC 5802, RFC 7677) on the server side, correctly or wrongly on purpose,
and record what the client sent, for tests of SCRAM misbehaviour and of
channel binding (-PLUS) that a real server here cannot show.

    with FakeScram("imap", certfile=C, keyfile=K, user="u", password="pw",
                   scenario="bad_signature") as srv:
        ... run the client against 127.0.0.1:srv.port ...
        a = srv.auths[0]
        assert a["gs2"] == "y,," and a["cancelled"]

or as a program (prints "PORT <n>" once listening, serves until SIGTERM):

    python3 tests/fakescram.py --proto imap --cert C --key K --user u \
        --password pw --scenario bad_nonce

Knobs:
    proto           "imap", "pop3" or "smtp"
    certfile, keyfile   the server certificate (implicit TLS); its SHA-256
                    is the tls-server-end-point binding (RFC 5929 section
                    4.1: SHA-256 for a certificate signed with SHA-256, as
                    the test CA's are)
    tls_max         the highest TLS version ("1.2", the default, so the
                    client binds with tls-server-end-point, which this
                    server can compute; "1.3" lets it pick tls-exporter,
                    which Python cannot export, so -PLUS then fails)
    user, password  what the SCRAM exchange checks
    mechs           the mechanisms advertised (default: SCRAM-SHA-256
                    and SCRAM-SHA-1); "-PLUS" ones are also implemented
    plus            the server supports channel binding (default: it does
                    when it advertises a -PLUS mechanism); with plus and no
                    -PLUS advertised the list was stripped, and a client's
                    GS2 flag "y" is refused (RFC 5802 section 6)
    stripped_reply  how that refusal looks: "no" (the login fails at once,
                    after the client-first message) or "e" (server-final
                    e=server-does-support-channel-binding)
    scenario        the server's behaviour (may be changed between runs):
        ok              correct SCRAM (server-final v= right)
        bad_signature   v= is a wrong server signature
        no_v            server-final is an empty challenge (no v=), then OK
        early_ok        OK right after the client-final message, no server-final
        bad_nonce       the server nonce does not extend the client's
        short_nonce     the server nonce is the client's, nothing added
        iter1           i=1
        iter4095        i=4095
        e_invalid_proof server-final e=invalid-proof, then a refusal
    messages        POP3 only: message contents (bytes, CRLF) in the
                    maildrop (default none); IMAP's INBOX is always empty
    record          a JSON-lines file, one auth record per line (also
                    srv.auths)

What the server checks in the client's answers is recorded, not enforced,
where enforcing would hide a client's mistake: after a bad server-first
message the exchange goes on to a login if the client goes on (the test
then sees the success it must not get).

Auth record (srv.auths, one dict per AUTH command):
    proto, mech         the protocol and the mechanism the client chose
    ir                  whether the client-first came as an initial response
    gs2                 the GS2 header as sent ("n,,", "y,,", "p=tls-...,,")
    cbflag, authzid     its parts
    user                the user name (unescaped)
    client_final        whether the client sent a client-final message
    c                   the c= attribute, decoded (bytes as latin-1)
    proof               the p= attribute (base64), as sent
    cb_ok               c= is the GS2 header plus, for p=, the right
                        channel binding data
    nonce_ok            r= of the client-final is the server's nonce
    proof_ok            p= is the right client proof
    final_answer        what the client answered the server-final with:
                        "" (empty, as it must after a good v=), "*"
                        (cancel), another string, or None (not asked)
    cancelled           the client sent "*" at some step
    result              "ok" (logged in), "refused" or "cancelled"
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import sys
import threading

SCENARIOS = ("ok", "bad_signature", "no_v", "early_ok", "bad_nonce", "short_nonce",
             "iter1", "iter4095", "e_invalid_proof")

ITERATIONS = {"iter1": 1, "iter4095": 4095}


def _b64(data):
    return base64.b64encode(data).decode()


def _b64d(text):
    return base64.b64decode(text, validate=True)


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def scram_keys(hname, password, salt, iterations):
    """(StoredKey, ServerKey, ClientKey) of RFC 5802 section 3."""
    salted = hashlib.pbkdf2_hmac(hname, password.encode(), salt, iterations)
    ckey = hmac.new(salted, b"Client Key", hname).digest()
    skey = hmac.new(salted, b"Server Key", hname).digest()
    return hashlib.new(hname, ckey).digest(), skey, ckey


def cert_binding(certfile):
    """tls-server-end-point data (RFC 5929) of the first certificate in
    certfile, for a certificate signed with SHA-256."""
    with open(certfile, encoding="ascii") as f:
        pem = f.read()
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem[:end])).digest()


def _attrs(text):
    """The "k=v" attributes of a SCRAM message, in order (v may hold '=')."""
    out = []
    for part in text.split(","):
        k, sep, v = part.partition("=")
        out.append((k, v if sep else None))
    return out


class _Refuse(Exception):
    """The exchange ends with a refusal carrying this text."""


class ScramExchange:
    """The server side of one SCRAM exchange. step(bytes) returns
    ("challenge", bytes), ("ok", None) or ("refuse", text)."""

    def __init__(self, srv, mech, rec):
        self.srv = srv
        self.mech = mech
        self.hname = "sha256" if mech.startswith("SCRAM-SHA-256") else "sha1"
        self.plus = mech.endswith("-PLUS")
        self.rec = rec
        self.scenario = srv.scenario
        self.state = "first"
        self.verdict = None

    def step(self, data):
        try:
            return getattr(self, "_" + self.state)(data.decode("utf-8"))
        except (_Refuse, UnicodeDecodeError, ValueError) as e:
            return "refuse", str(e) or "malformed SCRAM message"

    def _first(self, text):
        cbflag, sep1, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep1 or not sep2:
            raise _Refuse("malformed client-first message")
        self.gs2 = f"{cbflag},{authzid},"
        attrs = dict(_attrs(bare))
        user = (attrs.get("n") or "").replace("=2C", ",").replace("=3D", "=")
        self.rec.update(gs2=self.gs2, cbflag=cbflag, authzid=authzid, user=user)
        self.cnonce = attrs.get("r") or ""
        self.bare = bare
        if self.plus != cbflag.startswith("p="):
            raise _Refuse("channel binding flag does not match the mechanism")
        if cbflag.startswith("p=") and cbflag != "p=tls-server-end-point":
            raise _Refuse("unsupported channel binding type")
        stripped = cbflag == "y" and self.srv.plus
        if stripped and self.srv.stripped_reply == "no":
            raise _Refuse("channel binding downgrade detected")
        self.stripped = stripped
        if self.scenario == "bad_nonce":
            self.nonce = _b64(os.urandom(18))
        elif self.scenario == "short_nonce":
            self.nonce = self.cnonce
        else:
            self.nonce = self.cnonce + _b64(os.urandom(18))
        self.salt = os.urandom(16)
        self.iters = ITERATIONS.get(self.scenario, 4096)
        self.server_first = f"r={self.nonce},s={_b64(self.salt)},i={self.iters}"
        self.state = "final"
        return "challenge", self.server_first.encode()

    def _final(self, text):
        self.rec["client_final"] = True
        without, sep, proof = text.rpartition(",p=")
        if not sep:
            raise _Refuse("client-final message without a proof")
        attrs = dict(_attrs(without))
        c = _b64d(attrs.get("c") or "")
        want = self.gs2.encode() + (self.srv.cb_data if self.plus else b"")
        stored, skey, _ = scram_keys(self.hname, self.srv.password, self.salt, self.iters)
        auth_msg = f"{self.bare},{self.server_first},{without}".encode()
        csig = hmac.new(stored, auth_msg, self.hname).digest()
        try:
            ckey = _xor(_b64d(proof), csig)
            proof_ok = hashlib.new(self.hname, ckey).digest() == stored
        except ValueError:
            proof_ok = False
        self.rec.update(c=c.decode("latin-1"), proof=proof, cb_ok=c == want,
                        nonce_ok=attrs.get("r") == self.nonce, proof_ok=proof_ok)
        if not (c == want and attrs.get("r") == self.nonce and proof_ok
                and self.rec["user"] == self.srv.user):
            raise _Refuse("authentication failed")
        ssig = hmac.new(skey, auth_msg, self.hname).digest()
        self.state = "done"
        if self.stripped:
            self.verdict = "refuse"
            return "challenge", b"e=server-does-support-channel-binding"
        if self.scenario == "early_ok":
            return "ok", None
        if self.scenario == "bad_signature":
            return "challenge", b"v=" + _b64(_xor(ssig, b"\x01" * len(ssig))).encode()
        if self.scenario == "no_v":
            return "challenge", b""
        if self.scenario == "e_invalid_proof":
            self.verdict = "refuse"
            return "challenge", b"e=invalid-proof"
        return "challenge", b"v=" + _b64(ssig).encode()

    def _done(self, text):
        self.rec["final_answer"] = text
        if self.verdict == "refuse":
            raise _Refuse("authentication failed")
        return "ok", None


class _Conn:
    def __init__(self, srv, sock):
        self.srv = srv
        self.sock = sock
        self.buf = b""
        self.record = bytearray()
        srv._records.append(self.record)

    def recv_line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.record += data
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("latin-1")

    def line(self, text):
        self.sock.sendall(text.encode() + b"\r\n")


class _Closed(Exception):
    pass


# The per-protocol wire forms of a SASL exchange (RFC 3501 6.2.2, RFC 5034,
# RFC 4954): how a challenge, a success, a refusal and a cancel are said.
WIRE = {
    "imap": {"chal": "+ {}", "ok": "{tag} OK [CAPABILITY IMAP4rev1] logged in",
             "no": "{tag} NO [AUTHENTICATIONFAILED] {text}",
             "cancel": "{tag} BAD authentication cancelled"},
    "pop3": {"chal": "+ {}", "ok": "+OK logged in", "no": "-ERR [AUTH] {text}",
             "cancel": "-ERR authentication cancelled"},
    "smtp": {"chal": "334 {}", "ok": "235 2.7.0 Authentication successful",
             "no": "535 5.7.8 {text}", "cancel": "501 5.7.0 Authentication cancelled"},
}


class FakeScram:
    def __init__(self, proto, certfile, keyfile, user="scramuser", password="secret",
                 scenario="ok", mechs=("SCRAM-SHA-256", "SCRAM-SHA-1"), plus=None,
                 stripped_reply="no", tls_max="1.2", messages=(), record=None,
                 host="127.0.0.1", timeout=30.0):
        if proto not in WIRE:
            raise ValueError("proto must be imap, pop3 or smtp")
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario}")
        self.proto = proto
        self.user = user
        self.password = password
        self.scenario = scenario
        self.mechs = [m.upper() for m in mechs]
        self.plus = any(m.endswith("-PLUS") for m in self.mechs) if plus is None else plus
        self.stripped_reply = stripped_reply
        self.messages = [m if isinstance(m, bytes) else m.encode() for m in messages]
        self.host = host
        self.timeout = timeout
        self.cb_data = cert_binding(certfile)
        self.lock = threading.Lock()
        self.auths = []
        self.commands = []
        self.errors = []
        self.connections = 0
        self._records = []
        self._record = open(record, "a", encoding="utf-8") if record else None
        self._stop = threading.Event()
        self._threads = []
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls_max == "1.2":
            self._ctx.maximum_version = ssl.TLSVersion.TLSv1_2
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

    # ---- what was received --------------------------------------------------

    def received_all(self):
        """Every byte received on every connection (TLS decrypted)."""
        with self.lock:
            return b"".join(bytes(r) for r in self._records)

    def secret_seen(self, secret):
        """Whether secret appeared in what the client sent: as it is, or
        inside any base64 token of a line (as PLAIN or LOGIN carry it)."""
        raw = self.received_all()
        s = secret.encode()
        if s in raw:
            return True
        for line in raw.split(b"\n"):
            for tok in line.strip().split(b" "):
                try:
                    if s in base64.b64decode(tok, validate=True):
                        return True
                except ValueError:
                    continue
        return False

    def _log(self, rec):
        with self.lock:
            self.auths.append(rec)
        if self._record:
            self._record.write(json.dumps(rec) + "\n")
            self._record.flush()

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
        try:
            c = _Conn(self, self._ctx.wrap_socket(s, server_side=True))
        except (OSError, ssl.SSLError) as e:
            self.errors.append(repr(e))
            s.close()
            return
        try:
            getattr(self, "_" + self.proto)(c)
        except _Closed:
            pass
        except (OSError, ssl.SSLError, ValueError) as e:
            self.errors.append(repr(e))
        finally:
            try:
                c.sock.close()
            except OSError:
                pass

    def _cmd(self, c):
        line = c.recv_line()
        if line is None:
            raise _Closed()
        with self.lock:
            self.commands.append(line)
        return line

    def _sasl(self, c, tag, mech, initial):
        """One AUTH exchange; True when the client logged in."""
        w = WIRE[self.proto]
        rec = {"proto": self.proto, "mech": mech, "ir": initial is not None,
               "client_final": False, "final_answer": None, "cancelled": False}
        if mech not in self.mechs and not (mech.endswith("-PLUS") and self.plus
                                           and mech[:-5] in self.mechs):
            rec["result"] = "refused"
            self._log(rec)
            c.line(w["no"].format(tag=tag, text="unsupported mechanism"))
            return False
        ex = ScramExchange(self, mech, rec)
        if initial is None:
            c.line(w["chal"].format(""))
            initial = self._cmd(c)
        resp = "" if initial == "=" else initial
        while True:
            if resp == "*":
                rec.update(cancelled=True, result="cancelled")
                if ex.state == "done":
                    rec["final_answer"] = "*"
                self._log(rec)
                c.line(w["cancel"].format(tag=tag))
                return False
            try:
                data = _b64d(resp)
            except ValueError:
                data = b"\xff"
            kind, out = ex.step(data)
            if kind == "refuse":
                rec["result"] = "refused"
                self._log(rec)
                c.line(w["no"].format(tag=tag, text=out))
                return False
            if kind == "ok":
                rec["result"] = "ok"
                self._log(rec)
                c.line(w["ok"].format(tag=tag))
                return True
            c.line(w["chal"].format(_b64(out)))
            resp = self._cmd(c)

    # ---- IMAP (RFC 3501) ----------------------------------------------------

    def _imap_caps(self):
        return "IMAP4rev1 SASL-IR UIDPLUS " + " ".join(f"AUTH={m}" for m in self.mechs)

    def _imap(self, c):
        c.line("* OK fake SCRAM IMAP ready")
        authed = selected = False
        while True:
            tag, _, cmd = self._cmd(c).partition(" ")
            parts = cmd.split(" ")
            verb = parts[0].upper()
            if verb == "CAPABILITY":
                c.line(f"* CAPABILITY {self._imap_caps()}")
                c.line(f"{tag} OK CAPABILITY completed")
            elif verb == "NOOP":
                c.line(f"{tag} OK NOOP completed")
            elif verb == "LOGOUT":
                c.line("* BYE logging out")
                c.line(f"{tag} OK LOGOUT completed")
                return
            elif verb == "AUTHENTICATE" and not authed and len(parts) > 1:
                authed = self._sasl(c, tag, parts[1].upper(),
                                    parts[2] if len(parts) > 2 else None)
            elif not authed:
                c.line(f"{tag} NO [AUTHENTICATIONFAILED] only SCRAM here")
            elif verb in ("ENABLE", "ID"):
                c.line(f"{tag} OK {verb} completed")
            elif verb == "NAMESPACE":
                c.line('* NAMESPACE (("" "/")) NIL NIL')
                c.line(f"{tag} OK NAMESPACE completed")
            elif verb in ("LIST", "LSUB"):
                c.line(f'* {verb} (\\HasNoChildren) "/" INBOX')
                c.line(f"{tag} OK {verb} completed")
            elif verb in ("SELECT", "EXAMINE") and len(parts) > 1 \
                    and parts[1].strip('"').upper() == "INBOX":
                c.line("* 0 EXISTS")
                c.line("* 0 RECENT")
                c.line("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)")
                c.line("* OK [UIDVALIDITY 1] UIDs valid")
                c.line("* OK [UIDNEXT 1] predicted next UID")
                selected = True
                c.line(f"{tag} OK [READ-WRITE] {verb} completed")
            elif verb in ("SELECT", "EXAMINE"):
                c.line(f"{tag} NO [NONEXISTENT] no such mailbox")
            elif verb in ("CLOSE", "UNSELECT") and selected:
                selected = False
                c.line(f"{tag} OK {verb} completed")
            elif verb == "UID" and selected and len(parts) > 1:
                if parts[1].upper() == "SEARCH":
                    c.line("* SEARCH")
                c.line(f"{tag} OK UID {parts[1].upper()} completed")
            else:
                c.line(f"{tag} BAD unknown command")

    # ---- POP3 (RFC 1939, RFC 5034) -------------------------------------------

    def _pop3(self, c):
        c.line("+OK fake SCRAM POP3 ready")
        msgs = list(self.messages)
        deleted = set()
        authed = False
        while True:
            cmd = self._cmd(c)
            parts = cmd.split(" ")
            verb = parts[0].upper()
            if verb == "CAPA":
                c.line("+OK capability list follows")
                for ln in ("UIDL", "TOP", "SASL " + " ".join(self.mechs), "."):
                    c.line(ln)
            elif verb == "QUIT":
                if authed:
                    with self.lock:
                        self.messages = [m for i, m in enumerate(msgs) if i not in deleted]
                c.line("+OK bye")
                return
            elif verb == "AUTH" and not authed and len(parts) > 1:
                authed = self._sasl(c, None, parts[1].upper(),
                                    parts[2] if len(parts) > 2 else None)
            elif not authed:
                c.line("-ERR [AUTH] only SCRAM here")
            elif verb == "STAT":
                live = [m for i, m in enumerate(msgs) if i not in deleted]
                c.line(f"+OK {len(live)} {sum(len(m) for m in live)}")
            elif verb in ("UIDL", "LIST") and len(parts) == 1:
                c.line("+OK listing follows")
                for i, m in enumerate(msgs):
                    if i not in deleted:
                        val = hashlib.sha1(m).hexdigest() if verb == "UIDL" else len(m)
                        c.line(f"{i + 1} {val}")
                c.line(".")
            elif verb in ("RETR", "DELE") and len(parts) == 2 and parts[1].isdigit() \
                    and 0 < int(parts[1]) <= len(msgs) and int(parts[1]) - 1 not in deleted:
                i = int(parts[1]) - 1
                if verb == "DELE":
                    deleted.add(i)
                    c.line("+OK deleted")
                    continue
                body = b"".join(b"." + ln if ln.startswith(b".") else ln
                                for ln in msgs[i].splitlines(keepends=True))
                c.sock.sendall(f"+OK {len(msgs[i])} octets\r\n".encode() + body + b".\r\n")
            elif verb == "NOOP":
                c.line("+OK")
            else:
                c.line("-ERR unknown command")

    # ---- SMTP submission (RFC 5321, RFC 4954) --------------------------------

    def _smtp(self, c):
        c.line("220 fake.scram.test ESMTP ready")
        authed = False
        data = False
        while True:
            cmd = self._cmd(c)
            if data:
                if cmd == ".":
                    data = False
                    c.line("250 2.0.0 Ok: queued")
                continue
            parts = cmd.split(" ")
            verb = parts[0].upper()
            if verb == "EHLO":
                c.sock.sendall(("250-fake.scram.test\r\n250-ENHANCEDSTATUSCODES\r\n"
                                "250-8BITMIME\r\n250 AUTH " + " ".join(self.mechs)
                                + "\r\n").encode())
            elif verb == "AUTH" and not authed and len(parts) > 1:
                authed = self._sasl(c, None, parts[1].upper(),
                                    parts[2] if len(parts) > 2 else None)
            elif verb == "QUIT":
                c.line("221 2.0.0 Bye")
                return
            elif verb in ("NOOP", "RSET"):
                c.line("250 2.0.0 Ok")
            elif not authed:
                c.line("530 5.7.0 Authentication required")
            elif verb in ("MAIL", "RCPT"):
                c.line("250 2.1.0 Ok")
            elif verb == "DATA":
                data = True
                c.line("354 End data with <CR><LF>.<CR><LF>")
            else:
                c.line("502 5.5.2 Error: command not recognized")


def main(argv=None):
    ap = argparse.ArgumentParser(description="scripted SCRAM server (IMAP, POP3, SMTP)")
    ap.add_argument("--proto", required=True, choices=sorted(WIRE))
    ap.add_argument("--cert", dest="certfile", required=True)
    ap.add_argument("--key", dest="keyfile", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--scenario", choices=SCENARIOS)
    ap.add_argument("--mechs", help="comma-separated mechanisms")
    ap.add_argument("--plus", action="store_true", default=None)
    ap.add_argument("--stripped-reply", choices=("no", "e"))
    ap.add_argument("--tls-max", choices=("1.2", "1.3"))
    ap.add_argument("--record")
    a = vars(ap.parse_args(argv))
    if a["mechs"] is not None:
        a["mechs"] = [x for x in a["mechs"].split(",") if x]
    srv = FakeScram(**{k: v for k, v in a.items() if v is not None}).start()
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
