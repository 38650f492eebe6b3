"""Adversarial servers: certificates that must be refused, old TLS, pins,
capabilities that change under TLS, referrals, overlong lines and trickling
servers, over POP3 and IMAP, with implicit TLS and with STLS/STARTTLS.

Every case checks the outcome the same way: the exit status, an error line
naming the account, host:port and the cause; no credential sent where none
should be; nothing deleted on the server; nothing partial in the Maildir;
no crash, hang or unbounded memory. Each misbehaviour has a positive control
(or asserts the specific cause), so a test fails when mailpull goes wrong.
"""

import base64
import hashlib
import os
import socket
import ssl
import subprocess
import threading
import warnings

import pytest

from conftest import (EX_OK, EX_NOPERM, EX_PROTOCOL, EX_TEMPFAIL, Raw, make_message, multiset,
                      report)
from dovecot import make_expired_cert, make_self_signed_cert
from fakeimap import FakeIMAP
from fakepop3 import FakePOP3

PASSWORD = "Adv3rsarial-S3cret"
USER = "alice"
MSGS = [make_message(i, tag="adv") for i in range(2)]
RUN_LIMIT = 20.0                 # seconds: past this mailpull counts as hung
RSS_LIMIT_MIB = 32
FLOOD = 6 * 1024 * 1024          # bytes of an overlong line (no CRLF)
TRICKLE_EVERY = 1.0              # seconds between two bytes of a trickle
TRICKLE_TIMEOUT = 2              # mailpull's timeout for the trickle tests

PROTOS = ["pop3", "imap"]
MODES = ["implicit", "starttls"]
CRED_VERBS = {"USER", "PASS", "AUTH", "APOP", "LOGIN", "AUTHENTICATE"}
DESTRUCTIVE = {"DELE", "EXPUNGE", "STORE", "UID STORE", "UID EXPUNGE", "COPY", "MOVE",
               "UID MOVE"}


# ---- certificates made for these tests ---------------------------------------

def sha256_pin(pem_file):
    """The certificate's SHA-256 fingerprint as openssl prints it."""
    with open(pem_file) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


@pytest.fixture(scope="session")
def certs(dovecot, tmp_path_factory):
    """An expired certificate signed by the test CA and a self-signed one,
    both for localhost and 127.0.0.1. Each is checked to have that one
    defect, so a refusal can only come from it."""
    d = str(tmp_path_factory.mktemp("adv-certs"))
    ca_key = os.path.join(dovecot.certdir, "test-ca.key")
    expired = make_expired_cert(d, "expired", dovecot.ca_file, ca_key)
    selfsigned = make_self_signed_cert(d, "selfsigned")

    def verify(*args):
        return subprocess.run(["openssl", "verify", *args], capture_output=True, text=True)

    # Expired, and nothing else: good when times are not checked.
    r = verify("-CAfile", dovecot.ca_file, expired[0])
    assert r.returncode != 0 and "expired" in r.stdout + r.stderr, r
    r = verify("-CAfile", dovecot.ca_file, "-no_check_time", "-verify_ip", "127.0.0.1",
               expired[0])
    assert r.returncode == 0, r
    # Self-signed: refused by the test CA, good when trusted on its own.
    assert verify("-CAfile", dovecot.ca_file, selfsigned[0]).returncode != 0
    r = verify("-CAfile", selfsigned[0], "-verify_ip", "127.0.0.1", selfsigned[0])
    assert r.returncode == 0, r
    return {"expired": expired, "selfsigned": selfsigned,
            "untrusted": (dovecot.untrusted_cert, dovecot.untrusted_key),
            "good": (dovecot.server_cert, dovecot.server_key)}


# ---- fake servers, runs and the checks every case makes ------------------------

POP3_CAPA = ["USER", "UIDL", "TOP", "SASL PLAIN"]
IMAP_CAPS = ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS"]


def serve(proto, tls, cert=None, **kw):
    """A fake server: implicit TLS, or plain offering STLS/STARTTLS. cert is
    (certfile, keyfile) unless kw has an ssl context."""
    kw.setdefault("messages", MSGS)
    kw.setdefault("password", PASSWORD)
    if "context" not in kw:
        kw["certfile"], kw["keyfile"] = cert
    mode = "implicit" if tls == "implicit" else None
    if proto == "pop3":
        capa = kw.pop("capa", POP3_CAPA + (["STLS"] if tls == "starttls" else []))
        kw.setdefault("capa_tls", [c for c in capa if c != "STLS"])
        return FakePOP3(tls=mode, capa=capa, **kw)
    caps = kw.pop("caps", IMAP_CAPS + (["STARTTLS"] if tls == "starttls" else []))
    return FakeIMAP(tls=mode, caps=caps, **kw)


def account(mp, srv, proto, tls, **over):
    a = {
        "protocol": Raw(proto),
        "host": "127.0.0.1",
        "port": srv.port,
        "tls": Raw(tls),
        "tls_ca_file": mp.dc.ca_file,
        "user": USER,
        "password": PASSWORD,
        "maildir": mp.maildir(),
        # keep = no: a session that went on would delete, so "nothing
        # deleted" means something.
        "keep": False,
        "timeout": Raw("5s"),
    }
    a.update(over)
    return a


def run(mp, srv, proto, tls, limit=RUN_LIMIT, rss=False, **over):
    mp.configure(account(mp, srv, proto, tls, **over))
    r = mp.start(measure_rss=rss).finish(limit * (4 if mp.slow else 1))
    print(f"\nexit {r.rc} in {r.elapsed:.1f} s; stderr: {r.err.strip()}")   # shown with -s
    assert not r.timed_out, f"mailpull hung:\n{r}"
    assert r.signal == 0 and r.rc >= 0, f"mailpull died:\n{r}"
    for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "Assertion"):
        assert bad not in r.err, f"{bad}:\n{r}"
    return r


def assert_failed(r, srv, code, *causes):
    """Exit status code and an error line naming account, host:port and
    each of causes (case-insensitive)."""
    assert r.rc == code, f"expected exit {code}\n{r}"
    lines = [ln for ln in r.err.splitlines() if ln.startswith("mailpull: error:")]
    assert lines, f"no error line\n{r}"
    line = lines[-1]
    assert f"account t1 (127.0.0.1:{srv.port})" in line, f"account or host:port missing\n{r}"
    for c in causes:
        assert c.lower() in line.lower(), f"{c!r} not in the error line\n{r}"
    return line


def secret_forms():
    forms = [PASSWORD]
    for authz in ("", USER):
        forms.append(base64.b64encode(f"{authz}\0{USER}\0{PASSWORD}".encode()).decode())
    forms.append(base64.b64encode(PASSWORD.encode()).decode())
    return [f.encode() for f in forms]


def assert_no_credentials(srv):
    assert not CRED_VERBS & set(srv.verbs()), srv.commands
    raw = srv.received_all()
    for s in secret_forms() + [USER.encode()]:
        assert s not in raw, f"{s!r} reached the server: {raw[:500]!r}"


def assert_nothing_deleted(srv):
    assert not DESTRUCTIVE & set(srv.verbs()), srv.commands
    assert len(srv.messages) == len(MSGS)


def assert_maildir_clean(mp):
    assert mp.messages() == [], "a message was published"
    assert mp.tmp_files() == [], f"left in tmp/: {mp.tmp_files()}"


def assert_refused_early(mp, srv, r):
    """What any refusal before login leaves: nothing sent, changed or stored."""
    assert_no_credentials(srv)
    assert_nothing_deleted(srv)
    assert_maildir_clean(mp)


def assert_fetched(mp, r):
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(MSGS)
    assert mp.tmp_files() == []


def after_tls(srv, tls):
    """Verbs sent after the TLS upgrade (all of them for implicit TLS)."""
    verbs = srv.verbs()
    if tls == "implicit":
        return verbs
    up = "STLS" if "STLS" in verbs else "STARTTLS"
    assert up in verbs, verbs
    return verbs[verbs.index(up) + 1:]


# ---- certificates: expired, self-signed ---------------------------------------

CERT_CAUSE = {
    "expired": "certificate has expired",
    "selfsigned": "self-signed certificate",
    "untrusted": "unknown issuer",
}


@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("kind", ["expired", "selfsigned"])
def test_bad_certificate(mp, certs, kind, proto, tls):
    """Expired (signed by the trusted CA) or self-signed server certificate."""
    with serve(proto, tls, certs[kind]) as srv:
        r = run(mp, srv, proto, tls)
    line = assert_failed(r, srv, EX_PROTOCOL, "TLS certificate of 127.0.0.1 refused",
                         CERT_CAUSE[kind])
    assert "SHA-256 fingerprint is " + sha256_pin(certs[kind][0]) in line, line
    assert_refused_early(mp, srv, r)
    if tls == "implicit":
        assert srv.received_all() == b""
    assert srv.tls_errors, "no TLS handshake was attempted"


@pytest.mark.parametrize("proto", PROTOS)
def test_good_certificate_control(mp, certs, proto):
    """Control for the certificate tests: the same server with the CA's
    valid certificate is accepted."""
    with serve(proto, "implicit", certs["good"]) as srv:
        r = run(mp, srv, proto, "implicit")
    assert_fetched(mp, r)


# ---- a server that offers only TLS 1.0 or 1.1 ---------------------------------

TLS_OLD = {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}


def legacy_context(version, cert=None, server=True):
    """A context speaking only the given old TLS version (OpenSSL's security
    level 0, since Debian's default level forbids it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = getattr(ssl.TLSVersion, version)
        ctx.maximum_version = getattr(ssl.TLSVersion, version)
    if server:
        ctx.load_cert_chain(*cert)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def legacy_handshake(port, proto, tls, version):
    """Connects as a client that allows only `version`; returns the version
    the server negotiated (proof the server really speaks it)."""
    ctx = legacy_context(version, server=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if tls == "starttls":
            f = s.makefile("rb", buffering=0)
            f.readline()
            s.sendall(b"STLS\r\n" if proto == "pop3" else b"c1 STARTTLS\r\n")
            reply = f.readline()
            assert reply.startswith(b"+OK") or reply.startswith(b"c1 OK"), reply
        with ctx.wrap_socket(s) as t:
            return t.version()


@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("version", list(TLS_OLD))
def test_old_tls_version_refused(mp, certs, version, proto, tls):
    """The server offers only TLS 1.0 or 1.1: TLS 1.2 is the minimum."""
    with serve(proto, tls, context=legacy_context(version, certs["good"])) as srv:
        r = run(mp, srv, proto, tls)
        assert_failed(r, srv, EX_PROTOCOL, "TLS handshake with 127.0.0.1 failed",
                      "TLS 1.2")
        assert_refused_early(mp, srv, r)
        # The server does speak the old version to a client that allows it.
        assert legacy_handshake(srv.port, proto, tls, version) == TLS_OLD[version]


# ---- fingerprint pins ----------------------------------------------------------

@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("proto", PROTOS)
def test_pin_mismatch(mp, certs, proto, tls):
    """A valid chain whose certificate is not the pinned one is refused."""
    pin = sha256_pin(certs["untrusted"][0])
    with serve(proto, tls, certs["good"]) as srv:
        r = run(mp, srv, proto, tls, tls_fingerprint=pin)
    assert_failed(r, srv, EX_PROTOCOL, "does not match tls_fingerprint",
                  sha256_pin(certs["good"][0]))
    assert_refused_early(mp, srv, r)
    if tls == "implicit":
        assert srv.received_all() == b""


@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("proto", PROTOS)
def test_pin_does_not_replace_verification(mp, certs, proto, tls):
    """The right pin on a chain the trust anchors do not accept is still
    refused (mailpull.conf(5): the pin is an extra check)."""
    pin = sha256_pin(certs["untrusted"][0]).replace(":", "").lower()
    with serve(proto, tls, certs["untrusted"]) as srv:
        r = run(mp, srv, proto, tls, tls_fingerprint=pin)
    assert_failed(r, srv, EX_PROTOCOL, "TLS certificate of 127.0.0.1 refused",
                  CERT_CAUSE["untrusted"])
    assert_refused_early(mp, srv, r)


@pytest.mark.parametrize("proto", PROTOS)
def test_pin_match_control(mp, certs, proto):
    """Control for the pin tests: the right pin on a valid chain works."""
    with serve(proto, "starttls", certs["good"]) as srv:
        r = run(mp, srv, proto, "starttls", tls_fingerprint=sha256_pin(certs["good"][0]))
    assert_fetched(mp, r)


# ---- capabilities that change with TLS ----------------------------------------

# (capabilities in clear, capabilities under TLS, the login verbs the
# post-TLS list calls for, the ones the pre-TLS list would have called for)
CAPS_CHANGE = {
    "pop3-sasl-withdrawn": ("pop3", ["USER", "UIDL", "SASL PLAIN", "STLS"], ["USER", "UIDL"],
                            {"USER", "PASS"}, {"AUTH"}),
    "pop3-sasl-added": ("pop3", ["USER", "UIDL", "STLS"], ["UIDL", "SASL PLAIN"],
                        {"AUTH"}, {"USER", "PASS"}),
    "imap-auth-withdrawn": ("imap", ["IMAP4rev1", "STARTTLS", "AUTH=PLAIN", "SASL-IR"],
                            ["IMAP4rev1", "UIDPLUS"], {"LOGIN"}, {"AUTHENTICATE"}),
    "imap-logindisabled-added": ("imap", ["IMAP4rev1", "STARTTLS"],
                                 ["IMAP4rev1", "LOGINDISABLED", "AUTH=PLAIN", "UIDPLUS"],
                                 {"AUTHENTICATE"}, {"LOGIN"}),
}


@pytest.mark.parametrize("case", list(CAPS_CHANGE))
def test_capabilities_changed_after_tls(mp, certs, case):
    """Capabilities differ before and after STLS/STARTTLS: only the
    post-TLS list is acted on (RFC 2595 4, RFC 9051 6.2.1)."""
    proto, before, after, want, wrong = CAPS_CHANGE[case]
    kw = {"capa": before, "capa_tls": after} if proto == "pop3" else \
        {"caps": before, "caps_tls": after}
    with serve(proto, "starttls", certs["good"], **kw) as srv:
        r = run(mp, srv, proto, "starttls")
    assert_fetched(mp, r)
    verbs = after_tls(srv, "starttls")
    assert want <= set(verbs), f"post-TLS capabilities not used: {srv.verbs()}"
    assert not wrong & set(verbs), f"pre-TLS capabilities used: {srv.verbs()}"


def test_imap_capabilities_injected_in_clear(mp, certs):
    """The greeting and the OK to STARTTLS, both in clear, carry
    [CAPABILITY] codes offering AUTH=PLAIN; after TLS only LOGIN is there."""
    inj = "[CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR]"
    with serve("imap", "starttls", certs["good"], greeting=f"* OK {inj} ready",
               starttls_reply=f"OK {inj} go ahead",
               caps_tls=["IMAP4rev1", "UIDPLUS"]) as srv:
        r = run(mp, srv, "imap", "starttls")
    assert_fetched(mp, r)
    verbs = after_tls(srv, "starttls")
    assert "LOGIN" in verbs and "AUTHENTICATE" not in verbs, srv.verbs()
    assert "CAPABILITY" in verbs[:verbs.index("LOGIN")], srv.verbs()


# ---- referrals and response codes ----------------------------------------------

class Trap:
    """A listener on 127.0.0.1 that only counts the connections it gets."""

    def __enter__(self):
        self.connections = 0
        self._ls = socket.socket()
        self._ls.bind(("127.0.0.1", 0))
        self._ls.listen(4)
        self._ls.settimeout(0.1)
        self.port = self._ls.getsockname()[1]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                s, _ = self._ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            s.close()

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)
        self._ls.close()


REFERRALS = {
    # RFC 2221: a login referral, to LOGIN and AUTHENTICATE alike.
    "login": ({"LOGIN", "AUTHENTICATE"}, "{tag} NO [REFERRAL imap://alice@127.0.0.1:{port}/] "
              "try that server", EX_NOPERM, "server refers the login to another server"),
    # RFC 2193: mailbox referrals, to SELECT/EXAMINE and to LIST.
    "select": ({"SELECT", "EXAMINE"}, "{tag} NO [REFERRAL imap://alice@127.0.0.1:{port}/INBOX] "
               "moved", EX_PROTOCOL, 'folder "INBOX": server refers SELECT to another server'),
    "list": ({"LIST"}, "{tag} NO [REFERRAL imap://alice@127.0.0.1:{port}/] look there",
             EX_PROTOCOL, "server refers LIST to another server"),
}


@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("where", list(REFERRALS))
def test_imap_referral_not_followed(mp, certs, where, tls):
    """A NO [REFERRAL imap://other/] to login, SELECT or LIST: an error that
    says so, and the other server never hears from mailpull."""
    verbs, reply, code, cause = REFERRALS[where]
    with Trap() as trap:
        script = {v: reply.replace("{port}", str(trap.port)) for v in verbs}
        with serve("imap", tls, certs["good"], script=script) as srv:
            r = run(mp, srv, "imap", tls)
    line = assert_failed(r, srv, code, cause, "never follows")
    # The URL is shown, as the server's words.
    assert f"the server said: [REFERRAL imap://alice@127.0.0.1:{trap.port}/" in line, line
    assert trap.connections == 0, "mailpull followed the referral"
    assert srv.connections == 1, "mailpull reconnected"
    assert_nothing_deleted(srv)
    assert_maildir_clean(mp)


def test_imap_untagged_referral_ignored(mp, certs):
    """An untagged [REFERRAL] among LIST's answers is ignored: INBOX is
    fetched here and nothing goes to the other server."""
    with Trap() as trap:
        script = {"LIST": ['* LIST (\\HasNoChildren) "/" INBOX',
                           f"* OK [REFERRAL imap://alice@127.0.0.1:{trap.port}/] go",
                           "{tag} OK LIST completed"]}
        with serve("imap", "implicit", certs["good"], script=script) as srv:
            r = run(mp, srv, "imap", "implicit", keep=True)
    assert_fetched(mp, r)
    assert trap.connections == 0


@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("code", ["[IN-USE]", "[SYS/TEMP]", "[AUTH]"])
def test_pop3_login_response_code(mp, certs, code, tls):
    """-ERR [IN-USE] / [SYS/TEMP] (RFC 2449, RFC 3206) to the login is a
    temporary error; [AUTH] (the control) is a permanent one."""
    reply = f"-ERR {code} not now"
    with serve("pop3", tls, certs["good"], script={"PASS": reply, "AUTH": reply}) as srv:
        r = run(mp, srv, "pop3", tls)
    if code == "[AUTH]":
        assert_failed(r, srv, EX_NOPERM, "authentication refused", code)
    else:
        assert_failed(r, srv, EX_TEMPFAIL, "login refused for now", code)
    assert srv.connections == 1
    assert_nothing_deleted(srv)
    assert_maildir_clean(mp)


# ---- overlong lines --------------------------------------------------------------

def flood(prefix, size=FLOOD):
    """Plays prefix, then size bytes with no line end, then hangs up."""
    def play(c, *_):
        block = b"x" * 65536
        try:
            c.send(prefix)
            for _ in range(size // len(block)):
                if c.srv._stop.is_set():
                    break
                c.send(block)
        except (OSError, ValueError):
            pass
        return False
    return play


OVERLONG = {
    # name: (protocol, server knobs, whether the login came before the flood)
    "pop3-greeting": ("pop3", {"greeting": flood(b"+OK ")}, False),
    "pop3-capa": ("pop3", {"script": {"CAPA": flood(b"+OK capabilities\r\nUSER\r\nX-")}},
                  False),
    "pop3-uidl": ("pop3", {"script": {"UIDL": flood(b"+OK\r\n1 ")}}, True),
    "pop3-list": ("pop3", {"script": {"LIST": flood(b"+OK\r\n1 ")}}, True),
    "imap-greeting": ("imap", {"greeting": flood(b"* OK ")}, False),
    "imap-capability": ("imap", {"script": {"CAPABILITY": flood(b"* CAPABILITY IMAP4rev1 X")}},
                        False),
    "imap-untagged": ("imap", {"script": {"SELECT": flood(b"* OK [UIDVALIDITY 4242] "),
                                          "EXAMINE": flood(b"* OK [UIDVALIDITY 4242] ")}},
                      True),
}


def overlong_cases():
    for name, (proto, _, _) in OVERLONG.items():
        for tls in MODES:
            # After STARTTLS the same commands run under TLS as with implicit
            # TLS; the greeting and CAPA come in clear first.
            if tls == "starttls" and not name.endswith(("greeting", "capa", "capability")):
                continue
            yield pytest.param(name, tls, id=f"{name}-{tls}")


@pytest.mark.parametrize("name,tls", list(overlong_cases()))
def test_overlong_line(mp, certs, name, tls):
    """A line of several MiB without CRLF: a protocol error, memory bounded."""
    proto, knobs, login = OVERLONG[name]
    with serve(proto, tls, certs["good"], **knobs) as srv:
        r = run(mp, srv, proto, tls, rss=True)
    assert_failed(r, srv, EX_PROTOCOL, "longer than")
    if not login:
        assert_no_credentials(srv)
    assert_nothing_deleted(srv)
    assert_maildir_clean(mp)
    rss_mib = r.maxrss_kib / 1024
    report(f"overlong line {name} ({tls}): peak RSS {rss_mib:.1f} MiB"
           f"{' (sanitized build or valgrind)' if mp.slow else ''}, {r.elapsed:.1f} s")
    assert r.elapsed < 10 * (4 if mp.slow else 1), f"took {r.elapsed:.1f} s"
    if mp.slow:
        return
    assert r.maxrss_kib > 0, "peak RSS not measured (is GNU time installed?)"
    assert rss_mib < RSS_LIMIT_MIB, f"peak RSS {rss_mib:.1f} MiB"


# ---- trickling servers -----------------------------------------------------------

def trickle(data, every=TRICKLE_EVERY, lines=False):
    """Plays data one byte (or one line) every `every` seconds: each piece
    well inside the timeout, the whole far outside it; then hangs up."""
    pieces = data.splitlines(True) if lines else [data[i:i + 1] for i in range(len(data))]

    def play(c, tag=None, *_):
        try:
            for i, piece in enumerate(pieces):
                if c.srv._stop.wait(every if i else 0):
                    break
                c.send(piece.replace(b"{tag}", (tag or "").encode()))
        except (OSError, ValueError):
            pass
        return False
    return play


POP3_LIST = b"+OK\r\n" + b"".join(b"%d 100\r\n" % i for i in range(1, 40)) + b".\r\n"
IMAP_SELECT = b"".join(b"* OK [UIDVALIDITY 4242] chatter %d\r\n" % i for i in range(40)) + \
    b"{tag} OK done\r\n"

TRICKLE = {
    "pop3-greeting": ("pop3", {"greeting": trickle(b"+OK fake POP3 server ready\r\n")}, False),
    "pop3-list": ("pop3", {"script": {v: trickle(POP3_LIST) for v in ("LIST", "UIDL")}}, True),
    # A whole line every second: each line in time, the list never done.
    "pop3-list-lines": ("pop3", {"script": {v: trickle(POP3_LIST, lines=True)
                                            for v in ("LIST", "UIDL")}}, True),
    "imap-greeting": ("imap", {"greeting": trickle(b"* OK fake IMAP server ready\r\n")}, False),
    "imap-select": ("imap", {"script": {v: trickle(IMAP_SELECT) for v in ("SELECT", "EXAMINE")}},
                    True),
    "imap-select-lines": ("imap", {"script": {v: trickle(IMAP_SELECT, lines=True)
                                              for v in ("SELECT", "EXAMINE")}}, True),
}


@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("name", list(TRICKLE))
def test_trickle(mp, certs, name, tls):
    """One byte (or one line) a second during the greeting or a command
    response, timeout = 2s: mailpull gives up in bounded time."""
    proto, knobs, login = TRICKLE[name]
    with serve(proto, tls, certs["good"], **knobs) as srv:
        r = run(mp, srv, proto, tls, timeout=Raw(f"{TRICKLE_TIMEOUT}s"))
    line = assert_failed(r, srv, EX_TEMPFAIL)
    assert any(s in line for s in ("did not answer within", "slower than", "timed out")), line
    limit = 3 * TRICKLE_TIMEOUT + 2
    assert r.elapsed < limit * (3 if mp.slow else 1), f"gave up only after {r.elapsed:.1f} s"
    if not login:
        assert_no_credentials(srv)
    assert_nothing_deleted(srv)
    assert_maildir_clean(mp)


# ---- password_command runs only once the certificate is accepted --------------

@pytest.mark.parametrize("tls", MODES)
@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("kind", ["expired", "untrusted", "pin", "good"])
def test_password_command_after_verification(mp, certs, kind, proto, tls):
    """password_command never runs when the certificate is refused (expired,
    untrusted, pin mismatch); with a good one (the control) it does."""
    marker = mp.path("password-command-ran")
    over = {"password": None,
            "password_command": f"touch '{marker}'; echo '{PASSWORD}'"}
    cert = certs["good"] if kind in ("pin", "good") else certs[kind]
    if kind == "pin":
        over["tls_fingerprint"] = sha256_pin(certs["untrusted"][0])
    with serve(proto, tls, cert) as srv:
        r = run(mp, srv, proto, tls, **over)
    if kind == "good":
        assert_fetched(mp, r)
        assert os.path.exists(marker), "password_command did not run (the control)"
        return
    cause = "does not match tls_fingerprint" if kind == "pin" else CERT_CAUSE[kind]
    assert_failed(r, srv, EX_PROTOCOL, cause)
    assert not os.path.exists(marker), "password_command ran though the certificate was refused"
    assert_refused_early(mp, srv, r)


# ---- server text on the terminal -------------------------------------------------

EVIL = "\x1b[2J\x1b]0;owned\x07 \u202etxt.exe\u2066x\u2069 \u200f\u061c"
EVIL_RAW = ["\x1b", "\x07", "\u202e", "\u2066", "\u2069", "\u200f", "\u061c"]


def assert_defused(text):
    for bad in EVIL_RAW:
        assert bad not in text, f"{bad!r} reached the output: {text!r}"
    assert "\\u202e" in text, f"the override is not shown as \\u202e: {text!r}"
    assert "\\x1b" in text, f"ESC is not shown as \\x1b: {text!r}"


def test_imap_alert_sanitized(mp, certs):
    """An [ALERT] with escape sequences and bidi controls reaches the -v
    log (and the protocol trace) only with both made visible and inert."""
    script = {"LIST": [f"* OK [ALERT] {EVIL}",
                       '* LIST (\\HasNoChildren) "/" INBOX',
                       "{tag} OK LIST completed"]}
    with serve("imap", "implicit", certs["good"], script=script) as srv:
        mp.configure(account(mp, srv, "imap", "implicit", keep=True))
        r = mp.run("-v")
    assert r.rc == EX_OK, str(r)
    assert "(ALERT)" in r.err, r.err
    assert_defused(r.out + r.err)


def test_imap_no_text_sanitized(mp, certs):
    """A NO whose text carries escape sequences and a U+202E: the error
    line quotes the server with both made visible and inert."""
    script = {"AUTHENTICATE": f"{{tag}} NO {EVIL}", "LOGIN": f"{{tag}} NO {EVIL}"}
    with serve("imap", "implicit", certs["good"], script=script) as srv:
        r = run(mp, srv, "imap", "implicit", keep=True)
    assert r.rc != EX_OK, str(r)
    line = [ln for ln in r.err.splitlines() if ln.startswith("mailpull: error:")][-1]
    assert "the server said:" in line, line
    assert_defused(r.out + r.err)
