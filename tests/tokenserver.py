"""A loopback OAuth2 provider for mailpull's integration tests.

It stands in for what cannot run here, Google's or Microsoft's endpoints,
and is what the private Dovecot's oauth2 passdb asks whether a token is
good (Dovecot(oauth2_introspection_url=ts.introspection_url)):

    with TokenServer(dc.server_cert, dc.server_key) as ts:
        ts.register_client("mailpull-test")
        ... mailpull with oauth2 = custom, oauth2_token_url = ts.token_url,
            oauth2_device_url = ts.device_url or oauth2_auth_url =
            ts.auth_url, tls_ca_file = dc.ca_file ...

Two listeners on 127.0.0.1, free ports, one thread per request:
    HTTPS (url):            /device, /authorize, /token, /device/approve
                            (the certificate is the Dovecot's, of the test CA)
    plain HTTP (http_url):  /introspect, for Dovecot's auth process (no TLS
                            set-up in Dovecot for a loopback call)
State lives in memory; every method is safe to call while requests run.

Endpoints:
  POST /device (RFC 8628 section 3.1): client_id, scope -> device_code,
      user_code, verification_uri, expires_in, interval. The test plays
      the user: approve(user_code, user) / deny(user_code), or GET
      /device/approve?user_code=...&user=... (&deny=1).
  GET /authorize (RFC 6749 4.1.1, RFC 7636): client_id known,
      response_type=code, redirect_uri http://127.0.0.1:PORT/...,
      code_challenge_method=S256 with a code_challenge; answers 302 to
      redirect_uri?code=...&state=... (the user consents at once, as
      consent_user), or ?error=access_denied when deny_authorize is set.
      Anything else is a 400 page (no redirect: RFC 6749 4.1.2.1).
  POST /token (RFC 6749 section 5): client_id in the body or HTTP Basic,
      the secret when the client has one;
      grant_type=authorization_code (code once, same redirect_uri, the
      PKCE verifier), urn:ietf:params:oauth:grant-type:device_code
      (authorization_pending, slow_down when polled faster than the
      interval, access_denied, expired_token), refresh_token
      (invalid_grant when unknown or revoked). With rotate=True a refresh
      grant hands out a new refresh token; the one it replaces stays good
      until the new one has been used once (the grace real providers
      give, so a client that crashed before saving the new one can go on
      with the old).
  POST|GET /introspect (RFC 7662): token in the form body (post), the
      query (get) or an Authorization: Bearer header (auth) ->
      {"active": true, "username": USER, ...} for a live access token,
      {"active": false} for an unknown, expired or revoked one.

Knobs and looks: expires_in (of access tokens from now on), token_len
(length of new access tokens; a long one tests POP3's 255-octet line),
rotate, slow_down_polls (that many device polls get slow_down),
slow_down_step, unavailable_polls (that many device polls get HTTP 503,
temporarily_unavailable: the endpoint down for a while), issue_refresh
(False: the code and device grants give no refresh token, as some
providers do without offline access), device_interval, device_expires_in, consent_user,
deny_authorize, mail_denied (a set of users whose every token introspects
inactive), expire_access_tokens(), revoke(user=None), grants (a
Counter of tokens handed out per grant type: "authorization_code",
"device_code", "refresh_token"), requests (every /token call per grant type, errors
included), errors (a Counter of error codes answered), introspections.
"""

import base64
import collections
import hashlib
import http.server
import json
import secrets
import ssl
import threading
import time
import urllib.parse

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_NAMES = {"authorization_code": "authorization_code", DEVICE_GRANT: "device_code",
               "refresh_token": "refresh_token"}


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error answer."""

    def __init__(self, code, description, status=400):
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status


def pkce_challenge(verifier):
    """The S256 code_challenge of a verifier (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _redirect_ok(uri):
    """RFC 8252 section 7.3: a loopback redirect on a port of the client's."""
    try:
        u = urllib.parse.urlsplit(uri)
        return u.scheme == "http" and u.hostname == "127.0.0.1" and u.port is not None
    except ValueError:
        return False


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mailpull-test-oauth2/1"

    def setup(self):
        # The TLS handshake happens here, in the request's own thread: a
        # client that connects and stalls holds up nobody else.
        self.request.settimeout(15)
        if self.server.tls:
            if self.server.ctx is None:
                raise ConnectionAbortedError("no certificate yet (set_certificate)")
            self.request = self.server.ctx.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, fmt, *args):
        self.server.owner._log(f"{self.address_string()} {fmt % args}")

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method):
        u = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        form = {}
        if method == "POST":
            body = self._body()
            ctype = self.headers.get("Content-Type", "")
            if ctype.split(";")[0].strip() == "application/x-www-form-urlencoded":
                form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                                   keep_blank_values=True))
        ts = self.server.owner
        tls = self.server.tls
        path = u.path
        try:
            if path == "/introspect":
                token = form.get("token") or query.get("token")
                auth = self.headers.get("Authorization", "")
                if not token and auth.lower().startswith("bearer "):
                    token = auth[7:].strip()
                self._send(200, ts._introspect(token or ""))
            elif not tls:
                self._send(404, {"error": "not_found"})
            elif path == "/device" and method == "POST":
                self._send(200, ts._device_authorization(form))
            elif path == "/device/approve":
                ts._approve_request(query)
                self._send(200, "approved\n", "text/plain")
            elif path == "/authorize" and method == "GET":
                status, where, text = ts._authorize(query)
                if where:
                    self._send(status, "", "text/plain", [("Location", where)])
                else:
                    self._send(status, text, "text/plain")
            elif path == "/token" and method == "POST":
                self._send(200, ts._token(form, self.headers.get("Authorization", "")))
            else:
                self._send(404, {"error": "not_found"})
        except OAuthError as e:
            ts._count_error(e.code)
            extra = [("WWW-Authenticate", "Basic")] if e.status == 401 else []
            self._send(e.status, {"error": e.code, "error_description": e.description},
                       headers=extra)

    def do_GET(self):    # noqa: N802 (http.server's name)
        self._route("GET")

    def do_POST(self):    # noqa: N802
        self._route("POST")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hangs up or fails the handshake: noted, not printed.
        import sys
        self.owner._log(f"{client_address}: {sys.exc_info()[1]!r}")


class TokenServer:
    """The provider: see the module's head comment."""

    def __init__(self, cert_file=None, key_file=None, host="127.0.0.1", expires_in=3600,
                 token_len=48, rotate=False, device_interval=1, device_expires_in=300,
                 consent_user=None, slow_down_step=5):
        self.cert_file = cert_file
        self.key_file = key_file
        self.host = host
        self.expires_in = expires_in
        self.token_len = token_len
        self.rotate = rotate
        self.device_interval = device_interval
        self.device_expires_in = device_expires_in
        # What slow_down adds to a device code's interval (RFC 8628: 5 s).
        self.slow_down_step = slow_down_step
        # The next this many device-code polls get slow_down, however
        # patient the client was.
        self.slow_down_polls = 0
        # The next this many device-code polls get a 503, before anything else.
        self.unavailable_polls = 0
        # Whether the first grant (code or device) gives a refresh token.
        self.issue_refresh = True
        # Who consents at /authorize (the loopback redirect has no login page).
        self.consent_user = consent_user
        self.deny_authorize = False
        # Users whose tokens introspect inactive however fresh (the mailbox
        # takes no OAuth logins): a new token cannot help.
        self.mail_denied = set()
        self.lock = threading.Lock()
        self.ctx = None
        self.clients = {}
        self.devices = {}          # device_code -> dict
        self.codes = {}            # authorization code -> dict
        self.access = {}           # access token -> dict
        self.refresh = {}          # refresh token -> dict
        self.grants = collections.Counter()
        self.requests = collections.Counter()
        self.errors = collections.Counter()
        self.introspections = collections.Counter()
        self.log = []
        self._servers = []
        self._threads = []

    # ---- life ----------------------------------------------------------------

    def set_certificate(self, cert_file, key_file):
        """The HTTPS certificate, also after start(): a Dovecot that must
        know the introspection URL before it starts can make the
        certificate the provider then uses."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        self.cert_file, self.key_file = cert_file, key_file
        self.ctx = ctx
        for s in self._servers:
            s.ctx = ctx

    def reset(self, **knobs):
        """Forgets every client, code and token, zeroes the counters, and
        sets the knobs (expires_in=..., rotate=..., ...) anew from their
        defaults: one provider serves test after test."""
        fresh = TokenServer()
        with self.lock:
            for k in ("expires_in", "token_len", "rotate", "device_interval",
                      "device_expires_in", "consent_user", "deny_authorize", "slow_down_step",
                      "slow_down_polls", "mail_denied", "unavailable_polls",
                      "issue_refresh"):
                setattr(self, k, knobs.pop(k, getattr(fresh, k)))
            if knobs:
                raise TypeError(f"unknown knobs {sorted(knobs)}")
            for k in ("clients", "devices", "codes", "access", "refresh"):
                getattr(self, k).clear()
            for c in (self.grants, self.requests, self.errors, self.introspections):
                c.clear()
            self.log.clear()

    def start(self):
        https = _Server((self.host, 0), _Handler)
        https.ctx = self.ctx
        https.tls = True
        plain = _Server((self.host, 0), _Handler)
        plain.tls = False
        for s in (https, plain):
            s.owner = self
            t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                 daemon=True)
            t.start()
            self._servers.append(s)
            self._threads.append(t)
        self.port = https.server_address[1]
        self.http_port = plain.server_address[1]
        self.url = f"https://{self.host}:{self.port}"
        self.http_url = f"http://{self.host}:{self.http_port}"
        self.token_url = self.url + "/token"
        self.device_url = self.url + "/device"
        self.auth_url = self.url + "/authorize"
        self.verification_uri = self.url + "/device/approve"
        self.introspection_url = self.http_url + "/introspect"
        if self.cert_file:
            self.set_certificate(self.cert_file, self.key_file)
        return self

    def stop(self):
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(5)
        self._servers, self._threads = [], []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _log(self, line):
        with self.lock:
            self.log.append(line)

    def _count_error(self, code):
        with self.lock:
            self.errors[code] += 1

    # ---- the test's side -------------------------------------------------------

    def register_client(self, client_id, secret=None):
        with self.lock:
            self.clients[client_id] = secret

    def approve(self, user_code, user):
        """The user enters user_code and consents, as user."""
        self._decide(user_code, "approved", user)

    def deny(self, user_code):
        self._decide(user_code, "denied", None)

    def _decide(self, user_code, status, user):
        with self.lock:
            for d in self.devices.values():
                if d["user_code"] == user_code:
                    d["status"], d["user"] = status, user
                    return
        raise KeyError(f"no device authorization with user code {user_code!r}")

    def pending_user_codes(self):
        with self.lock:
            return [d["user_code"] for d in self.devices.values() if d["status"] == "pending"]

    def expire_access_tokens(self, user=None):
        """Every access token (of user) expires now, on the server's side."""
        with self.lock:
            for t in self.access.values():
                if user is None or t["user"] == user:
                    t["expires_at"] = time.time() - 1

    def revoke(self, user=None, access=True, refresh=True):
        """Revokes the tokens (of user): access tokens are then inactive,
        refresh tokens get invalid_grant."""
        with self.lock:
            for kind, table in (("access", self.access), ("refresh", self.refresh)):
                if (kind == "access" and not access) or (kind == "refresh" and not refresh):
                    continue
                for t in table.values():
                    if user is None or t["user"] == user:
                        t["revoked"] = True

    def live_refresh_tokens(self, user=None):
        with self.lock:
            return [rt for rt, t in self.refresh.items()
                    if not t["revoked"] and (user is None or t["user"] == user)]

    def issued_refresh_tokens(self, user=None):
        """Every refresh token handed out (to user), oldest first."""
        with self.lock:
            return [rt for rt, t in self.refresh.items() if user is None or t["user"] == user]

    def issued_access_tokens(self, user=None):
        with self.lock:
            return [at for at, t in self.access.items() if user is None or t["user"] == user]

    # ---- endpoints -----------------------------------------------------------

    def _client(self, form, authorization):
        """The authenticated client_id (RFC 6749 section 2.3.1)."""
        cid, secret = form.get("client_id"), form.get("client_secret")
        if authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                bid, _, bsecret = raw.partition(":")
                cid = urllib.parse.unquote_plus(bid)
                secret = urllib.parse.unquote_plus(bsecret)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401)
        if not cid or cid not in self.clients:
            raise OAuthError("invalid_client", f"unknown client {cid!r}", 401)
        want = self.clients[cid]
        if want is not None and not (secret and secrets.compare_digest(secret, want)):
            raise OAuthError("invalid_client", "wrong or missing client secret", 401)
        return cid

    def _new_token(self, n):
        return secrets.token_urlsafe(n)[:n]

    def _issue(self, cid, user, grant, scope, parent=None, refresh=True):
        """An access token (and a refresh token unless refresh is False);
        called with the lock held."""
        at = "at-" + self._new_token(max(8, self.token_len - 3))
        self.access[at] = {"user": user, "client_id": cid, "revoked": False,
                           "expires_at": time.time() + self.expires_in, "scope": scope}
        out = {"access_token": at, "token_type": "Bearer", "expires_in": self.expires_in,
               "scope": scope}
        if refresh:
            rt = "rt-" + self._new_token(40)
            self.refresh[rt] = {"user": user, "client_id": cid, "revoked": False,
                                "parent": parent, "used": False, "scope": scope}
            out["refresh_token"] = rt
        self.grants[grant] += 1
        return out

    def _device_authorization(self, form):
        cid = self._client(form, "")
        with self.lock:
            dc = "dc-" + self._new_token(32)
            uc = "-".join("".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(4))
                          for _ in range(2))
            self.devices[dc] = {"client_id": cid, "user_code": uc, "status": "pending",
                                "user": None, "scope": form.get("scope", ""),
                                "expires_at": time.time() + self.device_expires_in,
                                "interval": self.device_interval, "last_poll": None}
        return {"device_code": dc, "user_code": uc, "verification_uri": self.verification_uri,
                "expires_in": self.device_expires_in, "interval": self.device_interval}

    def _approve_request(self, query):
        uc = query.get("user_code", "")
        try:
            if query.get("deny"):
                self.deny(uc)
            else:
                self.approve(uc, query.get("user") or self.consent_user)
        except KeyError as e:
            raise OAuthError("invalid_request", str(e))

    def _authorize(self, q):
        """(status, Location or None, text) for GET /authorize."""
        cid, redirect = q.get("client_id"), q.get("redirect_uri", "")
        with self.lock:
            known = cid in self.clients
        if not known:
            return 400, None, f"unknown client_id {cid!r}\n"
        if not _redirect_ok(redirect):
            return 400, None, f"redirect_uri {redirect!r} is not http://127.0.0.1:PORT/...\n"
        sep = "&" if "?" in redirect else "?"
        state = q.get("state")
        extra = {"state": state} if state is not None else {}

        def answer(params):
            params.update(extra)
            return 302, redirect + sep + urllib.parse.urlencode(params), ""
        if q.get("response_type") != "code":
            return answer({"error": "unsupported_response_type"})
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return answer({"error": "invalid_request",
                           "error_description": "PKCE with S256 is required"})
        if self.deny_authorize:
            return answer({"error": "access_denied", "error_description": "the user said no"})
        code = "ac-" + self._new_token(32)
        with self.lock:
            self.codes[code] = {"client_id": cid, "redirect_uri": redirect,
                                "challenge": q["code_challenge"], "user": self.consent_user,
                                "scope": q.get("scope", ""), "used": False,
                                "expires_at": time.time() + 600}
        return answer({"code": code})

    def _token(self, form, authorization):
        grant = form.get("grant_type", "")
        name = GRANT_NAMES.get(grant, grant or "none")
        with self.lock:
            self.requests[name] += 1
        cid = self._client(form, authorization)
        with self.lock:
            if grant == "authorization_code":
                return self._code_grant(cid, form)
            if grant == DEVICE_GRANT:
                return self._device_grant(cid, form)
            if grant == "refresh_token":
                return self._refresh_grant(cid, form)
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r}")

    def _code_grant(self, cid, form):
        c = self.codes.get(form.get("code", ""))
        if c is None or c["used"] or c["client_id"] != cid or c["expires_at"] < time.time():
            raise OAuthError("invalid_grant", "unknown, used or expired authorization code")
        c["used"] = True
        if form.get("redirect_uri") != c["redirect_uri"]:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization's")
        verifier = form.get("code_verifier", "")
        if not (43 <= len(verifier) <= 128) or pkce_challenge(verifier) != c["challenge"]:
            raise OAuthError("invalid_grant", "PKCE verifier does not match the challenge")
        return self._issue(cid, c["user"], "authorization_code", c["scope"],
                           refresh=self.issue_refresh)

    def _device_grant(self, cid, form):
        d = self.devices.get(form.get("device_code", ""))
        if d is None or d["client_id"] != cid:
            raise OAuthError("invalid_grant", "unknown device code")
        if self.unavailable_polls > 0:
            self.unavailable_polls -= 1
            raise OAuthError("temporarily_unavailable", "the service is down for a while",
                             status=503)
        now = time.time()
        if d["expires_at"] < now or d["status"] == "used":
            raise OAuthError("expired_token", "the device code has expired")
        last, d["last_poll"] = d["last_poll"], now
        if d["status"] == "denied":
            raise OAuthError("access_denied", "the user refused")
        # A little slack: a client that waits the interval may wake early by
        # a timer's rounding.
        too_soon = last is not None and now - last < d["interval"] - 0.2
        if too_soon or self.slow_down_polls > 0:
            if not too_soon:
                self.slow_down_polls -= 1
            d["interval"] += self.slow_down_step
            raise OAuthError("slow_down", "polling faster than the interval")
        if d["status"] == "pending":
            raise OAuthError("authorization_pending", "the user has not answered yet")
        d["status"] = "used"
        return self._issue(cid, d["user"], "device_code", d["scope"],
                           refresh=self.issue_refresh)

    def _refresh_grant(self, cid, form):
        rt = form.get("refresh_token", "")
        t = self.refresh.get(rt)
        if t is None or t["revoked"] or t["client_id"] != cid:
            raise OAuthError("invalid_grant", "refresh token is unknown, revoked or expired")
        # Its predecessor's grace ends with the first use of this one.
        if t["parent"] is not None and not t["used"]:
            self.refresh[t["parent"]]["revoked"] = True
        t["used"] = True
        if not self.rotate:
            return self._issue(cid, t["user"], "refresh_token", t["scope"], refresh=False)
        return self._issue(cid, t["user"], "refresh_token", t["scope"], parent=rt)

    def _introspect(self, token):
        with self.lock:
            t = self.access.get(token)
            live = (t is not None and not t["revoked"] and t["expires_at"] > time.time()
                    and t["user"] not in self.mail_denied)
            self.introspections["active" if live else "inactive"] += 1
            if not live:
                return {"active": False}
            return {"active": True, "username": t["user"], "email": t["user"],
                    "client_id": t["client_id"], "scope": t["scope"], "token_type": "Bearer"}


def browser_get(url, ca_file, timeout=10):
    """What a browser does with the first hop of an authorization URL: GET
    it (trusting ca_file) without following the redirect. Returns (status,
    Location or None, body)."""
    import http.client
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca_file)
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        target = u.path or "/"
        if u.query:
            target += "?" + u.query
        conn.request("GET", target, headers={"User-Agent": "mailpull-test-browser"})
        r = conn.getresponse()
        return r.status, r.getheader("Location"), r.read()
    finally:
        conn.close()


if __name__ == "__main__":
    # Manual use: a provider with a server certificate from tests/dovecot.py.
    import os
    import signal
    import sys
    import tempfile
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from dovecot import make_ca, make_server_cert
    d = tempfile.mkdtemp(prefix="mailpull-tokenserver-")
    ca, ca_key = make_ca(d, "test", "mailpull test CA")
    crt, key = make_server_cert(d, "server", ca, ca_key)
    with TokenServer(crt, key, consent_user="user") as ts:
        ts.register_client("mailpull-test")
        print(f"ca_file {ca}\ntoken {ts.token_url}\ndevice {ts.device_url}\n"
              f"authorize {ts.auth_url}\nintrospect {ts.introspection_url}\n"
              "client_id mailpull-test", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
