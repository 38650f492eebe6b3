"""SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802, RFC 7677) against the real
servers: a private Dovecot offering PLAIN, LOGIN, SCRAM-SHA-1 and
SCRAM-SHA-256 (no -PLUS: Dovecot 2.3 has none), for POP3 and IMAP, and
the private Postfix in front of it, whose AUTH is the Dovecot's (so it
offers the same mechanisms) for submission.

Each login is proven on the server's side too: Dovecot logs
"user=<U>, method=M", Postfix "sasl_method=M, sasl_username=U". The -v
trace shows which mechanism mailpull asked for and must never show the
password. Users with passwords of their own (non-ASCII ones) come from the
Dovecot's passwd-file (user_passwords=True), the others log in with
dc.password.
"""

import os
import re
import time

import pytest

from conftest import EX_NOPERM, EX_OK, Raw, assert_error, make_message, multiset
from dovecot import Dovecot
import postfix as postfix_mod

MECHS = "plain login scram-sha-1 scram-sha-256"
SCRAM = ["SCRAM-SHA-256", "SCRAM-SHA-1"]
PROTOS = ["pop3", "imap"]


def _keep_or_clean(server, what):
    if os.environ.get("MAILPULL_KEEP_DOVECOT"):
        server.stop()
        print(f"\n{what} files kept in {server.workdir}")
    else:
        server.cleanup()


@pytest.fixture(scope="module")
def scram_dc():
    """The module's Dovecot: SCRAM offered, per-user passwords, LMTP and
    auth listeners for the Postfix, no delay after a wrong password."""
    dc = Dovecot(lmtp=True, auth_inet=True, auth_delays=False, auth_mechanisms=MECHS,
                 user_passwords=True)
    dc.start()
    yield dc
    _keep_or_clean(dc, "Dovecot")


@pytest.fixture(scope="module")
def scram_pf(scram_dc):
    why = postfix_mod.unavailable()
    if why:
        pytest.fail(why)
    pf = postfix_mod.Postfix(scram_dc).start()
    yield pf
    _keep_or_clean(pf, "Postfix")


@pytest.fixture
def server_name():
    """mp.dc is the module's Dovecot."""
    return "scram_dc"


def account(mp, proto, user, **over):
    if proto == "pop3":
        return mp.pop3_account(user, **over)
    return mp.imap_account(user, **over)


def auth_command(proto, mech):
    """What the trace shows when mailpull starts the exchange."""
    return f"AUTHENTICATE {mech}" if proto == "imap" else f"AUTH {mech}"


def dovecot_method(dc, user):
    """The mechanisms of user's successful logins, from Dovecot's log."""
    return re.findall(rf"Login: user=<{re.escape(user)}>, method=([A-Z0-9-]+)", dc.log_text())


def postfix_method(pf, user, timeout=5.0):
    """The SASL mechanisms of user's submissions, from Postfix's log (it may
    be written a moment after the fact)."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(rf"sasl_method=([A-Z0-9-]+), sasl_username={re.escape(user)}\b",
                           pf.log_text())
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def client_lines(r):
    """What the -v trace shows mailpull sending ("C: ..." lines)."""
    return [ln for ln in (r.out + r.err).split("\n") if ln.startswith("C: ")]


def no_secret(r, *secrets):
    """Neither the password nor the PLAIN-style encodings of it are shown."""
    import base64
    text = r.out + r.err
    for s in secrets:
        assert s not in text, f"the password is in the output\n{r}"
        b = s.encode()
        for enc in (base64.b64encode(b), base64.b64encode(b"\0" + b)):
            assert enc.decode() not in text, f"an encoding of the password is shown\n{r}"


def fetch_with(mp, proto, mech, password=None, user=None, nmsg=2):
    """A user with nmsg messages, one -v run with auth = mech; returns
    (result, user, messages)."""
    user = user or mp.new_user("scram")
    msgs = [make_message(i, tag=user) for i in range(nmsg)]
    mp.dc.add_messages(user, msgs)
    over = {}
    if mech is not None:
        over["auth"] = Raw(mech.lower())
    if password is not None:
        over["password"] = password
    mp.configure(account(mp, proto, user, **over))
    return mp.run("-v"), user, msgs


@pytest.mark.parametrize("mech", SCRAM)
@pytest.mark.parametrize("proto", PROTOS)
def test_fetch(mp, proto, mech):
    """auth = scram-sha-256 / scram-sha-1: the login is that mechanism on
    both sides, the mail arrives, the password is not in the trace."""
    r, user, msgs = fetch_with(mp, proto, mech)
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert mp.dc.count(user) == (0 if proto == "pop3" else 2)
    assert auth_command(proto, mech) in r.out + r.err, str(r)
    assert dovecot_method(mp.dc, user) == [mech], mp.dc.log_text()[-2000:]
    no_secret(r, mp.dc.password)


@pytest.mark.parametrize("proto", PROTOS)
def test_automatic_choice_is_scram_sha_256(mp, proto):
    """auth unset: of PLAIN, LOGIN, SCRAM-SHA-1 and SCRAM-SHA-256 the
    server offers, SCRAM-SHA-256 is taken, and no password-equivalent
    crosses the wire (the trace shows neither password nor PLAIN)."""
    r, user, msgs = fetch_with(mp, proto, None)
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    sent = client_lines(r)
    assert any(auth_command(proto, "SCRAM-SHA-256") in ln for ln in sent), str(r)
    for ln in sent:
        assert not re.search(r"\b(AUTH|AUTHENTICATE) (PLAIN|LOGIN)\b|^C: (\S+ )?(LOGIN|USER|PASS) ",
                             ln), f"{ln!r}\n{r}"
    assert dovecot_method(mp.dc, user) == ["SCRAM-SHA-256"], mp.dc.log_text()[-2000:]
    no_secret(r, mp.dc.password)


@pytest.mark.parametrize("mech", SCRAM)
@pytest.mark.parametrize("proto", PROTOS)
def test_wrong_password(mp, proto, mech):
    """A wrong password with SCRAM: an authentication failure (77) that
    names the account and the host; nothing fetched, nothing deleted."""
    r, user, msgs = fetch_with(mp, proto, mech, password="not-the-Scram-pw-7")
    port = mp.dc.pop3s_port if proto == "pop3" else mp.dc.imaps_port
    assert_error(r, EX_NOPERM, "t1", f"{mp.dc.host}:{port}")
    assert mp.messages() == []
    assert mp.dc.count(user) == len(msgs)
    no_secret(r, "not-the-Scram-pw-7")


# Both precomposed and stable under SASLprep (NFKC): what any client sends.
NON_ASCII = "p\u00e4ssw\u00f6rd-\u00fc\u20ac-\u65e5\u672c"
# SASLprep would change this one (U+00A0 becomes a space, U+FB01 "fi"):
# Dovecot hashes the raw bytes, so only the bytes as written log in.
NOT_PREPARED = "no\u00a0break-\ufb01le-\u00e4"


@pytest.mark.parametrize("password", [NON_ASCII, NOT_PREPARED], ids=["nfkc", "unprepared"])
@pytest.mark.parametrize("mech", SCRAM)
@pytest.mark.parametrize("proto", PROTOS)
def test_non_ascii_password(mp, proto, mech, password):
    user = mp.new_user("scramu")
    mp.dc.set_password(user, password)
    r, user, msgs = fetch_with(mp, proto, mech, password=password, user=user)
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert dovecot_method(mp.dc, user) == [mech], mp.dc.log_text()[-2000:]
    no_secret(r, password)


# ---- submission through the Postfix, AUTH by the Dovecot ---------------------

def outgoing(sender, rcpt, subject):
    return (f"From: <{sender}>\nTo: <{rcpt}>\nSubject: {subject}\n\n"
            f"Sent with SCRAM: {subject}.\n").encode()


def send_with(mp, pf, mech, smtp_password=None, sender=None, smtp_tls="implicit"):
    """sender queues one message to a fresh recipient with `mailpull
    sendmail`, then `mailpull -v send t1` submits it with auth = mech.
    Returns (result, sender, recipient, message)."""
    a = sender or mp.new_user("ssnd")
    b = mp.new_user("srcv")
    mp.dc.ensure_mailbox(b)
    over = {"save_sent": Raw("no")}
    if mech is not None:
        over["auth"] = Raw(mech.lower())
    if smtp_password is not None:
        over["smtp_password"] = smtp_password
    mp.configure({"t1": mp.sending_account(a, pf, smtp_tls=smtp_tls, **over)})
    data = outgoing(pf.address(a), pf.address(b), f"{mech or 'auto'} {a}")
    q = mp.run("sendmail", "-t", stdin=data)
    assert q.rc == EX_OK, str(q)
    return mp.run("-v", "send", "t1"), a, b, data


@pytest.mark.parametrize("smtp_tls", ["implicit", "starttls"])
@pytest.mark.parametrize("mech", SCRAM)
def test_send(mp, scram_pf, mech, smtp_tls):
    """Submission with auth = scram-*: Postfix logs that mechanism for
    the sender, and the message is delivered to the recipient."""
    r, a, b, data = send_with(mp, scram_pf, mech, smtp_tls=smtp_tls)
    assert r.rc == EX_OK, str(r)
    got = scram_pf.wait_delivered(b, 1)
    assert len(got) == 1 and got[0].endswith(data.split(b"\n\n", 1)[1]), got
    assert f"AUTH {mech}" in r.out + r.err, str(r)
    assert postfix_method(scram_pf, a) == [mech], scram_pf.log_tail()
    no_secret(r, mp.dc.password)


def test_send_automatic_choice(mp, scram_pf):
    r, a, b, data = send_with(mp, scram_pf, None)
    assert r.rc == EX_OK, str(r)
    scram_pf.wait_delivered(b, 1)
    assert "AUTH SCRAM-SHA-256" in r.out + r.err, str(r)
    assert postfix_method(scram_pf, a) == ["SCRAM-SHA-256"], scram_pf.log_tail()
    no_secret(r, mp.dc.password)


@pytest.mark.parametrize("mech", SCRAM)
def test_send_wrong_password(mp, scram_pf, mech):
    """Refused by the submission server: 77, the account and the SMTP
    host named, the message still queued, nothing delivered."""
    r, a, b, data = send_with(mp, scram_pf, mech, smtp_password="not-the-Scram-pw-8")
    assert_error(r, EX_NOPERM, "t1", f"{scram_pf.host}:{scram_pf.smtps_port}")
    no_secret(r, "not-the-Scram-pw-8")
    outbox = os.path.join(mp.maildir(), ".Outbox")
    left = [n for sub in ("new", "cur") for n in os.listdir(os.path.join(outbox, sub))]
    assert len(left) == 1, left
    assert postfix_method(scram_pf, a, timeout=0.5) == []
    assert mp.dc.count(b) == 0


@pytest.mark.parametrize("mech", SCRAM)
def test_send_non_ascii_password(mp, scram_pf, mech):
    a = mp.new_user("ssndu")
    mp.dc.set_password(a, NON_ASCII)
    r, a, b, data = send_with(mp, scram_pf, mech, smtp_password=NON_ASCII, sender=a)
    assert r.rc == EX_OK, str(r)
    scram_pf.wait_delivered(b, 1)
    assert postfix_method(scram_pf, a) == [mech], scram_pf.log_tail()
    no_secret(r, NON_ASCII)


# ---- the harness itself: what the tests above rely on ------------------------

def test_harness_offers_scram(scram_dc, scram_pf):
    """Dovecot offers both SCRAM mechanisms on IMAP and POP3 and Postfix
    passes them on; a per-user password logs in with SCRAM-SHA-256 (a
    client written here, RFC 5802 by the letter), and dc.password does not
    for that user."""
    import imaplib
    import poplib
    import ssl
    ctx = ssl.create_default_context(cafile=scram_dc.ca_file)
    m = imaplib.IMAP4_SSL(scram_dc.host, scram_dc.imaps_port, ssl_context=ctx)
    assert {"AUTH=SCRAM-SHA-1", "AUTH=SCRAM-SHA-256"} <= set(m.capabilities)
    user = scram_dc.new_user("scramh")
    scram_dc.set_password(user, NOT_PREPARED)
    assert m.authenticate("SCRAM-SHA-256", scram_client("sha256", user, NOT_PREPARED))[0] == "OK"
    m.logout()
    m = imaplib.IMAP4_SSL(scram_dc.host, scram_dc.imaps_port, ssl_context=ctx)
    with pytest.raises(imaplib.IMAP4.error):
        m.authenticate("SCRAM-SHA-1", scram_client("sha1", user, scram_dc.password))
    p = poplib.POP3_SSL(scram_dc.host, scram_dc.pop3s_port, context=ctx)
    assert {"SCRAM-SHA-1", "SCRAM-SHA-256"} <= set(p.capa()["SASL"])
    p.quit()
    c = scram_pf.client()
    assert {"SCRAM-SHA-1", "SCRAM-SHA-256"} <= set(c.esmtp_features["auth"].split())
    c.quit()


def scram_client(hname, user, password):
    """An imaplib authenticate() callback doing SCRAM (no channel binding,
    the raw password bytes) and checking the server's signature."""
    import base64
    import hashlib
    import hmac
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={nonce}"
    st = {}

    def step(chal):
        if "auth" not in st and not chal:
            st["auth"] = None
            return ("n,," + first_bare).encode()
        if "auth" not in st or st["auth"] is None:
            sf = chal.decode()
            d = dict(kv.split("=", 1) for kv in sf.split(","))
            assert d["r"].startswith(nonce)
            salted = hashlib.pbkdf2_hmac(hname, password.encode(), base64.b64decode(d["s"]),
                                         int(d["i"]))
            ck = hmac.new(salted, b"Client Key", hname).digest()
            without = f"c=biws,r={d['r']}"
            st["auth"] = f"{first_bare},{sf},{without}".encode()
            sig = hmac.new(hashlib.new(hname, ck).digest(), st["auth"], hname).digest()
            st["server_key"] = hmac.new(salted, b"Server Key", hname).digest()
            proof = base64.b64encode(bytes(x ^ y for x, y in zip(ck, sig))).decode()
            return f"{without},p={proof}".encode()
        want = hmac.new(st["server_key"], st["auth"], hname).digest()
        assert chal.decode() == "v=" + base64.b64encode(want).decode()
        return b""
    return step
