"""Built-in OAuth2 end to end: `mailpull authorize` against a loopback
provider (tests/tokenserver.py: device grant, loopback redirect with PKCE,
refresh grant with rotation, invalid_grant, expiry), then fetching (IMAP
and POP3, XOAUTH2 and OAUTHBEARER) and sending (the private Postfix) with
the token, checked by the private Dovecot's oauth2 passdb, which asks the
provider by introspection (RFC 7662) whether the token is live and whose.

The test plays the user: it reads what `mailpull authorize` prints on its
terminal (a pty), approves the user code it shows, or opens the URL it
shows as a browser would (GET without following, then the redirect's
Location on mailpull's loopback listener). The provider counts its token
grants, so "the cached token was reused" is "no refresh grant happened".
"""

import os
import re
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import (EX_CONFIG, EX_CRASH, EX_NOPERM, EX_OK, EX_TEMPFAIL, Raw, assert_error, make_message,
                      multiset)
from dovecot import Dovecot
import postfix as postfix_mod
from tokenserver import TokenServer, browser_get

MECHS = ["XOAUTH2", "OAUTHBEARER"]
PROTOS = ["pop3", "imap"]


def _keep_or_clean(server, what):
    if os.environ.get("MAILPULL_KEEP_DOVECOT"):
        server.stop()
        print(f"\n{what} files kept in {server.workdir}")
    else:
        server.cleanup()


@pytest.fixture(scope="module")
def provider():
    """The module's provider: listening first (the Dovecot must know its
    introspection URL), then serving HTTPS with the Dovecot's certificate."""
    ts = TokenServer().start()
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def oauth_dc(provider):
    dc = Dovecot(lmtp=True, auth_inet=True, auth_delays=False,
                 oauth2_introspection_url=provider.introspection_url)
    dc.start()
    provider.set_certificate(dc.server_cert, dc.server_key)
    yield dc
    _keep_or_clean(dc, "Dovecot")


@pytest.fixture(scope="module")
def oauth_pf(oauth_dc):
    why = postfix_mod.unavailable()
    if why:
        pytest.fail(why)
    pf = postfix_mod.Postfix(oauth_dc).start()
    yield pf
    _keep_or_clean(pf, "Postfix")


@pytest.fixture
def server_name():
    """mp.dc is the module's Dovecot."""
    return "oauth_dc"


@pytest.fixture
def ts(provider, oauth_dc):
    """The provider, fresh for this test: no tokens, counters at zero."""
    provider.reset()
    return provider


CLIENT_ID = "mailpull-test-client"


def oauth_account(mp, ts, proto, user, mech="XOAUTH2", flow="device", **over):
    """An account of user with oauth2 = custom at the provider: the device
    grant (flow="device") or the loopback redirect (flow="redirect")."""
    a = (mp.pop3_account if proto == "pop3" else mp.imap_account)(user)
    a["password"] = None
    a.update({"auth": Raw(mech.lower()), "oauth2": Raw("custom"),
              "oauth2_token_url": ts.token_url, "oauth2_client_id": CLIENT_ID,
              "oauth2_scope": "mail offline_access"})
    if flow == "device":
        a["oauth2_device_url"] = ts.device_url
    else:
        a["oauth2_auth_url"] = ts.auth_url
    a.update(over)
    return a


def token_file(mp, name="t1"):
    return os.path.join(mp.state_dir, f"{name}.oauth2")


def token_file_bytes(mp, name="t1"):
    with open(token_file(mp, name), "rb") as f:
        return f.read()


def logins(dc, user):
    return re.findall(rf"Login: user=<{re.escape(user)}>, method=([A-Z0-9-]+)", dc.log_text())


class Terminal:
    """mailpull run on a pseudo-terminal (what `authorize` talks to), its
    output collected as it comes."""

    def __init__(self, mp, *args):
        master, slave = os.openpty()
        cmd = mp.command() + ["-c", mp.config_path] + list(args)
        self.p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=mp.env,
                                  cwd=mp.tmp, start_new_session=True)
        os.close(slave)
        self.master = master
        self.buf = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.timeout = mp.timeout

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                break
            if not data:
                break
            with self.lock:
                self.buf += data

    @property
    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace").replace("\r\n", "\n")

    def wait_for(self, find, timeout=30.0):
        """Polls find(text) until it returns something true; fails with the
        output so far when the program ends or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            got = find(self.text)
            if got:
                return got
            if self.p.poll() is not None:
                time.sleep(0.1)     # the last output may still be in the pty
                got = find(self.text)
                if got:
                    return got
                raise AssertionError(f"mailpull ended (exit {self.p.returncode}) before "
                                     f"showing what was expected:\n{self.text}")
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(f"not shown within {timeout} s:\n{self.text}")
            time.sleep(0.05)

    def finish(self, timeout=None):
        try:
            rc = self.p.wait(timeout or self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"mailpull authorize did not end:\n{self.text}")
        self.reader.join(5)
        os.close(self.master)
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def authorize_device(mp, ts, user, approve=True):
    """`mailpull authorize t1` with the device grant: the user code it
    prints is approved (or denied) as user. Returns (exit status, output)."""
    ts.register_client(CLIENT_ID)
    term = Terminal(mp, "authorize", "t1")

    def shown_code(text):
        return next((c for c in ts.pending_user_codes() if c in text), None)
    code = term.wait_for(shown_code)
    assert ts.verification_uri in term.text, term.text
    if approve:
        ts.approve(code, user)
    else:
        ts.deny(code)
    rc = term.finish()
    return rc, term.text


AUTH_URL_RE = re.compile(r"https://127\.0\.0\.1:\d+/authorize\?[^\s\"'<>]+")


def authorize_redirect(mp, ts, user, secret=None, forged_first=False):
    """`mailpull authorize t1` with the loopback redirect: the URL it
    prints is opened as a browser would, the provider's redirect followed
    to mailpull's listener (forged_first: after a request with another
    state, which must be answered 400 and ignored). Returns (exit status,
    output, the URL's query)."""
    ts.register_client(CLIENT_ID, secret)
    ts.consent_user = user
    term = Terminal(mp, "authorize", "t1")
    m = term.wait_for(lambda text: AUTH_URL_RE.search(text))
    url = m.group(0)
    assert url.startswith(ts.auth_url + "?"), url
    status, location, body = browser_get(url, mp.dc.ca_file)
    assert status == 302 and location, (status, body)
    if forged_first:
        forged = re.sub(r"([?&]state=)[^&]*", r"\1forged", location)
        assert forged != location, location
        status, _, body = browser_get(forged, None)
        assert status == 400, (status, body, term.text)
        assert term.p.poll() is None, f"mailpull gave up on a forged answer:\n{term.text}"
    status, _, body = browser_get(location, None)
    assert status == 200, (status, body, term.text)
    rc = term.finish()
    return rc, term.text, dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def fill(mp, user, n=2):
    msgs = [make_message(i, tag=user) for i in range(n)]
    mp.dc.add_messages(user, msgs)
    return msgs


def check_token_file(mp, ts, user):
    """0600, and holding the newest refresh token the provider gave user."""
    st = os.stat(token_file(mp))
    assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
    newest = ts.issued_refresh_tokens(user)[-1]
    assert newest.encode() in token_file_bytes(mp)
    return newest


# ---- the first grant ---------------------------------------------------------

@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("proto", PROTOS)
def test_device_grant_then_fetch(mp, ts, proto, mech):
    """authorize by the device grant; the fetch logs in with the token
    (Dovecot asks the provider, the login is mech on its side) and uses
    the access token the grant gave: no refresh, not on a second run
    either."""
    user = mp.new_user("oa")
    msgs = fill(mp, user)
    mp.configure(oauth_account(mp, ts, proto, user, mech))
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    assert ts.grants["device_code"] == 1
    check_token_file(mp, ts, user)
    for tok in ts.issued_access_tokens(user) + ts.issued_refresh_tokens(user):
        assert tok not in text, "a token was shown on the terminal"

    r = mp.run("-v")
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert logins(mp.dc, user) == [mech], mp.dc.log_text()[-2000:]
    assert ts.introspections["active"] >= 1
    for tok in ts.issued_access_tokens(user) + ts.issued_refresh_tokens(user):
        assert tok not in r.out + r.err, "a token is in the -v trace"

    mp.dc.add_messages(user, [make_message(9, tag=user)])
    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert len(mp.messages()) == 3
    assert logins(mp.dc, user) == [mech, mech]
    assert ts.requests["refresh_token"] == 0, "the cached access token was not reused"


def test_device_grant_denied(mp, ts):
    """The user says no: authorize fails (77), nothing is saved."""
    user = mp.new_user("oad")
    mp.configure(oauth_account(mp, ts, "imap", user))
    rc, text = authorize_device(mp, ts, user, approve=False)
    assert rc == EX_NOPERM, text
    assert not os.path.exists(token_file(mp))
    assert ts.grants["device_code"] == 0


def test_device_grant_slow_down(mp, ts):
    """slow_down (RFC 8628 section 3.5): the client waits 5 s more between
    polls from then on; polling sooner would earn another slow_down."""
    user = mp.new_user("oaw")
    fill(mp, user)
    ts.slow_down_polls = 1
    mp.configure(oauth_account(mp, ts, "imap", user))
    t0 = time.monotonic()
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    assert ts.errors["slow_down"] == 1, ts.errors
    assert ts.requests["device_code"] == 2
    assert time.monotonic() - t0 >= ts.device_interval + ts.slow_down_step
    check_token_file(mp, ts, user)


def test_device_code_expires(mp, ts):
    """Nobody enters the code before it expires: authorize gives up (75,
    a temporary failure) and says to run it again; nothing saved."""
    user = mp.new_user("oax")
    ts.device_expires_in = 3
    mp.configure(oauth_account(mp, ts, "imap", user))
    ts.register_client(CLIENT_ID)
    term = Terminal(mp, "authorize", "t1")
    term.wait_for(lambda text: any(c in text for c in ts.pending_user_codes()))
    rc = term.finish(30)
    assert rc == EX_TEMPFAIL, term.text
    assert "mailpull authorize t1 again" in term.text
    assert not os.path.exists(token_file(mp))
    assert ts.grants["device_code"] == 0


def test_device_poll_outlives_an_unavailable_endpoint(mp, ts):
    """The token endpoint answers 503 twice while the code is good: the
    grant goes on, each wait doubled (1 s, 2 s, then 4 s), and succeeds."""
    user = mp.new_user("oau")
    ts.unavailable_polls = 2
    mp.configure(oauth_account(mp, ts, "imap", user))
    t0 = time.monotonic()
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    assert ts.errors["temporarily_unavailable"] == 2, ts.errors
    assert ts.requests["device_code"] == 3, ts.requests
    assert time.monotonic() - t0 >= 1 + 2 + 4
    check_token_file(mp, ts, user)


def test_device_poll_endpoint_down_until_expiry(mp, ts):
    """The endpoint stays down until the code expires: authorize gives up
    (75) and says why (the endpoint's last failure) and what to do."""
    user = mp.new_user("oae")
    ts.device_expires_in = 4
    ts.unavailable_polls = 100
    mp.configure(oauth_account(mp, ts, "imap", user))
    ts.register_client(CLIENT_ID)
    term = Terminal(mp, "authorize", "t1")
    term.wait_for(lambda text: any(c in text for c in ts.pending_user_codes()))
    rc = term.finish(30)
    assert rc == EX_TEMPFAIL, term.text
    assert "while the token endpoint failed" in term.text, term.text
    assert "HTTP 503" in term.text, term.text
    assert "mailpull authorize t1 again" in term.text
    assert ts.errors["temporarily_unavailable"] >= 1, ts.errors
    assert not os.path.exists(token_file(mp))


@pytest.mark.parametrize("flow", ["device", "redirect"])
def test_authorize_without_refresh_token_warns(mp, ts, flow):
    """A provider that gives no refresh token: authorize succeeds, saves the
    access token, and tells the user to come back when it expires."""
    user = mp.new_user("oan")
    fill(mp, user)
    ts.issue_refresh = False
    mp.configure(oauth_account(mp, ts, "imap", user, flow=flow))
    if flow == "device":
        rc, text = authorize_device(mp, ts, user)
    else:
        rc, text, _ = authorize_redirect(mp, ts, user)
    assert rc == EX_OK, text
    assert not ts.issued_refresh_tokens(user)
    assert re.search(r"no refresh token: run mailpull authorize t1 again when the access "
                     rf"token expires \(in about {ts.expires_in} s\)", text), text
    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert logins(mp.dc, user) == ["XOAUTH2"]


def test_authorize_with_refresh_token_does_not_warn(mp, ts):
    user = mp.new_user("oaq")
    mp.configure(oauth_account(mp, ts, "imap", user))
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    assert "refresh token" not in text, text


@pytest.mark.parametrize("secret", [None, "s3cret-of-the-client"], ids=["public", "confidential"])
def test_loopback_redirect_with_pkce(mp, ts, secret):
    """authorize by the loopback redirect: the URL asks for a code with
    PKCE S256, a state and a redirect to 127.0.0.1; the provider checks the
    verifier (and the client secret when the client has one) before it
    gives tokens; then IMAP fetches with them."""
    user = mp.new_user("oar")
    msgs = fill(mp, user)
    over = {"oauth2_client_secret": secret} if secret else {}
    mp.configure(oauth_account(mp, ts, "imap", user, "XOAUTH2", flow="redirect", **over))
    rc, text, q = authorize_redirect(mp, ts, user, secret)
    assert rc == EX_OK, text
    assert q.get("response_type") == "code" and q.get("client_id") == CLIENT_ID, q
    assert q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) == 43
    assert q.get("state"), q
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+(/.*)?", q.get("redirect_uri", "")), q
    assert ts.grants["authorization_code"] == 1 and not ts.errors, ts.errors
    check_token_file(mp, ts, user)

    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert logins(mp.dc, user) == ["XOAUTH2"]
    assert ts.requests["refresh_token"] == 0


def test_loopback_redirect_ignores_a_forged_state(mp, ts):
    """A request on the listener whose state is not mailpull's (RFC 6749
    section 10.12) is turned away and the real redirect still counts."""
    user = mp.new_user("oaf")
    mp.configure(oauth_account(mp, ts, "imap", user, flow="redirect"))
    rc, text, _ = authorize_redirect(mp, ts, user, forged_first=True)
    assert rc == EX_OK, text
    assert ts.grants["authorization_code"] == 1
    check_token_file(mp, ts, user)


def test_never_authorized(mp, ts):
    """A fetch before any authorize: 77, and the way out is named."""
    user = mp.new_user("oan")
    fill(mp, user)
    mp.configure(oauth_account(mp, ts, "imap", user))
    r = mp.run()
    assert_error(r, EX_NOPERM, "t1", "mailpull authorize t1")
    assert mp.messages() == []
    assert not any(ts.requests.values())


def test_libcurl_that_cannot_be_loaded(mp, ts):
    """libcurl is loaded when a token must be fetched: one that cannot be
    loaded is a configuration error (78) that says why, in the loader's
    words, and nothing reaches the provider."""
    user = mp.new_user("oal")
    mp.configure(oauth_account(mp, ts, "imap", user))
    ts.register_client(CLIENT_ID)
    libdir = mp.path("badlib")
    os.makedirs(libdir)
    with open(os.path.join(libdir, "libcurl.so.4"), "wb") as f:
        f.write(b"not a shared object\n")
    r = mp.run("authorize", "t1", env={"LD_LIBRARY_PATH": libdir})
    assert r.rc == EX_CONFIG, str(r)
    out = r.out + r.err
    assert "libcurl.so.4" in out and "cannot be loaded (" in out, out
    assert re.search(r"cannot be loaded \([^)]*(invalid ELF header|too short)", out), out
    assert not ts.pending_user_codes() and not any(ts.requests.values())


# ---- sending -----------------------------------------------------------------

@pytest.mark.parametrize("mech", MECHS)
def test_send_with_token(mp, ts, oauth_pf, mech):
    """Submission through the Postfix with the token (AUTH by the Dovecot,
    so by the provider): delivered, and Postfix logs mech for the user."""
    a, b = mp.new_user("oas"), mp.new_user("oab")
    mp.dc.ensure_mailbox(b)
    acct = mp.sending_account(a, oauth_pf, save_sent=Raw("no"))
    acct.update(oauth_account(mp, ts, "imap", a, mech))
    mp.configure({"t1": acct})
    rc, text = authorize_device(mp, ts, a)
    assert rc == EX_OK, text
    data = (f"From: <{oauth_pf.address(a)}>\nTo: <{oauth_pf.address(b)}>\n"
            f"Subject: token {mech}\n\nSent with a token.\n").encode()
    q = mp.run("sendmail", "-t", stdin=data)
    assert q.rc == EX_OK, str(q)
    r = mp.run("send", "t1")
    assert r.rc == EX_OK, str(r)
    got = oauth_pf.wait_delivered(b, 1)
    assert got[0].endswith(b"Sent with a token.\n"), got
    deadline = time.monotonic() + 5
    while f"sasl_method={mech}, sasl_username={a}" not in oauth_pf.log_text():
        assert time.monotonic() < deadline, oauth_pf.log_tail()
        time.sleep(0.05)
    assert ts.requests["refresh_token"] == 0


# ---- refresh, rotation, revocation ---------------------------------------------

def authorize_expiring(mp, ts, user, proto="imap", mech="XOAUTH2"):
    """Authorized with an access token that has less than a minute left
    (so the next run must refresh); the provider rotates refresh tokens
    and gives hour-long access tokens from then on. Returns the first
    refresh token."""
    ts.rotate = True
    ts.expires_in = 30
    mp.configure(oauth_account(mp, ts, proto, user, mech))
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    ts.expires_in = 3600
    return check_token_file(mp, ts, user)


def test_expiry_refreshes_once_and_saves_the_rotated_token(mp, ts):
    user = mp.new_user("oae")
    msgs = fill(mp, user)
    first = authorize_expiring(mp, ts, user)
    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert ts.grants["refresh_token"] == 1 and ts.requests["refresh_token"] == 1
    newest = check_token_file(mp, ts, user)
    assert newest != first
    assert first.encode() not in token_file_bytes(mp), "the replaced refresh token is kept"
    # The new access token is good for an hour: the next run refreshes nothing.
    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert ts.requests["refresh_token"] == 1


def test_expiry_without_rotation_keeps_the_refresh_token(mp, ts):
    """A provider that does not rotate answers a refresh with an access
    token only: the refresh token on file stays, and works again."""
    user = mp.new_user("oak")
    fill(mp, user)
    first = authorize_expiring(mp, ts, user)
    ts.rotate = False
    ts.expires_in = 30
    for n in (1, 2):
        r = mp.run()
        assert r.rc == EX_OK, str(r)
        assert ts.grants["refresh_token"] == n
        assert ts.issued_refresh_tokens(user) == [first]
        assert first.encode() in token_file_bytes(mp)
    assert logins(mp.dc, user) == ["XOAUTH2", "XOAUTH2"]


@pytest.mark.parametrize("proto", PROTOS)
def test_invalid_grant(mp, ts, proto):
    """The refresh token was revoked: 77, "mailpull authorize t1 again",
    no login tried, nothing fetched."""
    user = mp.new_user("oai")
    fill(mp, user)
    authorize_expiring(mp, ts, user, proto)
    ts.revoke(user)
    r = mp.run()
    assert_error(r, EX_NOPERM, "t1", "mailpull authorize t1 again")
    assert ts.errors["invalid_grant"] == 1
    assert mp.messages() == []
    assert logins(mp.dc, user) == []


def test_crash_between_token_response_and_write(mp, ts):
    """MAILPULL_CRASH_OAUTH2=1: mailpull dies after the provider rotated the
    refresh token and before the new one is written. The file still holds
    the old one, which the provider still honours (the new was never
    used), so the next run refreshes again and fetches."""
    user = mp.new_user("oac")
    msgs = fill(mp, user)
    first = authorize_expiring(mp, ts, user)
    before = token_file_bytes(mp)
    r = mp.run(env={"MAILPULL_CRASH_OAUTH2": "1"})
    assert r.rc == EX_CRASH, str(r)
    assert ts.grants["refresh_token"] == 1
    assert token_file_bytes(mp) == before
    assert mp.messages() == []

    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert ts.grants["refresh_token"] == 2 and not ts.errors["invalid_grant"]
    newest = check_token_file(mp, ts, user)
    assert newest != first
    # The lost rotation's token was never used; the one saved works on.
    ts.expire_access_tokens(user)
    assert ts.live_refresh_tokens(user)[-1] == newest


@pytest.mark.parametrize("mech", MECHS)
def test_pop3_long_token_two_step(mp, ts, mech):
    """An access token so long that AUTH with the initial response would
    pass POP3's 255 octets (RFC 5034 section 4): AUTH alone, the response
    after the server's "+ "; the login works."""
    user = mp.new_user("oal")
    msgs = fill(mp, user)
    ts.token_len = 400
    mp.configure(oauth_account(mp, ts, "pop3", user, mech))
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    assert len(ts.issued_access_tokens(user)[-1]) == 400
    r = mp.run("-v")
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)
    assert logins(mp.dc, user) == [mech]
    lines = [ln.rstrip() for ln in (r.out + r.err).split("\n")]
    assert any(ln.endswith(f"AUTH {mech}") for ln in lines), str(r)


@pytest.mark.parametrize("mech,proto,needle", [
    ("OAUTHBEARER", "imap", "invalid_token"),
    ("OAUTHBEARER", "pop3", "invalid_token"),
    ("XOAUTH2", "imap", "401"),
])
def test_refused_token_error_challenge(mp, ts, mech, proto, needle):
    """The server takes no token of this user, cached or fresh: Dovecot
    answers with an RFC 7628 error challenge; mailpull ends the exchange,
    tries one fresh token, and reports the server's JSON error (77)."""
    user = mp.new_user("oav")
    fill(mp, user)
    mp.configure(oauth_account(mp, ts, proto, user, mech))
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    ts.mail_denied.add(user)
    r = mp.run("-v")
    assert_error(r, EX_NOPERM, "t1", mp.dc.host, needle)
    assert mp.messages() == []
    assert ts.introspections["inactive"] == 2
    assert ts.grants["refresh_token"] == 1
    for tok in ts.issued_access_tokens(user):
        assert tok not in r.out + r.err


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_revoked_cached_token_replaced_once(mp, ts, proto):
    """The provider revoked the cached access token before it expired: the
    server refuses it, mailpull asks for a fresh one on the same
    connection, and the run fetches the mail."""
    user = mp.new_user("oaw")
    msgs = fill(mp, user)
    mp.configure(oauth_account(mp, ts, proto, user))
    rc, text = authorize_device(mp, ts, user)
    assert rc == EX_OK, text
    ts.revoke(user, refresh=False)
    r = mp.run()
    assert r.rc == EX_OK, r
    assert "refused the cached OAuth2 access token" in r.err
    assert multiset(mp.messages()) == multiset(msgs)
    assert ts.grants["refresh_token"] == 1


# ---- the harness itself -------------------------------------------------------

def test_harness_provider_and_dovecot(ts, oauth_dc, oauth_pf):
    """The provider by the letter, with Python's own HTTP and IMAP: the
    device grant's pending answers, PKCE refusing a wrong verifier,
    rotation's grace, and Dovecot taking a live token and refusing a
    revoked one."""
    import imaplib
    import json
    import ssl
    import urllib.request
    from tokenserver import DEVICE_GRANT, pkce_challenge
    ctx = ssl.create_default_context(cafile=oauth_dc.ca_file)

    def post(url, form):
        req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode())
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    ts.register_client("h")
    ts.rotate = True
    ts.slow_down_step = 1
    user = oauth_dc.new_user("oah")
    _, dv = post(ts.device_url, {"client_id": "h", "scope": "mail"})
    poll = {"client_id": "h", "grant_type": DEVICE_GRANT, "device_code": dv["device_code"]}
    status, answer = post(ts.token_url, poll)
    assert (status, answer["error"]) == (400, "authorization_pending")
    assert post(ts.token_url, poll)[1]["error"] == "slow_down"
    ts.approve(dv["user_code"], user)
    time.sleep(dv["interval"] + ts.slow_down_step)
    status, tok = post(ts.token_url, poll)
    assert status == 200 and tok["token_type"] == "Bearer", tok

    verifier = "v" * 43
    url = ts.auth_url + "?" + urllib.parse.urlencode({
        "client_id": "h", "response_type": "code", "redirect_uri": "http://127.0.0.1:9/cb",
        "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256",
        "state": "st"})
    status, loc, _ = browser_get(url, oauth_dc.ca_file)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
    assert status == 302 and q["state"] == "st"
    code_form = {"client_id": "h", "grant_type": "authorization_code", "code": q["code"],
                 "redirect_uri": "http://127.0.0.1:9/cb", "code_verifier": "w" * 43}
    assert post(ts.token_url, code_form)[1]["error"] == "invalid_grant"

    # Rotation: R0 -> R1 (R0 still good) -> R0 again -> R2; R2 used -> R0 dead.
    r0 = tok["refresh_token"]
    refresh = {"client_id": "h", "grant_type": "refresh_token"}
    _, t1 = post(ts.token_url, dict(refresh, refresh_token=r0))
    _, t2 = post(ts.token_url, dict(refresh, refresh_token=r0))
    assert t1["refresh_token"] != r0 and t2["refresh_token"] != t1["refresh_token"]
    assert post(ts.token_url, dict(refresh, refresh_token=t2["refresh_token"]))[0] == 200
    assert post(ts.token_url, dict(refresh, refresh_token=r0))[1]["error"] == "invalid_grant"

    at = t2["access_token"]
    sasl = f"user={user}\x01auth=Bearer {at}\x01\x01".encode()
    m = imaplib.IMAP4_SSL(oauth_dc.host, oauth_dc.imaps_port, ssl_context=ctx)
    assert m.authenticate("XOAUTH2", lambda chal: sasl)[0] == "OK"
    m.logout()
    # Submission: Postfix asks the Dovecot, which asks the provider.
    c = oauth_pf.client()
    assert {"XOAUTH2", "OAUTHBEARER"} <= set(c.esmtp_features["auth"].split())
    assert c.auth("XOAUTH2", lambda challenge=None: sasl.decode())[0] == 235
    c.quit()
    ts.revoke(user)
    m = imaplib.IMAP4_SSL(oauth_dc.host, oauth_dc.imaps_port, ssl_context=ctx)
    chals = []

    def answer(chal):
        chals.append(chal)
        return sasl if len(chals) == 1 else b""
    with pytest.raises(imaplib.IMAP4.error):
        m.authenticate("XOAUTH2", answer)
    assert json.loads(chals[-1])["status"] == "401", chals
