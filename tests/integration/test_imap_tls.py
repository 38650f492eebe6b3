"""IMAP TLS and credential rules: STARTTLS is all or nothing, PREAUTH in
clear is refused, LOGINDISABLED is obeyed; no secret crosses the wire in
clear or reaches a log."""

import re

import pytest

from conftest import EX_OK, EX_NOPERM, EX_PROTOCOL, Raw, make_message, multiset, assert_error
from fakeimap import FakeIMAP
from test_tls import login_lines, secret_forms

CRED_VERBS = {"LOGIN", "AUTHENTICATE"}
STARTTLS_CAPS = ["IMAP4rev1", "STARTTLS", "AUTH=PLAIN", "SASL-IR", "UIDPLUS"]


def fake_account(mp, srv, tls, **over):
    a = {
        "protocol": Raw("imap"),
        "host": "127.0.0.1",
        "port": srv.port,
        "tls": Raw(tls),
        "tls_ca_file": mp.dc.ca_file,
        "user": "alice",
        "password": srv.password,
        "maildir": mp.maildir(),
        "timeout": Raw("20s"),
    }
    a.update(over)
    return a


def fake(mp, **kw):
    kw.setdefault("certfile", mp.dc.server_cert)
    kw.setdefault("keyfile", mp.dc.server_key)
    kw.setdefault("messages", [make_message(0, tag="fake")])
    return FakeIMAP(**kw)


def assert_no_credentials(srv):
    assert not CRED_VERBS & set(srv.verbs()), srv.commands
    raw = srv.received_all()
    assert srv.password.encode() not in raw, raw
    assert b"alice" not in raw, raw
    for s in secret_forms("alice", srv.password):
        assert s.encode() not in raw, raw


def assert_nothing_selected(srv):
    assert not {"SELECT", "EXAMINE", "UID FETCH"} & set(srv.verbs()), srv.commands


def test_imap_starttls_good_fake_server(mp):
    """Control for the tests below: the same fake server, behaving, works,
    and capabilities are asked again after the handshake."""
    msgs = [make_message(i, tag="good") for i in range(2)]
    with fake(mp, caps=STARTTLS_CAPS, messages=msgs) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    verbs = srv.verbs()
    i = verbs.index("STARTTLS")
    after = verbs[i + 1:]
    cred = [j for j, v in enumerate(after) if v in CRED_VERBS]
    assert cred, verbs
    assert "CAPABILITY" in after[:cred[0]], verbs
    assert srv.early_data == [], srv.early_data


def test_imap_starttls_not_offered(mp):
    with fake(mp, caps=["IMAP4rev1", "AUTH=PLAIN", "UIDPLUS"]) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert_no_credentials(srv)
    assert_nothing_selected(srv)
    assert "STARTTLS" not in srv.verbs()
    assert mp.messages() == []


@pytest.mark.parametrize("reply", ["NO not today", "BAD what", "NO [UNAVAILABLE] TLS broken"])
def test_imap_starttls_refused(mp, reply):
    with fake(mp, caps=STARTTLS_CAPS, starttls_reply=reply) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert_no_credentials(srv)
    assert_nothing_selected(srv)
    assert "STARTTLS" in srv.verbs()
    # Never retried in clear.
    assert srv.connections == 1


def test_imap_data_after_starttls_response(mp):
    """Bytes after the OK to STARTTLS (a plaintext injection) abort the session."""
    with fake(mp, caps=STARTTLS_CAPS,
              inject=b"* CAPABILITY IMAP4rev1 AUTH=PLAIN LOGIN\r\n") as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert "data after STARTTLS response" in r.err, str(r)
    assert_no_credentials(srv)
    assert mp.messages() == []


def test_imap_preauth_on_plain_connection(mp):
    """PREAUTH on the plain port while TLS is required: close at once, no
    LOGIN, no AUTHENTICATE, no mailbox opened."""
    with fake(mp, caps=STARTTLS_CAPS, greeting="* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] "
              "welcome, you are logged in") as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert_no_credentials(srv)
    assert_nothing_selected(srv)
    assert mp.messages() == []


def test_imap_logindisabled_without_sasl(mp):
    """LOGINDISABLED and no AUTH= mechanism mailpull can use: an error, and
    LOGIN is never sent."""
    caps = ["IMAP4rev1", "LOGINDISABLED", "AUTH=GSSAPI", "UIDPLUS"]
    with fake(mp, tls="implicit", caps=caps, caps_tls=caps) as srv:
        mp.configure(fake_account(mp, srv, "implicit"))
        r = mp.run()
    assert r.rc in (EX_PROTOCOL, EX_NOPERM), str(r)
    assert "mailpull: error:" in r.err, str(r)
    assert "t1" in r.err, str(r)
    assert_no_credentials(srv)
    assert mp.messages() == []


def test_imap_logindisabled_with_auth_plain(mp):
    """LOGINDISABLED with AUTH=PLAIN: AUTHENTICATE PLAIN, never LOGIN."""
    caps = ["IMAP4rev1", "LOGINDISABLED", "AUTH=PLAIN", "UIDPLUS"]
    msgs = [make_message(i, tag="ldplain") for i in range(2)]
    with fake(mp, tls="implicit", caps=caps, caps_tls=caps, messages=msgs) as srv:
        mp.configure(fake_account(mp, srv, "implicit"))
        r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert "LOGIN" not in srv.verbs(), srv.commands
    assert "AUTHENTICATE" in srv.verbs(), srv.commands
    assert multiset(mp.messages()) == multiset(msgs)


def test_imap_untrusted_certificate_sends_nothing(mp):
    with FakeIMAP(tls="implicit", certfile=mp.dc.untrusted_cert, keyfile=mp.dc.untrusted_key,
                  messages=[make_message(0)]) as srv:
        mp.configure(fake_account(mp, srv, "implicit"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1", "127.0.0.1")
    assert srv.received_all() == b""
    assert srv.commands == []


def test_imap_untrusted_certificate_starttls(mp):
    with FakeIMAP(certfile=mp.dc.untrusted_cert, keyfile=mp.dc.untrusted_key,
                  caps=STARTTLS_CAPS, messages=[make_message(0)]) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert_no_credentials(srv)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_imap_wrong_host_name(mp, mode):
    """127.0.0.2 is not in Dovecot's certificate, though the CA is trusted."""
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    port = mp.dc.imaps_port if mode == "implicit" else mp.dc.imap_port
    mp.configure(mp.imap_account(user, host=mp.dc.wrong_host, port=port, tls=Raw(mode)))
    r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1", mp.dc.wrong_host)
    assert login_lines(mp.dc, user) == []
    assert mp.messages() == []


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_imap_password_never_in_trace(mp, mode):
    user = mp.new_user()
    msgs = [make_message(i) for i in range(2)]
    mp.dc.add_messages(user, msgs)
    port = mp.dc.imaps_port if mode == "implicit" else mp.dc.imap_port
    mp.configure(mp.imap_account(user, port=port, tls=Raw(mode)))
    r = mp.run("-v")
    assert r.rc == EX_OK, str(r)
    out = r.out + r.err
    for s in secret_forms(user, mp.dc.password):
        assert s not in out, f"secret form {s!r} in the -v output"
    assert re.search(r"^C: ", out, re.M), "no C: lines in the -v trace"
    assert re.search(r"^S: ", out, re.M), "no S: lines in the -v trace"
    assert multiset(mp.messages()) == multiset(msgs)


def test_imap_wrong_password_not_in_error_output(mp):
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    mp.configure(mp.imap_account(user, password="Wr0ng-Secret-99"))
    r = mp.run("-v")
    assert_error(r, EX_NOPERM, "t1")
    for s in secret_forms(user, "Wr0ng-Secret-99"):
        assert s not in r.out + r.err
