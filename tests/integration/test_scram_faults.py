"""SCRAM (RFC 5802, RFC 7677) against servers that get it wrong on purpose,
and channel binding (-PLUS), which the private Dovecot (2.3, no -PLUS)
cannot show: tests/fakescram.py (IMAP, POP3 and SMTP over TLS 1.2, with
tls-server-end-point) and build/tests/cbserver (IMAP over TLS 1.3, with
tls-exporter, RFC 9266).

Each fault must end the run with the protocol class (a wrong or missing
server signature, a server nonce that does not extend ours, an iteration
count below 4096) or the authentication class (e=, a refused downgrade),
an error naming the account, the host and what was wrong, nothing stored,
and a next run that works as soon as the server does.
"""

import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from conftest import EX_OK, EX_NOPERM, EX_PROTOCOL, Raw, assert_error
from fakescram import FakeScram, cert_binding

USER = "scram.user"
PASSWORD = "Sc7am-pass.word"

# What the error must say for each fault (a pattern, case-insensitive).
FAULTS = {
    "bad_signature": (EX_PROTOCOL, r"signature"),
    "no_v": (EX_PROTOCOL, r"v=|no .*signature"),
    "early_ok": (EX_PROTOCOL, r"prove|signature|v="),
    "bad_nonce": (EX_PROTOCOL, r"nonce"),
    "short_nonce": (EX_PROTOCOL, r"nonce"),
    "iter1": (EX_PROTOCOL, r"iteration.*\b1\b"),
    "iter4095": (EX_PROTOCOL, r"iteration.*\b4095\b"),
    "e_invalid_proof": (EX_NOPERM, r"invalid-proof"),
}

PROTOS = ("imap", "pop3", "smtp")
PLUS_MECHS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1")


def fetch_message():
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: scram\r\n"
            b"Message-ID: <scram-1@test>\r\n\r\nbody\r\n")


class Case:
    """A FakeScram of one protocol and an account of its own directory that
    uses it: fetching from it (imap, pop3; POP3 with one message waiting,
    keep = no), or sending one queued message through it (smtp, with
    `mailpull send`)."""

    def __init__(self, mp, proto, scenario="ok", auth="scram-sha-256", name="c",
                 user=USER, **knobs):
        self.mp, self.proto = mp, proto
        self.dir = mp.path(name)
        os.makedirs(self.dir)
        self.maildir = os.path.join(self.dir, "Maildir")
        self.state = os.path.join(self.dir, "state")
        self.config = os.path.join(self.dir, "mailpull.conf")
        if proto == "pop3":
            knobs.setdefault("messages", [fetch_message()])
        self.srv = FakeScram(proto, mp.dc.server_cert, mp.dc.server_key, user=user,
                             password=PASSWORD, scenario=scenario, **knobs).start()
        common = dict(host="127.0.0.1", tls_ca_file=mp.dc.ca_file, password=PASSWORD, auth=auth)
        if proto == "pop3":
            self.acct = mp.pop3_account(user, self.maildir, port=self.srv.port, keep=False,
                                        **common)
        elif proto == "imap":
            self.acct = mp.imap_account(user, self.maildir, port=self.srv.port, **common)
        else:
            # The fetch side is never contacted by `mailpull send`; a POP3
            # account keeps its Sent copy here, in maildir/.Sent.
            self.acct = mp.pop3_account(user, self.maildir, **common)
            self.acct.update(smtp_host="127.0.0.1", smtp_port=self.srv.port,
                             smtp_tls=Raw("implicit"))
            self.queue()
        mp.configure({"t1": self.acct}, path=self.config, state_dir=self.state)

    def queue(self):
        outbox = os.path.join(self.maildir, ".Outbox")
        for d in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(outbox, d), exist_ok=True)
        with open(os.path.join(outbox, "new", f"{int(time.time())}.M1P1Q1.test"), "wb") as f:
            f.write(b"From: Me <me@example.org>\nTo: you@example.org\nSubject: out\n"
                    b"Message-ID: <out-1@example.org>\n\nHello.\n")

    def run(self, *args):
        if self.proto == "smtp":
            args = ("send",) + args
        return self.mp.run(*args, config=self.config)

    def auth(self):
        """The record of the last AUTH exchange."""
        assert self.srv.auths, f"the client never authenticated; commands: {self.srv.commands}"
        return self.srv.auths[-1]

    def stored(self):
        """Messages in the Maildir (the Sent copy's folder aside)."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            out += os.listdir(d) if os.path.isdir(d) else []
        return out

    def outbox(self):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, ".Outbox", sub)
            out += os.listdir(d) if os.path.isdir(d) else []
        return out

    def state_files(self):
        """{name: bytes} of the state directory, lock files aside."""
        out = {}
        if os.path.isdir(self.state):
            for n in sorted(os.listdir(self.state)):
                p = os.path.join(self.state, n)
                if os.path.isfile(p) and not n.endswith(".lock"):
                    with open(p, "rb") as f:
                        out[n] = f.read()
        return out

    def check_nothing_done(self):
        """A failed login stored, deleted and sent nothing."""
        assert self.stored() == [], "a message was stored after a failed login"
        if self.proto == "pop3":
            assert len(self.srv.messages) == 1, "a message was deleted after a failed login"
        if self.proto == "smtp":
            assert len(self.outbox()) == 1, "the queued message left the outbox"
            assert not any(c.upper().startswith(("MAIL", "RCPT", "DATA"))
                           for c in self.srv.commands), self.srv.commands

    def check_done(self):
        """A successful run did the whole job."""
        if self.proto == "pop3":
            assert len(self.stored()) == 1 and self.srv.messages == [], \
                "the message was not fetched and deleted"
        if self.proto == "smtp":
            assert self.outbox() == [], "the queued message was not sent"
            assert any(c.upper().startswith("DATA") for c in self.srv.commands)

    def close(self):
        self.srv.stop()


@pytest.fixture
def cases(mp):
    made = []

    def make(*args, **kw):
        c = Case(mp, *args, name=f"c{len(made)}", **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def error_lines(r):
    return [ln for ln in r.err.splitlines() if "mailpull: error:" in ln]


def assert_fault(c, r, code, pattern):
    """Exit class code; an error line naming the account, the host and the
    fault (pattern); the password nowhere in the output."""
    assert_error(r, code, "t1", "127.0.0.1")
    lines = error_lines(r)
    assert any("t1" in ln and "127.0.0.1" in ln and re.search(pattern, ln, re.I)
               for ln in lines), f"no error line saying /{pattern}/:\n{r}"
    assert PASSWORD not in r.out + r.err


# ---- the fake servers themselves --------------------------------------------

# How the minimal client below speaks each protocol: the AUTH command, the
# challenge prefix, and what ends the session.
CLIENT_WIRE = {
    "imap": ("a AUTHENTICATE {} {}", "+ ", "b LOGOUT"),
    "pop3": ("AUTH {} {}", "+ ", "QUIT"),
    "smtp": ("AUTH {} {}", "334 ", "QUIT"),
}


def scram_client(port, ca, mech, password, cbflag="n", cb=None, user=USER, proto="imap"):
    """A minimal SCRAM client (for checking the servers): returns the
    server's final reply to the AUTH command."""
    hname = "sha256" if "256" in mech else "sha1"
    auth_cmd, chal, bye = CLIENT_WIRE[proto]
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        f = s.makefile("rwb")

        def say(line):
            f.write(line.encode() + b"\r\n")
            f.flush()

        def read():
            return f.readline().decode().rstrip("\r\n")

        read()
        if proto == "smtp":
            say("EHLO client.test")
            while not read().startswith("250 "):
                pass
        if cb is None and cbflag.startswith("p="):
            cb = hashlib.sha256(s.getpeercert(binary_form=True)).digest()
        gs2 = f"{cbflag},,"
        bare = f"n={user},r=clientnonce123"
        say(auth_cmd.format(mech, base64.b64encode((gs2 + bare).encode()).decode()))
        line = read()
        if not line.startswith(chal):
            return line
        first = base64.b64decode(line[len(chal):]).decode()
        attrs = dict(kv.split("=", 1) for kv in first.split(","))
        salted = hashlib.pbkdf2_hmac(hname, password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        ckey = hmac.new(salted, b"Client Key", hname).digest()
        cbind = base64.b64encode(gs2.encode() + (cb if cbflag.startswith("p=") else b""))
        without = f"c={cbind.decode()},r={attrs['r']}"
        am = f"{bare},{first},{without}".encode()
        sig = hmac.new(hashlib.new(hname, ckey).digest(), am, hname).digest()
        proof = base64.b64encode(bytes(x ^ y for x, y in zip(ckey, sig))).decode()
        say(base64.b64encode(f"{without},p={proof}".encode()).decode())
        line = read()
        if line.startswith(chal):
            say("")
            line = read()
        say(bye)
        return line


@pytest.mark.parametrize("proto", PROTOS)
def test_fake_server_checks_the_proof_and_the_binding(mp, proto):
    """The fake accepts a right proof and refuses a wrong one, and checks
    tls-server-end-point: without this, a passing test proves nothing."""
    ca = mp.dc.ca_file
    ok, no = {"imap": (" OK ", " NO "), "pop3": ("+OK", "-ERR"), "smtp": ("235 ", "535 ")}[proto]
    with FakeScram(proto, mp.dc.server_cert, mp.dc.server_key, user=USER, password=PASSWORD,
                   mechs=PLUS_MECHS) as srv:
        def login(mech, pw=PASSWORD, **kw):
            return scram_client(srv.port, ca, mech, pw, proto=proto, **kw)
        assert ok in login("SCRAM-SHA-256")
        assert ok in login("SCRAM-SHA-1")
        assert no in login("SCRAM-SHA-256", "wrong")
        assert ok in login("SCRAM-SHA-256-PLUS", cbflag="p=tls-server-end-point")
        assert no in login("SCRAM-SHA-1-PLUS", cbflag="p=tls-server-end-point", cb=b"\0" * 32)
        assert no in login("SCRAM-SHA-256", cbflag="y"), "a downgrade went unnoticed"
        assert [a["result"] for a in srv.auths] == ["ok", "ok", "refused", "ok", "refused",
                                                    "refused"]
        assert srv.auths[3]["cb_ok"] and not srv.auths[4]["cb_ok"]
        assert srv.cb_data == cert_binding(mp.dc.server_cert)


def cbserver_bin(mp):
    """build/tests/cbserver beside the binary (make integration builds it)."""
    path = os.path.join(os.path.dirname(mp.bin), "tests", "cbserver")
    assert os.access(path, os.X_OK), \
        f"no {path}: build it with make {os.path.relpath(path)} (make integration does)"
    return path


class CBServer:
    """build/tests/cbserver running for one connection."""

    def __init__(self, mp):
        self.p = subprocess.Popen([cbserver_bin(mp), "0", mp.dc.server_cert, mp.dc.server_key,
                                   USER, PASSWORD], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("READY "), f"cbserver did not start: {line!r}"
        self.port = int(line.split()[1])

    def finish(self):
        """What the server saw (its stdout lines) and its stderr, once its one
        connection ended (self.rc: its exit status, which must be 0: a
        sanitizer report makes it another)."""
        try:
            out, err = self.p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
        self.rc = self.p.returncode
        return out.splitlines(), err

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def test_cbserver_checks_the_binding(mp):
    """cbserver refuses a tls-exporter binding that is not the session's,
    accepts plain SCRAM with "n", refuses "y" (it can bind)."""
    for flag, cb, want in (("p=tls-exporter", b"\0" * 32, ["cb bad", "auth refused"]),
                           ("n", None, ["cb ok", "proof ok", "auth ok"]),
                           ("y", None, ["auth refused"])):
        srv = CBServer(mp)
        try:
            mech = "SCRAM-SHA-256-PLUS" if cb else "SCRAM-SHA-256"
            scram_client(srv.port, mp.dc.ca_file, mech, PASSWORD, cbflag=flag, cb=cb)
            seen, err = srv.finish()
        finally:
            srv.close()
        assert srv.rc == 0, f"cbserver exit {srv.rc}: {err}"
        assert "tls TLSv1.3" in seen, seen
        assert f"gs2 {flag},," in seen, seen
        for w in want:
            assert w in seen, (flag, seen)


# ---- correct SCRAM ------------------------------------------------------------

@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_correct_scram_logs_in(cases, proto, mech):
    """A server doing SCRAM right: the run does its work; the client bound
    nothing but said it could ("y": the server offers no -PLUS), proved the
    password without sending it, and answered the verified v= with an
    empty response."""
    c = cases(proto, auth=mech.lower())
    r = c.run()
    assert r.rc == EX_OK, str(r)
    a = c.auth()
    assert a["mech"] == mech
    assert a["gs2"] == "y,," and a["c"] == "y,,"
    assert a["user"] == USER
    assert a["cb_ok"] and a["nonce_ok"] and a["proof_ok"], a
    assert a["final_answer"] == "" and a["result"] == "ok", a
    assert not c.srv.secret_seen(PASSWORD)
    c.check_done()


@pytest.mark.parametrize("proto", PROTOS)
def test_user_name_is_escaped(cases, proto):
    """',' and '=' in the user name go as =2C and =3D (RFC 5802 section 5.1)."""
    c = cases(proto, user="we,ird=name")
    r = c.run()
    assert r.rc == EX_OK, str(r)
    assert c.auth()["user"] == "we,ird=name"
    assert c.srv.secret_seen("n=we=2Cird=3Dname,r="), "the user name went unescaped"


# ---- a server that gets SCRAM wrong ------------------------------------------

def fault_case(cases, proto, scenario):
    c = cases(proto, scenario=scenario)
    code, pattern = FAULTS[scenario]
    r = c.run()
    assert_fault(c, r, code, pattern)
    c.check_nothing_done()
    return c, r


def then_recovers(c, r):
    """The same fault again gives the same error, no worse; once the server
    is right, the next run does the whole job."""
    before = c.state_files()
    r2 = c.run()
    assert r2.rc == r.rc, f"the second run differs:\n{r2}"
    assert error_lines(r2) == error_lines(r), f"the second run's error differs:\n{r2}"
    c.check_nothing_done()
    assert c.state_files() == before, "a failed login changed the state"
    c.srv.scenario = "ok"
    r3 = c.run()
    assert r3.rc == EX_OK, f"the run after the server was fixed failed:\n{r3}"
    c.check_done()


@pytest.mark.parametrize("proto", PROTOS)
def test_wrong_server_signature(cases, proto):
    """v= that is not the server signature: the server does not know the
    password (or is not the server); the client cancels and uses nothing."""
    c, r = fault_case(cases, proto, "bad_signature")
    a = c.auth()
    assert a["proof_ok"], "the client's own proof was wrong"
    assert a["final_answer"] == "*" and a["cancelled"], a
    then_recovers(c, r)


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("scenario", ["bad_nonce", "short_nonce"])
def test_server_nonce_must_extend_ours(cases, proto, scenario):
    """A server nonce that does not start with ours, or adds nothing to it:
    cancelled before any proof is sent."""
    c, r = fault_case(cases, proto, scenario)
    a = c.auth()
    assert not a["client_final"], "the client sent its proof to a bad server-first"
    assert a["cancelled"], a
    then_recovers(c, r)


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("scenario", ["iter1", "iter4095"])
def test_iteration_count_below_4096(cases, proto, scenario):
    """i=1 and i=4095 (below RFC 7677's 4096): cancelled before any proof,
    so no cheap-to-crack proof leaves the client."""
    c, r = fault_case(cases, proto, scenario)
    a = c.auth()
    assert not a["client_final"], "the client sent a proof salted with too few iterations"
    assert a["cancelled"], a
    then_recovers(c, r)


# What a client that took a login without a server proof for good would do
# next (for SMTP, check_nothing_done() looks for MAIL, RCPT and DATA).
USE_VERBS = {"imap": ("SELECT", "EXAMINE", "UID", "LIST"), "pop3": ("STAT", "UIDL", "LIST", "RETR"),
             "smtp": ("MAIL",)}


def used_mailbox(c):
    verbs = [x.split(" ", 1)[1] if c.proto == "imap" and " " in x else x
             for x in c.srv.commands]
    return [v for v in verbs if v.upper().startswith(USE_VERBS[c.proto])]


@pytest.mark.parametrize("proto", PROTOS)
def test_server_final_without_v(cases, proto):
    """A server-final with no v=: the server proved nothing."""
    c, r = fault_case(cases, proto, "no_v")
    assert c.auth()["final_answer"] != "", "the client accepted a server-final without v="
    assert used_mailbox(c) == []
    then_recovers(c, r)


@pytest.mark.parametrize("proto", PROTOS)
def test_ok_without_server_final(cases, proto):
    """Success right after the client-final, no server-final at all: the
    server never proved it knows the password, so the login counts for
    nothing and the mailbox is not touched."""
    c, r = fault_case(cases, proto, "early_ok")
    a = c.auth()
    assert a["client_final"] and a["result"] == "ok", a
    assert used_mailbox(c) == [], "the client used a login the server never proved"
    then_recovers(c, r)


@pytest.mark.parametrize("proto", PROTOS)
def test_server_error_invalid_proof(cases, proto):
    """e=invalid-proof in the server-final: an authentication failure
    (MP_EX_NOPERM), the server's reason quoted."""
    c, r = fault_case(cases, proto, "e_invalid_proof")
    assert c.auth()["result"] != "ok"
    then_recovers(c, r)


# ---- channel binding -----------------------------------------------------------

@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("auth", ["scram-sha-256-plus", None])
def test_plus_with_tls_server_end_point(cases, proto, auth):
    """TLS 1.2: SCRAM-SHA-256-PLUS binds with tls-server-end-point (the
    SHA-256 of the server's certificate), named or chosen first when auth is
    unset and the server offers it."""
    c = cases(proto, auth=auth, mechs=PLUS_MECHS)
    r = c.run()
    assert r.rc == EX_OK, str(r)
    a = c.auth()
    assert a["mech"] == "SCRAM-SHA-256-PLUS"
    assert a["gs2"] == "p=tls-server-end-point,,"
    assert a["cb_ok"], f"c= is not the GS2 header and the certificate's hash: {a['c']!r}"
    assert a["proof_ok"] and a["result"] == "ok", a
    c.check_done()


@pytest.mark.parametrize("auth", ["scram-sha-256-plus", None])
def test_plus_with_tls_exporter(mp, tmp_path, auth):
    """TLS 1.3: SCRAM-SHA-256-PLUS binds with tls-exporter (RFC 9266),
    checked by cbserver against SSL_export_keying_material(); chosen
    first when auth is unset."""
    srv = CBServer(mp)
    try:
        a = mp.imap_account(USER, str(tmp_path / "Maildir"), host="127.0.0.1", port=srv.port,
                            password=PASSWORD, auth=auth)
        mp.configure(a)
        r = mp.run()
        seen, err = srv.finish()
    finally:
        srv.close()
    assert r.rc == EX_OK, f"{r}\ncbserver saw: {seen}\n{err}"
    assert srv.rc == 0, f"cbserver exit {srv.rc}: {err}"
    assert "tls TLSv1.3" in seen
    assert "mech SCRAM-SHA-256-PLUS" in seen, seen
    assert "gs2 p=tls-exporter,," in seen, seen
    for w in ("cb ok", "nonce ok", "proof ok", "auth ok", "cmd LOGOUT"):
        assert w in seen, (w, seen)
    assert "cmd SELECT" in seen or "cmd EXAMINE" in seen, seen


def test_plus_named_but_not_offered(cases):
    """auth = scram-sha-256-plus and a server without -PLUS: no fallback to
    a mechanism the user did not name; nothing is tried."""
    c = cases("imap", auth="scram-sha-256-plus")
    r = c.run()
    assert_fault(c, r, EX_PROTOCOL, r"scram-sha-256-plus")
    assert c.srv.auths == [], c.srv.auths


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("reply", ["no", "e"])
def test_stripped_plus_is_noticed(cases, proto, reply):
    """A server that can bind but whose -PLUS mechanisms were stripped from
    the list (a downgrade): the client says "y" (it could bind), so the
    server refuses it (RFC 5802 section 6), at once or with
    e=server-does-support-channel-binding; the login fails clearly, and
    works again once nothing strips the list."""
    c = cases(proto, auth=None, mechs=("SCRAM-SHA-256", "SCRAM-SHA-1"), plus=True,
              stripped_reply=reply)
    r = c.run()
    a = c.auth()
    assert a["gs2"] == "y,," and a["mech"] == "SCRAM-SHA-256", a
    assert a["result"] != "ok", a
    want = "downgrade" if reply == "no" else "server-does-support-channel-binding"
    assert_fault(c, r, EX_NOPERM, want)
    c.check_nothing_done()
    c.srv.mechs = list(PLUS_MECHS)
    r = c.run()
    assert r.rc == EX_OK, str(r)
    assert c.auth()["gs2"] == "p=tls-server-end-point,,"
    c.check_done()


@pytest.mark.parametrize("proto", PROTOS)
def test_server_without_binding_accepts_y(cases, proto):
    """A server with plain SCRAM only and no channel binding at all: the
    client over TLS says "y", and the server, unable to bind, accepts it."""
    c = cases(proto, auth=None, mechs=("SCRAM-SHA-256",), plus=False)
    r = c.run()
    assert r.rc == EX_OK, str(r)
    a = c.auth()
    assert a["mech"] == "SCRAM-SHA-256" and a["gs2"] == "y,," and a["result"] == "ok", a
    c.check_done()


def test_plain_scram_named_where_plus_is_offered(mp, tmp_path):
    """auth = scram-sha-256 on TLS 1.3 where the server offers -PLUS too:
    GS2 "n" (the server offered binding, the user chose not to use it; "y"
    would tell this server of a downgrade that is none), checked by
    cbserver, which refuses "y"."""
    srv = CBServer(mp)
    try:
        a = mp.imap_account(USER, str(tmp_path / "Maildir"), host="127.0.0.1", port=srv.port,
                            password=PASSWORD, auth="scram-sha-256")
        mp.configure(a)
        r = mp.run()
        seen, err = srv.finish()
    finally:
        srv.close()
    assert r.rc == EX_OK, f"{r}\ncbserver saw: {seen}\n{err}"
    assert srv.rc == 0, f"cbserver exit {srv.rc}: {err}"
    for w in ("mech SCRAM-SHA-256", "gs2 n,,", "cb ok", "proof ok", "auth ok"):
        assert w in seen, (w, seen)


# ---- secrets in traces ---------------------------------------------------------

@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("scenario", ["ok", "bad_signature"])
def test_password_not_in_trace(cases, proto, scenario):
    """-v shows the exchange but never the password, nor the client proof
    derived from it; nor does the password cross the wire."""
    c = cases(proto, scenario=scenario)
    r = c.run("-v")
    assert r.rc == (EX_OK if scenario == "ok" else EX_PROTOCOL), str(r)
    text = r.out + r.err
    assert "AUTH" in text.upper(), f"no protocol trace with -v:\n{r}"
    assert PASSWORD not in text
    proof = c.auth()["proof"]
    assert proof and proof not in text, "the client proof is in the trace"
    assert not c.srv.secret_seen(PASSWORD), "the password crossed the wire"
