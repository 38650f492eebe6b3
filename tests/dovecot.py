"""A private, throwaway Dovecot for mailpull's integration tests, demo and bench.

Usage:

    with Dovecot() as dc:
        user = dc.new_user()
        dc.add_message(user, b"Subject: hi\\n\\nbody\\n")
        ... connect to 127.0.0.1:dc.pop3s_port, trusting dc.ca_file,
            with user / dc.password ...
        assert dc.count(user) == 0

Everything lives under one work directory: certificates, dovecot.conf,
base/state dirs, the log and the mail (WORKDIR/mail/USER/Maildir, folders as
Maildir++ subdirectories: "Archive/2024" is .Archive.2024; the IMAP
hierarchy delimiter is '/', see `separator`). Dovecot
runs in the foreground as our child and is stopped by its PID. Any user
name logs in with dc.password; a fresh user name per test gives isolation.

Certificates (made with the openssl CLI at start, nothing that can expire
is committed):
    ca_file                     the CA that signed Dovecot's certificate
    server_cert, server_key     localhost, 127.0.0.1, ::1 (not 127.0.0.2)
    untrusted_ca_file           a second CA nobody trusts
    untrusted_cert, untrusted_key   a localhost certificate it signed

Dovecot(namespaces=True) adds the acl plugin, a public namespace
"Public/" (mail under WORKDIR/mail/public, every folder readable by
anyone; see create_public_mailbox) and an other-users namespace
"Shared/USER/" (a user's folder appears there for the users it is shared
with, see share_mailbox).

A folder named "Sent" is the \\Sent special-use mailbox (RFC 6154); with
sent_auto="create" every user has one. Dovecot(lmtp=True, auth_inet=True)
adds what a submission server in front of it needs (tests/postfix.py): LMTP
on 127.0.0.1:lmtp_port, delivering USER@ANY.DOMAIN to USER, and the
auth-client protocol on 127.0.0.1:auth_port. auth_delays=False answers a
wrong password at once and keeps no penalty against the address.

Logins beyond PLAIN and LOGIN (each off by default):
    auth_mechanisms="plain login scram-sha-1 scram-sha-256"
        what Dovecot offers (and so the Postfix in front of it); the static
        passdb holds the password in plaintext, so SCRAM works for any user.
    oauth2_introspection_url="http://127.0.0.1:PORT/introspect"
        an oauth2 passdb (XOAUTH2, OAUTHBEARER added to the mechanisms)
        that asks that URL (RFC 7662, oauth2_introspection_mode: post, get
        or auth) whether a token is active and whose it is: the token is
        the user's password there (tests/tokenserver.py plays the provider).
    client_certs=True
        Dovecot asks every TLS client for a certificate of the test CA
        (ssl_verify_client_cert), takes the user name from its commonName,
        and refuses any login without a valid one
        (auth_ssl_require_client_cert); EXTERNAL is offered and needs
        nothing but the certificate. make_client_cert(user) makes one.
    user_passwords=True
        set_password(user, pw) gives one user a password of its own
        (a passwd-file per user in front of the static passdb, {PLAIN},
        so SCRAM works with it); the others keep dc.password.
"""

import itertools
import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time

MAIL_USER = "mailtest"
DH_FILE = "/usr/share/dovecot/dh.pem"
PASSWORD = "test-Pa55word"

_seq = itertools.count()


def run(cmd, timeout=60, check=True, **kw):
    """subprocess.run with a timeout, capturing output."""
    return subprocess.run(cmd, timeout=timeout, check=check, capture_output=True, **kw)


def ensure_mail_user(name=MAIL_USER):
    """Creates the system user owning the test mail when missing (needs root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    # Parallel test workers may race to create it: losing the race is fine.
    r = run(["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name], check=False)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"useradd {name} failed: {r.stderr.decode(errors='replace')}")


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port(addrs=("127.0.0.1",), avoid=()):
    """A TCP port that is free on every address in addrs right now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in avoid:
            continue
        ok = True
        for a in addrs:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            try:
                with socket.socket(fam, socket.SOCK_STREAM) as s:
                    s.bind((a, port))
            except OSError:
                ok = False
                break
        if ok:
            return port
    raise RuntimeError("no free port")


def wait_port(host, port, timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dovecot exited with status {proc.returncode}")
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect((host, port))
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


def _openssl(args, cwd):
    run(["openssl"] + args, cwd=cwd)


def make_ca(dirpath, name, cn):
    """Makes NAME-ca.pem / NAME-ca.key (a self-signed CA)."""
    key = os.path.join(dirpath, f"{name}-ca.key")
    crt = os.path.join(dirpath, f"{name}-ca.pem")
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", f"/CN={cn}",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dirpath)
    return crt, key


def make_server_cert(dirpath, name, ca_crt, ca_key,
                     san="DNS:localhost,IP:127.0.0.1,IP:::1"):
    """Makes NAME.pem / NAME.key signed by the CA, for the given SAN."""
    key = os.path.join(dirpath, f"{name}.key")
    csr = os.path.join(dirpath, f"{name}.csr")
    crt = os.path.join(dirpath, f"{name}.pem")
    ext = os.path.join(dirpath, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={san}\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=localhost"], dirpath)
    _openssl(["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
              "-CAcreateserial", "-out", crt, "-days", "30", "-extfile", ext], dirpath)
    return crt, key


def make_expired_cert(dirpath, name, ca_crt, ca_key,
                      san="DNS:localhost,IP:127.0.0.1,IP:::1",
                      start="20200101000000Z", end="20200201000000Z"):
    """Makes NAME.pem / NAME.key signed by the CA, valid only from start to
    end (by default a month in 2020, long expired). `openssl x509 -req
    -days` cannot reach into the past; `openssl ca` takes both dates."""
    key = os.path.join(dirpath, f"{name}.key")
    csr = os.path.join(dirpath, f"{name}.csr")
    crt = os.path.join(dirpath, f"{name}.pem")
    cadir = os.path.join(dirpath, f"{name}-ca-db")
    os.makedirs(cadir, exist_ok=True)
    open(os.path.join(cadir, "index.txt"), "w").close()
    with open(os.path.join(cadir, "serial"), "w") as f:
        f.write("1000\n")
    cnf = os.path.join(cadir, "ca.cnf")
    with open(cnf, "w") as f:
        f.write(f"""[ca]
default_ca = tca
[tca]
dir = {cadir}
database = {cadir}/index.txt
new_certs_dir = {cadir}
serial = {cadir}/serial
default_md = sha256
policy = pol
unique_subject = no
[pol]
commonName = supplied
[ext]
subjectAltName = {san}
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
""")
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=localhost"], dirpath)
    _openssl(["ca", "-batch", "-config", cnf, "-cert", ca_crt, "-keyfile", ca_key,
              "-in", csr, "-out", crt, "-startdate", start, "-enddate", end,
              "-extensions", "ext", "-notext"], dirpath)
    return crt, key


def make_self_signed_cert(dirpath, name, san="DNS:localhost,IP:127.0.0.1,IP:::1"):
    """Makes NAME.pem / NAME.key: a server certificate that signs itself
    (no CA), valid for the given SAN."""
    key = os.path.join(dirpath, f"{name}.key")
    crt = os.path.join(dirpath, f"{name}.pem")
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=localhost",
              "-addext", f"subjectAltName={san}",
              "-addext", "extendedKeyUsage=serverAuth"], dirpath)
    return crt, key


class PrivateServer:
    """What every private test server shares: its master process
    (self.proc), stopped by its PID, and a work directory that is removed
    when the server made it itself (self._own_workdir). A subclass
    provides start()."""

    def stop(self, timeout=10.0):
        """Stops our master (by its PID; it takes its children along)."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)

    def cleanup(self):
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


class Dovecot(PrivateServer):
    """A private Dovecot (POP3 + IMAP, plain and implicit TLS) on loopback."""

    def __init__(self, workdir=None, password=PASSWORD, ipv6=None, fsync=False, separator="/",
                 namespaces=False, lmtp=False, auth_inet=False, sent_auto="no",
                 auth_delays=True, auth_mechanisms="plain login",
                 oauth2_introspection_url=None, oauth2_introspection_mode="post",
                 client_certs=False, user_passwords=False):
        self._own_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="mailpull-dovecot-")
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.password = password
        self.ipv6 = has_ipv6_loopback() if ipv6 is None else ipv6
        self.fsync = fsync
        # The IMAP hierarchy delimiter. The files stay Maildir++ (".A.B") either way.
        self.separator = separator
        self.namespaces = namespaces
        # For a submission server in front of this one (tests/postfix.py):
        # LMTP delivery on 127.0.0.1:lmtp_port (user@domain delivers to
        # user), the auth-client protocol on 127.0.0.1:auth_port.
        self.lmtp = lmtp
        self.auth_inet = auth_inet
        self.lmtp_port = None
        self.auth_port = None
        # False: a failed login is answered at once and costs later logins
        # from the same address nothing (no auth_failure_delay, no penalty).
        self.auth_delays = auth_delays
        # "Sent" always carries the \Sent special-use flag; sent_auto
        # ("no", "create", "subscribe") says whether every user has it.
        if sent_auto not in ("no", "create", "subscribe"):
            raise ValueError(f"sent_auto {sent_auto!r}")
        self.sent_auto = sent_auto
        # Logins beyond PLAIN and LOGIN (see the module's head comment).
        mechs = auth_mechanisms.lower().split()
        if oauth2_introspection_url:
            mechs += [m for m in ("xoauth2", "oauthbearer") if m not in mechs]
        if client_certs and "external" not in mechs:
            mechs.append("external")
        self.auth_mechanisms = " ".join(mechs)
        if oauth2_introspection_mode not in ("post", "get", "auth"):
            raise ValueError(f"oauth2_introspection_mode {oauth2_introspection_mode!r}")
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauth2_introspection_mode = oauth2_introspection_mode
        self.client_certs = client_certs
        self.user_passwords = user_passwords
        self.passwd_dir = os.path.join(self.workdir, "passwd.d")
        self.proc = None
        self.conf = os.path.join(self.workdir, "dovecot.conf")
        self.log_path = os.path.join(self.workdir, "dovecot.log")
        self.maildir_root = os.path.join(self.workdir, "mail")
        self.certdir = os.path.join(self.workdir, "certs")
        self.addrs = ["127.0.0.1", "127.0.0.2"] + (["::1"] if self.ipv6 else [])
        self.host = "127.0.0.1"
        self.wrong_host = "127.0.0.2"

    # ---- set-up -------------------------------------------------------------

    def _make_certs(self):
        os.makedirs(self.certdir, exist_ok=True)
        self.ca_file, self.ca_key = make_ca(self.certdir, "test", "mailpull test CA")
        self.server_cert, self.server_key = make_server_cert(
            self.certdir, "server", self.ca_file, self.ca_key)
        self.untrusted_ca_file, uca_key = make_ca(self.certdir, "untrusted",
                                                  "mailpull untrusted CA")
        self.untrusted_cert, self.untrusted_key = make_server_cert(
            self.certdir, "untrusted-server", self.untrusted_ca_file, uca_key)
        # Dovecot reads keys as root before dropping privileges; fakepop3 as us.
        for f in os.listdir(self.certdir):
            os.chmod(os.path.join(self.certdir, f), 0o644)
        os.chmod(self.certdir, 0o755)

    def _write_conf(self):
        pw = ensure_mail_user()
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        base = os.path.join(self.workdir, "run")
        state = os.path.join(self.workdir, "state")
        for d in (base, state):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.maildir_root, exist_ok=True)
        os.chown(self.maildir_root, self.uid, self.gid)
        os.chmod(self.maildir_root, 0o755)
        os.chmod(self.workdir, 0o755)
        self._check_traversable(self.workdir)
        used = set()
        ports = {}
        for name in ("pop3", "pop3s", "imap", "imaps", "lmtp", "auth"):
            ports[name] = free_port(self.addrs, avoid=used)
            used.add(ports[name])
        self.lmtp_port = ports["lmtp"] if self.lmtp else None
        self.auth_port = ports["auth"] if self.auth_inet else None
        self.pop3_port = ports["pop3"]
        self.pop3s_port = ports["pop3s"]
        self.imap_port = ports["imap"]
        self.imaps_port = ports["imaps"]
        listen = ", ".join(self.addrs)
        self.instance = f"mailpull-test-{os.getpid()}-{next(_seq)}"
        low = min(self.uid, self.gid, 100)
        conf = f"""# generated by tests/dovecot.py; private to {self.workdir}
instance_name = {self.instance}
base_dir = {base}
state_dir = {state}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = imap pop3{" lmtp" if self.lmtp else ""}
listen = {listen}
shutdown_clients = yes

ssl = yes
ssl_cert = <{self.server_cert}
ssl_key = <{self.server_key}
ssl_dh = <{DH_FILE}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no

auth_mechanisms = {self.auth_mechanisms}
auth_cache_size = 0
auth_verbose = yes
auth_verbose_passwords = no
{self._login_conf()}passdb {{
  driver = static
  args = password={self.password}
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_USER} home={self.maildir_root}/%u
}}
first_valid_uid = {low}
first_valid_gid = {low}
mail_location = maildir:{self.maildir_root}/%u/Maildir
namespace inbox {{
  inbox = yes
  separator = {self.separator}
  prefix =
  mailbox Sent {{
    special_use = \\Sent
    auto = {self.sent_auto}
  }}
}}
mail_fsync = {"optimized" if self.fsync else "never"}
default_vsz_limit = 1G
pop3_uidl_format = %08Xu%08Xv

{self._namespace_conf(state)}
protocol pop3 {{
  mail_max_userip_connections = 1000
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service pop3 {{
  vsz_limit = 1G
}}
{self._submission_conf()}
service imap {{
  vsz_limit = 1G
}}
"""
        with open(self.conf, "w") as f:
            f.write(conf)
        os.chmod(self.conf, 0o644)

    def _submission_conf(self):
        """LMTP and auth-client listeners on 127.0.0.1 for a submission
        server. LMTP recipients are user@domain: the user is the local part
        (the mailboxes are named by bare user names)."""
        out = ""
        if self.lmtp:
            out += f"""service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  vsz_limit = 1G
}}
protocol lmtp {{
  auth_username_format = %n
  mail_max_userip_connections = 1000
}}
"""
        if self.auth_inet:
            out += f"""service auth {{
  inet_listener auth-client {{
    address = 127.0.0.1
    port = {self.auth_port}
  }}
}}
"""
        if not self.auth_delays:
            # Every test logs in from 127.0.0.1: one test's wrong password
            # would slow the next logins of every other test by up to 15 s.
            out += """auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""
        return out

    def _login_conf(self):
        """The client-certificate settings and the passdbs in front of the
        static one: each serves only its own mechanisms, and the
        oauth2 one's refusal is final (the token is no password to try
        against the static passdb)."""
        out = ""
        if self.client_certs:
            # No CRL comes with the test CA: Dovecot would otherwise fail
            # every certificate for want of one.
            out += f"""ssl_ca = <{self.ca_file}
ssl_verify_client_cert = yes
ssl_require_crl = no
ssl_cert_username_field = commonName
auth_ssl_require_client_cert = yes
auth_ssl_username_from_cert = yes
passdb {{
  driver = static
  args = nopassword=y
  mechanisms = external
}}
"""
        if self.oauth2_introspection_url:
            args = os.path.join(self.workdir, "oauth2.conf.ext")
            with open(args, "w") as f:
                f.write(f"""# generated by tests/dovecot.py
introspection_mode = {self.oauth2_introspection_mode}
introspection_url = {self.oauth2_introspection_url}
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 10000
""")
            os.chmod(args, 0o644)
            out += f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {args}
  result_failure = return-fail
}}
"""
        if self.user_passwords:
            os.makedirs(self.passwd_dir, exist_ok=True)
            os.chmod(self.passwd_dir, 0o755)
            out += f"""passdb {{
  driver = passwd-file
  args = {self.passwd_dir}/%u
}}
"""
        return out

    def _write_passwd(self, user, password):
        # One file per user (the passdb's path holds %u): the auth process
        # rereads a changed file at most once a second, but a new user's
        # file is read when first asked for. Written beside and renamed
        # over, so it is never seen half-written.
        os.makedirs(self.passwd_dir, exist_ok=True)
        os.chmod(self.passwd_dir, 0o755)
        path = os.path.join(self.passwd_dir, user)
        tmp = path + ".new"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{user}:{{PLAIN}}{password}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def set_password(self, user, password):
        """Gives user a password of its own (needs user_passwords=True).
        A password may hold any character but ':' and line ends. A new
        user's password counts at once; a changed one may take a second."""
        if not self.user_passwords:
            raise ValueError("set_password needs Dovecot(user_passwords=True)")
        if ":" in password or "\n" in password or "\r" in password:
            raise ValueError("a passwd-file password holds no ':' nor line ends")
        if "/" in user or user.startswith("."):
            raise ValueError(f"user name {user!r} cannot name a file")
        self._write_passwd(user, password)

    def make_client_cert(self, user, dirpath=None, key_mode=0o600, days=30, untrusted=False):
        """A client certificate of the test CA for user (CN = user, TLS
        client use only) and its key: (cert_path, key_path) in dirpath
        (default WORKDIR/certs/clients), the key file with key_mode.
        untrusted=True: signed by the CA nobody trusts instead."""
        ca_crt, ca_key = self.ca_file, self.ca_key
        if untrusted:
            ca_crt = self.untrusted_ca_file
            ca_key = os.path.join(self.certdir, "untrusted-ca.key")
        dirpath = dirpath or os.path.join(self.certdir, "clients")
        os.makedirs(dirpath, exist_ok=True)
        name = f"client-{user}-{next(_seq)}"
        key = os.path.join(dirpath, f"{name}.key")
        csr = os.path.join(dirpath, f"{name}.csr")
        crt = os.path.join(dirpath, f"{name}.pem")
        ext = os.path.join(dirpath, f"{name}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=clientAuth\n")
        # The key is created inside a umask that keeps it private from the
        # first byte; key_mode is applied afterwards.
        old = os.umask(0o077)
        try:
            _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", f"/CN={user}"], dirpath)
        finally:
            os.umask(old)
        _openssl(["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
                  "-CAcreateserial", "-out", crt, "-days", str(days), "-extfile", ext],
                 dirpath)
        os.chmod(key, key_mode)
        os.chmod(crt, 0o644)
        return crt, key

    def _namespace_conf(self, state):
        """Public and other-users namespaces with ACLs (Dovecot 2.3 acl plugin)."""
        if not self.namespaces:
            return ""
        self.public_root = os.path.join(self.maildir_root, "public")
        self._mkdir_owned(self.public_root)
        os.chmod(self.public_root, 0o755)
        sep = self.separator
        return f"""mail_plugins = $mail_plugins acl
plugin {{
  acl = vfile
  acl_shared_dict = file:{self.maildir_root}/shared-mailboxes.db
}}
namespace public {{
  type = public
  separator = {sep}
  prefix = Public{sep}
  location = maildir:{self.public_root}:INDEX={self.maildir_root}/%u/public-index
  subscriptions = no
  list = children
}}
namespace shared {{
  type = shared
  separator = {sep}
  prefix = Shared{sep}%%u{sep}
  location = maildir:{self.maildir_root}/%%u/Maildir:INDEX={self.maildir_root}/%u/shared/%%u
  subscriptions = no
  list = children
}}
"""

    def create_public_mailbox(self, name, messages=()):
        """Public/NAME, readable by anyone, holding messages (delivered as
        files, as Dovecot itself would)."""
        d = os.path.join(self.public_root, "." + name.replace(self.separator, "."))
        self._mkdir_owned(d)
        for sub in ("tmp", "new", "cur"):
            self._mkdir_owned(os.path.join(d, sub))
        acl = os.path.join(d, "dovecot-acl")
        with open(acl, "w") as f:
            f.write("anyone lr\n")
        os.chown(acl, self.uid, self.gid)
        for i, data in enumerate(messages):
            path = os.path.join(d, "new", f"{int(time.time())}.P{os.getpid()}Q{i}.public")
            with open(path, "wb") as f:
                f.write(data)
            os.chown(path, self.uid, self.gid)
        return d

    def share_mailbox(self, owner, folder, reader):
        """Lets reader see owner's folder (as Shared/OWNER/FOLDER)."""
        self.ensure_mailbox(owner)
        self.ensure_mailbox(reader)
        self.doveadm("acl", "set", "-u", owner, folder, f"user={reader}", "lookup", "read")

    @staticmethod
    def _check_traversable(path):
        """The mail user and Dovecot's helpers must reach the work directory."""
        p = path
        while True:
            st = os.stat(p)
            if not st.st_mode & 0o001:
                raise RuntimeError(f"{p} is not searchable by others: the mail user cannot "
                                   f"reach {path} (use a work directory under /tmp)")
            parent = os.path.dirname(p)
            if parent == p:
                return
            p = parent

    def start(self, timeout=20.0):
        if not os.path.exists(os.path.join(self.certdir, "server.pem")):
            self._make_certs()
        else:
            self.ca_file = os.path.join(self.certdir, "test-ca.pem")
            self.ca_key = os.path.join(self.certdir, "test-ca.key")
            self.server_cert = os.path.join(self.certdir, "server.pem")
            self.server_key = os.path.join(self.certdir, "server.key")
            self.untrusted_ca_file = os.path.join(self.certdir, "untrusted-ca.pem")
            self.untrusted_cert = os.path.join(self.certdir, "untrusted-server.pem")
            self.untrusted_key = os.path.join(self.certdir, "untrusted-server.key")
        self._write_conf()
        # A log of its own per start so log_text() covers only this instance.
        open(self.log_path, "w").close()
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf],
                                     stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(self.workdir, "dovecot.out"), "w"),
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            for addr in self.addrs:
                for port in (self.pop3_port, self.pop3s_port, self.imap_port, self.imaps_port):
                    wait_port(addr, port, timeout, self.proc)
            for port in (self.lmtp_port, self.auth_port):
                if port is not None:
                    wait_port("127.0.0.1", port, timeout, self.proc)
        except Exception:
            out = self._tail()
            self.stop()
            raise RuntimeError(f"dovecot did not start:\n{out}")
        return self

    def _tail(self):
        text = ""
        for p in (os.path.join(self.workdir, "dovecot.out"), self.log_path):
            try:
                with open(p, errors="replace") as f:
                    text += f.read()[-4000:]
            except OSError:
                pass
        return text


    # ---- users and mail -----------------------------------------------------

    def new_user(self, prefix="u"):
        """A user name no other test has used with this server."""
        return f"{prefix}{os.getpid()}x{next(_seq)}x{int(time.time() * 1000) % 100000}"

    def user_maildir(self, user):
        return os.path.join(self.maildir_root, user, "Maildir")

    def _mkdir_owned(self, path):
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, 0o700)

    def ensure_mailbox(self, user):
        home = os.path.join(self.maildir_root, user)
        self._mkdir_owned(home)
        md = self.user_maildir(user)
        self._mkdir_owned(md)
        for sub in ("tmp", "new", "cur"):
            self._mkdir_owned(os.path.join(md, sub))
        return md

    def add_message(self, user, data, mtime=None, folder="INBOX"):
        """Puts data (bytes, LF line ends as Dovecot stores them) into the
        user's folder as a new arrival, by writing the file into its new/
        with the mail user's ownership. mtime (Unix seconds) becomes the
        message's INTERNALDATE. Returns the file name."""
        if isinstance(data, str):
            data = data.encode()
        self.ensure_mailbox(user)
        md = self.mailbox_path(user, folder)
        n = next(_seq)
        now = time.time()
        name = f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{n}.harness,S={len(data)}"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.chown(tmp, self.uid, self.gid)
        os.chmod(tmp, 0o600)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.rename(tmp, os.path.join(md, "new", name))
        return name

    def add_messages(self, user, messages):
        return [self.add_message(user, m) for m in messages]

    def save_message(self, user, data, folder="INBOX"):
        """Adds a message through `doveadm save` (Dovecot decides storage)."""
        if isinstance(data, str):
            data = data.encode()
        self.ensure_mailbox(user)
        run(["doveadm", "-c", self.conf, "save", "-u", user, "-m", folder], input=data)

    def doveadm(self, *args, timeout=60, check=True, input=None):
        return run(["doveadm", "-c", self.conf] + list(args), timeout=timeout, check=check,
                   input=input)

    def count(self, user, folder="INBOX"):
        """Messages in the folder, as Dovecot sees them."""
        self.ensure_mailbox(user)
        out = self.doveadm("-f", "flow", "mailbox", "status", "-u", user,
                           "messages", folder).stdout.decode()
        for tok in out.split():
            if tok.startswith("messages="):
                return int(tok.split("=", 1)[1])
        raise RuntimeError(f"unexpected doveadm output: {out!r}")

    def message_files(self, user, folder="INBOX"):
        """Paths of the message files in the user's folder (new/ and cur/).

        Dovecot may be moving files from new/ to cur/ (or renaming them to
        add flags) meanwhile, e.g. in a session whose client was just
        killed: the listing is retried until new/ stays the same around the
        listing of cur/, so no file is missed in transit."""
        md = self.mailbox_path(user, folder)

        def ls(sub):
            d = os.path.join(md, sub)
            try:
                return sorted(os.listdir(d))
            except FileNotFoundError:
                return []
        for _ in range(100):
            new1 = ls("new")
            cur = ls("cur")
            new2 = ls("new")
            if new1 == new2:
                return ([os.path.join(md, "new", n) for n in new1]
                        + [os.path.join(md, "cur", n) for n in cur])
            time.sleep(0.01)
        raise RuntimeError(f"{md} keeps changing")

    def bodies(self, user, folder="INBOX"):
        """The raw contents of the user's messages in folder, read from disk."""
        for _ in range(100):
            res = []
            try:
                for p in self.message_files(user, folder):
                    with open(p, "rb") as f:
                        res.append(f.read())
                return res
            except FileNotFoundError:
                time.sleep(0.01)    # renamed or expunged meanwhile: list again
        raise RuntimeError(f"messages of {user} keep moving")

    def expunge_all(self, user, folder="INBOX"):
        self.doveadm("expunge", "-u", user, "mailbox", folder, "all")

    def clear_indexes(self, user):
        """Removes Dovecot's index/uidlist files of the user's INBOX."""
        md = self.user_maildir(user)
        if not os.path.isdir(md):
            return
        for n in os.listdir(md):
            if n.startswith("dovecot"):
                p = os.path.join(md, n)
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        pass

    # ---- IMAP folders, flags and UIDVALIDITY ----------------------------------

    def create_mailbox(self, user, *names):
        """Creates folders (names in UTF-8 with the '/' separator, e.g.
        "Archive/2024"; parents are created too, as \\Noselect when empty).
        A folder that already exists is left as it is."""
        self.ensure_mailbox(user)
        for name in names:
            r = self.doveadm("mailbox", "create", "-u", user, name, check=False)
            if r.returncode != 0 and b"already exists" not in r.stderr:
                raise RuntimeError(f"doveadm mailbox create {name!r} failed: {r.stderr!r}")

    def delete_mailbox(self, user, name):
        self.doveadm("mailbox", "delete", "-u", user, name)

    def mailbox_path(self, user, folder="INBOX"):
        """The Maildir++ directory Dovecot keeps folder in (".Archive.2024",
        non-ASCII names in modified UTF-7). The folder must exist."""
        if folder.upper() == "INBOX":
            return self.ensure_mailbox(user)
        self.ensure_mailbox(user)
        out = self.doveadm("mailbox", "path", "-u", user, folder).stdout.decode().strip()
        if not out or not os.path.isdir(out):
            raise RuntimeError(f"no directory for folder {folder!r} of {user}: {out!r}")
        return out

    def mailboxes(self, user):
        self.ensure_mailbox(user)
        out = self.doveadm("mailbox", "list", "-u", user).stdout.decode()
        return sorted(ln for ln in out.splitlines() if ln)

    def status(self, user, folder="INBOX"):
        """{"messages", "uidnext", "uidvalidity", "unseen"}: ints from Dovecot."""
        self.ensure_mailbox(user)
        out = self.doveadm("-f", "flow", "mailbox", "status", "-u", user,
                           "messages uidnext uidvalidity unseen", folder).stdout.decode()
        res = {}
        for tok in out.split():
            k, eq, v = tok.partition("=")
            if eq and v.isdigit():
                res[k] = int(v)
        return res

    def uidvalidity(self, user, folder="INBOX"):
        return self.status(user, folder)["uidvalidity"]

    def fetch(self, user, fields, folder="INBOX", query=("all",)):
        """doveadm fetch: one dict per message, keyed by the fields asked
        ("uid flags hdr.message-id size.physical date.received ...")."""
        self.ensure_mailbox(user)
        out = self.doveadm("-f", "tab", "fetch", "-u", user, fields, "mailbox", folder,
                           *query).stdout.decode("utf-8", "replace")
        lines = out.split("\n")
        if not lines or not lines[0]:
            return []
        head = lines[0].split("\t")
        return [dict(zip(head, ln.split("\t"))) for ln in lines[1:] if ln]

    def flags(self, user, folder="INBOX"):
        """{Message-ID: frozenset of flags} without \\Recent (session-bound)."""
        res = {}
        for m in self.fetch(user, "uid flags hdr.message-id", folder):
            fl = frozenset(f for f in m["flags"].split() if f != "\\Recent")
            res[m["hdr.message-id"].strip()] = fl
        return res

    def uids(self, user, folder="INBOX"):
        """{Message-ID: UID}."""
        return {m["hdr.message-id"].strip(): int(m["uid"])
                for m in self.fetch(user, "uid hdr.message-id", folder)}

    def add_flags(self, user, flags, folder="INBOX", query=("all",)):
        """doveadm flags add, e.g. add_flags(u, "\\Seen \\Flagged", "INBOX",
        ("header", "Message-ID", "<m-1@test>"))."""
        self.doveadm("flags", "add", "-u", user, flags, "mailbox", folder, *query)

    def flag_message(self, user, message_id, flags, folder="INBOX"):
        self.add_flags(user, flags, folder, ("header", "Message-ID", message_id))

    def save_messages(self, user, messages, folder="INBOX"):
        for m in messages:
            self.save_message(user, m, folder)

    def rebuild_mailbox(self, user, folder="INBOX", tries=5):
        """Makes Dovecot forget its index and UID list of folder so that it
        rebuilds them from the files: same messages, same flags, a new
        UIDVALIDITY. Only between sessions (no client may have it open).
        Returns the new UIDVALIDITY."""
        old = self.uidvalidity(user, folder)
        path = self.mailbox_path(user, folder)
        for _ in range(tries):
            for n in os.listdir(path):
                if n.startswith("dovecot") and not n.startswith("dovecot-uidvalidity"):
                    p = os.path.join(path, n)
                    if os.path.isdir(p):
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        try:
                            os.unlink(p)
                        except FileNotFoundError:
                            pass
            new = self.uidvalidity(user, folder)
            if new != old:
                return new
            time.sleep(1.1)     # UIDVALIDITY comes from the clock
        raise RuntimeError(f"UIDVALIDITY of {folder!r} stays {old}")

    def recreate_mailbox(self, user, folder, messages, flags=None):
        """Deletes folder and creates it again holding messages (in that
        order, so UIDs are handed out anew), with a new UIDVALIDITY.
        flags: {Message-ID: "\\Seen ..."} to set again afterwards."""
        if folder.upper() == "INBOX":
            raise ValueError("INBOX cannot be deleted: use rebuild_mailbox")
        old = self.uidvalidity(user, folder)
        for _ in range(5):
            self.delete_mailbox(user, folder)
            self.create_mailbox(user, folder)
            if self.uidvalidity(user, folder) != old:
                break
            time.sleep(1.1)
        else:
            raise RuntimeError(f"UIDVALIDITY of {folder!r} stays {old}")
        self.save_messages(user, messages, folder)
        for mid, fl in (flags or {}).items():
            self.flag_message(user, mid, fl, folder)
        return self.uidvalidity(user, folder)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


if __name__ == "__main__":
    # Manual use: start, print the connection data, wait for Ctrl-C.
    import sys
    with Dovecot() as dc:
        print(f"workdir {dc.workdir}\nca_file {dc.ca_file}\npassword {dc.password}\n"
              f"pop3s {dc.pop3s_port} pop3 {dc.pop3_port} imaps {dc.imaps_port} "
              f"imap {dc.imap_port}", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
        sys.exit(0)
