"""The private Postfix itself (tests/postfix.py), checked with Python's own
smtplib before any mailpull code relies on it: AUTH over implicit TLS and
over STARTTLS against the test CA, delivery by LMTP into the Dovecot, and
the refusals the send tests count on."""

import base64
import imaplib
import socket
import ssl
import smtplib

import pytest


def message(frm, to, subject, extra=""):
    return (f"From: Sender <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Sat, 05 Dec 2026 07:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@client.test>\r\n{extra}\r\n"
            f"Hello.\r\n.leading dot\r\n").encode()


def auth_plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode())


def strip_trace(data):
    """The message without the trace fields Postfix and Dovecot put on top
    (Return-Path, Delivered-To, Received with their continuation lines)."""
    lines = data.split(b"\n")
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.split(b":", 1)[0].lower() in (b"return-path", b"delivered-to", b"received",
                                           b"x-original-to"):
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            continue
        break
    return b"\n".join(lines[i:])


def lf(data):
    return data.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_auth_plain_and_delivery(postfix, dovecot, starttls):
    a, b = dovecot.new_user("a"), dovecot.new_user("b")
    c = postfix.client(starttls=starttls)
    # AUTH is offered over TLS; PLAIN is what the test logs in with.
    assert "PLAIN" in c.esmtp_features.get("auth", ""), c.esmtp_features
    for ext in ("pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "size"):
        assert ext in c.esmtp_features, (ext, c.esmtp_features)
    code, text = c.docmd("AUTH", "PLAIN " + auth_plain(a, dovecot.password).decode())
    assert code == 235, text
    data = message(postfix.address(a), postfix.address(b), f"harness {a}")
    refused = c.sendmail(postfix.address(a), [postfix.address(b)], data)
    assert refused == {}
    c.quit()
    got = postfix.wait_delivered(b, 1)
    assert len(got) == 1
    # Delivered as sent: only trace fields on top, line ends LF on disk.
    assert strip_trace(got[0]) == lf(data), got[0]
    assert f"for <{postfix.address(b)}>".encode() in got[0]


def test_certificate_is_the_test_ca(postfix, dovecot):
    """The server certificate verifies with the test CA only."""
    ctx = ssl.create_default_context(cafile=dovecot.untrusted_ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(postfix.host, postfix.smtps_port, context=ctx, timeout=10)
    c = smtplib.SMTP(postfix.host, postfix.submission_port, timeout=10)
    c.ehlo("client.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        c.starttls(context=ctx)
    c.close()


def test_several_recipients(postfix, dovecot):
    """One transaction to two users (To and Bcc): each gets it once."""
    a, b, cc = (dovecot.new_user(p) for p in "abc")
    c = postfix.client(user=a)
    data = message(postfix.address(a), postfix.address(b), f"two {a}")
    assert c.sendmail(postfix.address(a), [postfix.address(b), postfix.address(cc)], data) == {}
    c.quit()
    for u in (b, cc):
        got = postfix.wait_delivered(u, 1)
        assert [strip_trace(m) for m in got] == [lf(data)]


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_wrong_password_refused(postfix, dovecot, starttls):
    a = dovecot.new_user("a")
    c = postfix.client(starttls=starttls)
    code, text = c.docmd("AUTH", "PLAIN " + auth_plain(a, dovecot.password + "x").decode())
    assert code == 535 and b"5.7.8" in text, (code, text)
    # The right one still works in the same session.
    code, text = c.docmd("AUTH", "PLAIN " + auth_plain(a, dovecot.password).decode())
    assert code == 235, (code, text)
    c.quit()


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_no_relay_without_auth(postfix, dovecot, starttls):
    """Without AUTH nothing is accepted, not even for the test domain."""
    a, b = dovecot.new_user("a"), dovecot.new_user("b")
    c = postfix.client(starttls=starttls)
    assert c.mail(postfix.address(a))[0] == 250
    code, text = c.rcpt(postfix.address(b))
    assert code == 554 and b"5.7.1" in text, (code, text)
    c.close()
    assert dovecot.count(b) == 0


def test_starttls_port_refuses_mail_before_tls(postfix, dovecot):
    a = dovecot.new_user("a")
    c = smtplib.SMTP(postfix.host, postfix.submission_port, timeout=10)
    c.ehlo("client.test")
    assert c.has_extn("starttls")
    assert not c.has_extn("auth"), "AUTH offered before TLS"
    code, text = c.mail(postfix.address(a))
    assert code == 530 and b"STARTTLS" in text, (code, text)
    code, text = c.docmd("AUTH", "PLAIN AGZvbwBiYXI=")
    assert code >= 500, (code, text)
    c.close()


def test_scripted_refusals(postfix, dovecot):
    """reject* gets 550, tempfail* 450, another domain 554, even after AUTH."""
    a, b = dovecot.new_user("a"), dovecot.new_user("b")
    c = postfix.client(user=a)
    assert c.mail(postfix.address(a))[0] == 250
    code, text = c.rcpt(postfix.address("reject" + b))
    assert code == 550 and b"5.1.1" in text, (code, text)
    code, text = c.rcpt(postfix.address("tempfail" + b))
    assert code == 450 and b"4.2.0" in text, (code, text)
    code, text = c.rcpt(f"{b}@example.org")
    assert code == 554 and b"5.7.1" in text, (code, text)
    assert c.rcpt(postfix.address(b))[0] == 250
    code, _ = c.data(message(postfix.address(a), postfix.address(b), f"partly {a}"))
    assert code == 250
    c.quit()
    assert len(postfix.wait_delivered(b, 1)) == 1


def test_bare_lf_refused(postfix, dovecot):
    """A message line ending in a bare LF is refused: mailpull must send CRLF."""
    a, b = dovecot.new_user("a"), dovecot.new_user("b")
    ctx = postfix.tls_context()
    raw = socket.create_connection((postfix.host, postfix.smtps_port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname=postfix.host)
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            ln = f.readline()
            assert ln, "connection closed"
            lines.append(ln)
            if ln[3:4] != b"-":
                return int(ln[:3]), b"".join(lines)
    auth = auth_plain(a, dovecot.password)
    assert reply()[0] == 220
    for cmd, want in ((b"EHLO client.test", 250), (b"AUTH PLAIN " + auth, 235),
                      (f"MAIL FROM:<{postfix.address(a)}>".encode(), 250),
                      (f"RCPT TO:<{postfix.address(b)}>".encode(), 250), (b"DATA", 354)):
        s.sendall(cmd + b"\r\n")
        code, text = reply()
        assert code == want, (cmd, text)
    s.sendall(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
    code, text = reply()
    assert code >= 500 and b"bare" in text.lower(), text
    s.close()
    assert dovecot.count(b) == 0


def test_sent_special_use(dovecot):
    """A user's "Sent" folder carries \\Sent (RFC 6154) once it exists."""
    u = dovecot.new_user("s")
    dovecot.create_mailbox(u, "Sent")
    ctx = ssl.create_default_context(cafile=dovecot.ca_file)
    with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=ctx) as m:
        m.login(u, dovecot.password)
        typ, data = m.list('""', '"*"')
        assert typ == "OK"
        sent = [ln for ln in data if ln.endswith(b' "Sent"') or ln.endswith(b" Sent")]
        assert len(sent) == 1 and b"\\Sent" in sent[0], data


def test_make_postfix_other_settings(make_postfix, dovecot):
    """A second instance with its own main.cf settings: a small SIZE, and
    a message over it refused for good (552 5.3.4)."""
    pf = make_postfix(main={"message_size_limit": "20000"})
    a, b = dovecot.new_user("a"), dovecot.new_user("b")
    c = pf.client(starttls=True, user=a)
    assert c.esmtp_features.get("size") == "20000", c.esmtp_features
    big = message(pf.address(a), pf.address(b), f"big {a}") + b"x" * 76 + b"\r\n"
    big += (b"y" * 76 + b"\r\n") * 300
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        c.sendmail(pf.address(a), [pf.address(b)], big)    # smtplib adds SIZE=
    assert e.value.smtp_code == 552 and b"5.3.4" in e.value.smtp_error, e.value
    c.close()
