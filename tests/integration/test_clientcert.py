"""Client certificates and SASL EXTERNAL (RFC 4422 appendix A) against a
private Dovecot that asks every TLS client for a certificate of the test
CA (ssl_verify_client_cert), takes the user name from its commonName
(auth_ssl_username_from_cert) and refuses any login without a valid one
(auth_ssl_require_client_cert). mailpull presents tls_cert / tls_key and
logs in with auth = external: no password anywhere.

The login is proven on the server's side: Dovecot logs
"Login: user=<U>, method=EXTERNAL".
"""

import os
import re

import pytest

from conftest import EX_CONFIG, EX_NOPERM, EX_OK, Raw, assert_error, make_message, multiset
from dovecot import Dovecot

PROTOS = ["pop3", "imap"]


@pytest.fixture(scope="module")
def cert_dc():
    dc = Dovecot(client_certs=True, auth_delays=False)
    dc.start()
    yield dc
    if os.environ.get("MAILPULL_KEEP_DOVECOT"):
        dc.stop()
        print(f"\nDovecot files kept in {dc.workdir}")
    else:
        dc.cleanup()


@pytest.fixture
def server_name():
    """mp.dc is the module's Dovecot."""
    return "cert_dc"


def logins(dc, user):
    return re.findall(rf"Login: user=<{re.escape(user)}>, method=([A-Z0-9-]+)", dc.log_text())


def external_account(mp, proto, user, cert=None, key=None, **over):
    """An account of user with auth = external and no password."""
    a = (mp.pop3_account if proto == "pop3" else mp.imap_account)(user, **over)
    a["password"] = None
    a["auth"] = Raw("external")
    if cert:
        a["tls_cert"] = cert
    if key:
        a["tls_key"] = key
    return a


def fill(mp, user, n=2):
    msgs = [make_message(i, tag=user) for i in range(n)]
    mp.dc.add_messages(user, msgs)
    return msgs


@pytest.mark.parametrize("proto", PROTOS)
def test_fetch_external(mp, proto):
    """tls_cert + tls_key (0600) + auth = external: the server maps the
    certificate to the user and the mail arrives."""
    user = mp.new_user("cert")
    msgs = fill(mp, user)
    cert, key = mp.dc.make_client_cert(user, mp.path("certs"))
    mp.configure(external_account(mp, proto, user, cert, key))
    r = mp.run("-v")
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert logins(mp.dc, user) == ["EXTERNAL"], mp.dc.log_text()[-2000:]
    want = "AUTHENTICATE EXTERNAL" if proto == "imap" else "AUTH EXTERNAL"
    assert want in r.out + r.err, str(r)


@pytest.mark.parametrize("proto", PROTOS)
def test_key_in_the_certificate_file(mp, proto):
    """tls_key unset: the key is read from tls_cert (one 0600 PEM file)."""
    user = mp.new_user("certk")
    msgs = fill(mp, user)
    cert, key = mp.dc.make_client_cert(user, mp.path("certs"))
    both = mp.path("certs", "both.pem")
    fd = os.open(both, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for p in (cert, key):
            with open(p, "rb") as f:
                out.write(f.read())
    mp.configure(external_account(mp, proto, user, both))
    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert logins(mp.dc, user) == ["EXTERNAL"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=["0644", "0640", "0604"])
def test_key_readable_by_others_refused(mp, mode):
    """A key file group or others may read is refused before any login:
    a configuration error (78) naming the file and saying chmod 600."""
    user = mp.new_user("certm")
    fill(mp, user)
    cert, key = mp.dc.make_client_cert(user, mp.path("certs"), key_mode=mode)
    mp.configure(external_account(mp, "imap", user, cert, key))
    r = mp.run()
    assert_error(r, EX_CONFIG, "chmod 600", key)
    assert mp.messages() == []
    assert logins(mp.dc, user) == []
    assert mp.dc.count(user) == 2


@pytest.mark.parametrize("proto", PROTOS)
def test_external_without_certificate(mp, proto):
    """auth = external without tls_cert cannot log in anywhere: refused
    as a configuration error (78) that says to set tls_cert, before any
    connection."""
    user = mp.new_user("certn")
    fill(mp, user)
    mp.configure(external_account(mp, proto, user))
    r = mp.run()
    assert_error(r, EX_CONFIG, "t1", "tls_cert")
    assert mp.messages() == []
    assert user not in mp.dc.log_text()


@pytest.mark.parametrize("proto", PROTOS)
def test_password_without_certificate_refused(mp, proto):
    """No client certificate configured: a server that requires one refuses
    even the right password (77, the account and host named), and the
    error quotes its reason (no valid certificate)."""
    user = mp.new_user("certp")
    fill(mp, user)
    mp.configure((mp.pop3_account if proto == "pop3" else mp.imap_account)(user))
    r = mp.run()
    assert_error(r, EX_NOPERM, "t1", mp.dc.host, "certificate")
    assert mp.messages() == []
    assert logins(mp.dc, user) == []


@pytest.mark.parametrize("proto", PROTOS)
def test_certificate_of_another_ca(mp, proto):
    """A certificate the server's CA did not sign maps to nobody: refused
    (77), nothing fetched."""
    user = mp.new_user("certu")
    fill(mp, user)
    cert, key = mp.dc.make_client_cert(user, mp.path("certs"), untrusted=True)
    mp.configure(external_account(mp, proto, user, cert, key))
    r = mp.run()
    assert_error(r, EX_NOPERM, "t1", mp.dc.host)
    assert mp.messages() == []
    assert logins(mp.dc, user) == []


def test_key_not_matching_certificate(mp):
    """tls_key of another certificate: a configuration error naming the file."""
    user = mp.new_user("certx")
    cert, _ = mp.dc.make_client_cert(user, mp.path("certs"))
    _, other_key = mp.dc.make_client_cert(user, mp.path("certs"))
    mp.configure(external_account(mp, "imap", user, cert, other_key))
    r = mp.run()
    assert r.rc == EX_CONFIG, str(r)
    assert "mailpull: error:" in r.err and (cert in r.err or other_key in r.err), str(r)
    assert logins(mp.dc, user) == []


# ---- the harness itself -----------------------------------------------------

def test_harness_external(cert_dc, tmp_path):
    """Python's own TLS with a certificate from make_client_cert logs in
    with EXTERNAL as the certificate's CN; without one it is refused."""
    import imaplib
    import ssl
    user = cert_dc.new_user("certh")
    cert, key = cert_dc.make_client_cert(user, str(tmp_path))
    assert os.stat(key).st_mode & 0o777 == 0o600
    ctx = ssl.create_default_context(cafile=cert_dc.ca_file)
    ctx.load_cert_chain(cert, key)
    m = imaplib.IMAP4_SSL(cert_dc.host, cert_dc.imaps_port, ssl_context=ctx)
    assert "AUTH=EXTERNAL" in m.capabilities
    assert m.authenticate("EXTERNAL", lambda chal: b"")[0] == "OK"
    m.logout()
    assert logins(cert_dc, user) == ["EXTERNAL"]
    bare = ssl.create_default_context(cafile=cert_dc.ca_file)
    m = imaplib.IMAP4_SSL(cert_dc.host, cert_dc.imaps_port, ssl_context=bare)
    with pytest.raises(imaplib.IMAP4.error, match="certificate"):
        m.authenticate("EXTERNAL", lambda chal: b"")
