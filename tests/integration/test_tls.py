"""TLS and credential rules: no secret crosses the wire in clear or reaches a log."""

import base64
import re

import pytest

from conftest import EX_OK, EX_PROTOCOL, Raw, make_message, multiset, assert_error
from fakepop3 import FakePOP3

CRED_VERBS = {"USER", "PASS", "AUTH", "APOP"}


def login_lines(dc, user):
    return [ln for ln in dc.log_text().splitlines() if f"user=<{user}>" in ln]


def fake_account(mp, srv, tls, **over):
    a = {
        "protocol": Raw("pop3"),
        "host": "127.0.0.1",
        "port": srv.port,
        "tls": Raw(tls),
        "tls_ca_file": mp.dc.ca_file,
        "user": "alice",
        "password": srv.password,
        "maildir": mp.maildir(),
        "keep": True,
        "timeout": Raw("20s"),
    }
    a.update(over)
    return a


def assert_no_credentials(srv, password):
    assert not CRED_VERBS & set(srv.verbs()), srv.commands
    raw = srv.received_all()
    assert password.encode() not in raw, raw
    assert b"alice" not in raw, raw


def test_untrusted_certificate_system_store(mp):
    """Dovecot's certificate comes from a CA the system does not trust."""
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    acct = mp.pop3_account(user)
    del acct["tls_ca_file"]
    mp.configure(acct)
    r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1", mp.dc.host)
    assert login_lines(mp.dc, user) == []
    assert mp.dc.count(user) == 1


def test_untrusted_certificate_sends_nothing(mp):
    """A server whose certificate the configured CA did not sign never sees
    one byte of application data."""
    with FakePOP3(tls="implicit", certfile=mp.dc.untrusted_cert,
                  keyfile=mp.dc.untrusted_key, messages=[make_message(0)]) as srv:
        mp.configure(fake_account(mp, srv, "implicit"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1", "127.0.0.1")
    assert srv.received_all() == b""
    assert srv.commands == []


def test_untrusted_certificate_stls(mp):
    with FakePOP3(certfile=mp.dc.untrusted_cert, keyfile=mp.dc.untrusted_key,
                  capa=["USER", "UIDL", "STLS"], messages=[make_message(0)]) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert_no_credentials(srv, srv.password)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_wrong_host_name(mp, mode):
    """127.0.0.2 is not in Dovecot's certificate, though the CA is trusted."""
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    port = mp.dc.pop3s_port if mode == "implicit" else mp.dc.pop3_port
    mp.configure(mp.pop3_account(user, host=mp.dc.wrong_host, port=port, tls=Raw(mode)))
    r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1", mp.dc.wrong_host)
    assert login_lines(mp.dc, user) == []
    assert mp.dc.count(user) == 1


def test_stls_not_offered(mp):
    with FakePOP3(capa=["USER", "UIDL", "TOP"], certfile=mp.dc.server_cert,
                  keyfile=mp.dc.server_key, messages=[make_message(0)]) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert_no_credentials(srv, srv.password)
    assert "STLS" not in srv.verbs()
    assert mp.messages() == []


def test_stls_refused(mp):
    with FakePOP3(capa=["USER", "UIDL", "STLS"], stls_reply="-ERR not today",
                  certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                  messages=[make_message(0)]) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert_no_credentials(srv, srv.password)
    assert "STLS" in srv.verbs()


def test_data_after_stls_response(mp):
    """Bytes after the +OK to STLS (a plaintext injection) abort the session."""
    with FakePOP3(capa=["USER", "UIDL", "STLS"], inject=b"+OK injected\r\n",
                  certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                  messages=[make_message(0)]) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert_error(r, EX_PROTOCOL, "t1")
    assert "data after STARTTLS response" in r.err, str(r)
    assert_no_credentials(srv, srv.password)
    assert mp.messages() == []


def test_stls_good_fake_server(mp):
    """Control for the tests above: the same fake server, behaving, works."""
    msgs = [make_message(i) for i in range(2)]
    with FakePOP3(capa=["USER", "UIDL", "STLS"], certfile=mp.dc.server_cert,
                  keyfile=mp.dc.server_key, messages=msgs) as srv:
        mp.configure(fake_account(mp, srv, "starttls"))
        r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    # Capabilities are asked again after the handshake.
    verbs = srv.verbs()
    assert verbs.index("STLS") < len(verbs) - 1
    assert "CAPA" in verbs[verbs.index("STLS") + 1:], verbs


def secret_forms(user, password):
    forms = [password]
    for authz in ("", user):
        forms.append(base64.b64encode(f"{authz}\0{user}\0{password}".encode()).decode())
    forms.append(base64.b64encode(password.encode()).decode())
    return forms


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_password_never_in_trace(mp, mode):
    user = mp.new_user()
    msgs = [make_message(i) for i in range(2)]
    mp.dc.add_messages(user, msgs)
    port = mp.dc.pop3s_port if mode == "implicit" else mp.dc.pop3_port
    mp.configure(mp.pop3_account(user, port=port, tls=Raw(mode)))
    r = mp.run("-v")
    assert r.rc == EX_OK, str(r)
    out = r.out + r.err
    for s in secret_forms(user, mp.dc.password):
        assert s not in out, f"secret form {s!r} in the -v output"
    assert re.search(r"^C: ", out, re.M), "no C: lines in the -v trace"
    assert re.search(r"^S: ", out, re.M), "no S: lines in the -v trace"
    assert "***" in out
    assert multiset(mp.messages()) == multiset(msgs)


def test_password_not_in_error_output(mp):
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    mp.configure(mp.pop3_account(user, password="Wr0ng-Secret-99"))
    r = mp.run("-v")
    assert_error(r, 77, "t1")
    for s in secret_forms(user, "Wr0ng-Secret-99"):
        assert s not in r.out + r.err
