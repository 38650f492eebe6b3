"""A private, throwaway Postfix submission server for mailpull's tests, demo and bench.

Usage:

    with Dovecot(lmtp=True, auth_inet=True) as dc, Postfix(dc) as pf:
        a, b = dc.new_user(), dc.new_user()
        ... submit to 127.0.0.1:pf.smtps_port (implicit TLS) or
            pf.submission_port (STARTTLS mandatory), trusting pf.ca_file,
            AUTH as a with dc.password, MAIL FROM pf.address(a),
            RCPT TO pf.address(b) ...
        pf.wait_delivered(b, 1)

The instance is Postfix's own binaries run with a configuration directory of
their own (WORKDIR/conf: main.cf, master.cf), queue_directory and
data_directory under WORKDIR, and its log in WORKDIR/maillog (postlogd):
nothing under /etc/postfix is read or changed, and the system instance stays
down. Postfix's post-install creates the queue directories (as `postfix
start` does; a root may name any configuration directory, the
alternate_config_directories check only applies to set-gid commands run by
others), then the master runs in the foreground as our child (`master -c
DIR`, a session leader of its own) and is stopped by its PID: SIGTERM to
the master takes its children along.

What it does:
  - two smtpd services on the loopback addresses (127.0.0.1, and ::1 when
    the machine has it): smtps_port with implicit TLS
    (smtpd_tls_wrappermode), submission_port with STARTTLS mandatory
    (smtpd_tls_security_level = encrypt, AUTH only after TLS); both use the
    Dovecot's certificate (signed by its test CA: ca_file);
  - SASL AUTH (PLAIN, LOGIN) checked by the Dovecot over its auth-client
    listener (smtpd_sasl_type = dovecot, inet:127.0.0.1:dc.auth_port): any
    Dovecot user name with dc.password;
  - smtpd_relay_restrictions = permit_sasl_authenticated, reject: nothing
    is accepted without AUTH, not even for the test domains;
  - the domains (default "mail.test") are virtual mailbox domains whose mail
    goes to the Dovecot by LMTP (virtual_transport = lmtp:inet:...);
    USER@mail.test lands in USER's INBOX. Any other domain is refused at
    RCPT (reject_unauth_destination), and nothing ever leaves the machine
    (no local delivery, every other transport is error:);
  - scripted refusals at RCPT for fault tests: a local part starting with
    "reject" gets 550 5.1.1, one starting with "tempfail" 450 4.2.0;
  - headers are left as the client sent them (no rewriting, nothing added
    but Received), bare LF is refused (smtpd_forbid_bare_newline), so is
    pipelining before the server allows it, SMTPUTF8 is on;
  - no rate or connection limits that a bench would hit, in_flow_delay 0,
    a queue that retries deferred mail within a second or two, and no
    fsync (libeatmydata preloaded, as for Cyrus) unless fsync=True.

Extra main.cf settings: Postfix(dc, main={"message_size_limit": "20000"}).
HOLD = {"smtpd_end_of_data_restrictions": ...} puts every accepted message
on hold (no delivery work at all) until release_held().
"""

import glob
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time

from dovecot import PrivateServer, free_port, has_ipv6_loopback, run, wait_port

# Turns fsync and friends into no-ops (Debian's libeatmydata1), as for Cyrus.
EATMYDATA = (glob.glob("/usr/lib/*-linux-gnu*/libeatmydata.so.1") or [""])[0]
POSTFIX_DAEMON_DIR = "/usr/lib/postfix/sbin"
POSTFIX_CMD = "/usr/sbin/postfix"
DOMAIN = "mail.test"


def unavailable():
    """Why no private Postfix can run here, or None."""
    for p in (os.path.join(POSTFIX_DAEMON_DIR, "master"), POSTFIX_CMD, "/usr/sbin/postconf"):
        if not os.access(p, os.X_OK):
            return f"no {p} (install the postfix package: sh tests/deps.sh)"
    if os.geteuid() != 0:
        return "a private Postfix needs root"
    return None


# main.cf settings that keep every accepted message on hold (see release_held).
HOLD = {"smtpd_end_of_data_restrictions": "check_client_access static:HOLD"}


def version():
    r = run(["/usr/sbin/postconf", "-d", "-h", "mail_version"], check=False)
    return "Postfix " + (r.stdout.decode().strip() or "?")


def live_group_members(pgid):
    """PIDs in process group pgid that are still running. The master's
    children end as zombies of init once the master is gone: they count as
    ended."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(name))
    return pids


# Every service the instance needs, none chrooted (its queue directory is not
# set up as a chroot jail). The two smtpd services are added by _master_cf().
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

RCPT_ACCESS = """\
# Scripted answers to RCPT TO for fault tests.
/^reject[^@]*@/ 550 5.1.1 Recipient refused by the test server
/^tempfail[^@]*@/ 450 4.2.0 Recipient deferred by the test server
"""


class Postfix(PrivateServer):
    """A private Postfix: submission (implicit TLS and STARTTLS) with AUTH
    by the Dovecot dc, delivering to it by LMTP."""

    def __init__(self, dc, workdir=None, domains=(DOMAIN,), ipv6=None, main=None,
                 process_limit=200, fsync=False):
        if not dc.lmtp_port or not dc.auth_port:
            raise ValueError("the Dovecot needs Dovecot(lmtp=True, auth_inet=True)")
        self.dc = dc
        self._own_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="mailpull-postfix-")
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.domains = tuple(domains)
        self.domain = self.domains[0]
        self.ipv6 = has_ipv6_loopback() if ipv6 is None else ipv6
        self.addrs = ["127.0.0.1"] + (["::1"] if self.ipv6 else [])
        self.host = "127.0.0.1"
        self.main_extra = dict(main or {})
        self.process_limit = process_limit
        # Postfix syncs every queue file; the Dovecot behind it does not
        # (mail_fsync = never): fsync=False preloads libeatmydata, so a
        # bench measures the client rather than this disk.
        self.fsync = fsync or not EATMYDATA
        self.conf_dir = os.path.join(self.workdir, "conf")
        self.queue_dir = os.path.join(self.workdir, "queue")
        self.data_dir = os.path.join(self.workdir, "data")
        self.log_path = os.path.join(self.workdir, "maillog")
        self.ca_file = dc.ca_file
        self.proc = None
        self.smtps_port = None
        self.submission_port = None

    # ---- set-up -------------------------------------------------------------

    def address(self, user, domain=None):
        return f"{user}@{domain or self.domain}"

    def _main_cf(self):
        dc = self.dc
        inet = ", ".join(a if ":" not in a else f"[{a}]" for a in self.addrs)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": "postfix-mailpull-test",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.workdir,
            "inet_interfaces": inet,
            "inet_protocols": "all" if self.ipv6 else "ipv4",
            "myhostname": "mail.test",
            "mydomain": "test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8" + (" [::1]/128" if self.ipv6 else ""),
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 no local delivery on the test server",
            "default_transport": "error:5.7.1 no delivery outside the test domains",
            "relay_transport": "error:5.7.1 no delivery outside the test domains",
            "smtp_dns_support_level": "disabled",
            "lmtp_host_lookup": "native",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "yes",
            "smtpd_banner": "$myhostname ESMTP mailpull test server",
            "smtpd_peername_lookup": "no",
            # Delivery by LMTP into the Dovecot.
            "virtual_mailbox_domains": " ".join(self.domains),
            "virtual_mailbox_maps": "",
            "virtual_transport": f"lmtp:inet:127.0.0.1:{dc.lmtp_port}",
            "smtpd_reject_unlisted_recipient": "no",
            # Submission: AUTH by Dovecot, nothing without it.
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": f"inet:127.0.0.1:{dc.auth_port}",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_sasl_tls_security_options": "noanonymous",
            "smtpd_sasl_authenticated_header": "no",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_recipient_restrictions":
                f"check_recipient_access regexp:{self.conf_dir}/rcpt_access, "
                "reject_unauth_destination, permit",
            "smtpd_helo_required": "yes",
            # TLS with the Dovecot's certificate (the test CA's).
            "smtpd_tls_chain_files": f"{dc.server_key}, {dc.server_cert}",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_auth_only": "yes",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_received_header": "no",
            "tls_random_source": "dev:/dev/urandom",
            # Strict about what a client sends: bare LF and early pipelining.
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
            "smtpd_forbid_unauth_pipelining": "yes",
            # Headers as the client wrote them: the tests compare bytes.
            "local_header_rewrite_clients": "",
            "remote_header_rewrite_domain": "",
            # Fast: no throttling, deferred mail retried within seconds.
            "in_flow_delay": "0",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "1000",
            "smtpd_hard_error_limit": "1000",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtpd_client_recipient_rate_limit": "0",
            "smtpd_client_auth_rate_limit": "0",
            "default_process_limit": str(self.process_limit),
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "delay_warning_time": "0",
            "daemon_timeout": "120s",
        }
        if not self.fsync:
            # The master keeps only these variables for its children.
            settings["import_environment"] = (
                "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C "
                f"POSTLOG_SERVICE POSTLOG_HOSTNAME LD_PRELOAD={EATMYDATA}")
        settings.update(self.main_extra)
        lines = ["# generated by tests/postfix.py; private to " + self.workdir]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        return "\n".join(lines) + "\n"

    def _master_cf(self):
        # Service names without a host bind every inet_interfaces address.
        return MASTER_CF + (
            f"{self.smtps_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix-mailpull-test/smtps\n"
            "  -o smtpd_tls_wrappermode=yes\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            f"{self.submission_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix-mailpull-test/submission\n"
            "  -o smtpd_tls_security_level=encrypt\n")

    def _write_conf(self):
        for d in (self.conf_dir, self.queue_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
        # postfix must reach the queue and write its data directory.
        os.chmod(self.workdir, 0o755)
        os.chmod(self.queue_dir, 0o755)
        shutil.chown(self.data_dir, "postfix", "postfix")
        self.smtps_port = free_port(self.addrs)
        self.submission_port = free_port(self.addrs, avoid={self.smtps_port})
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(self._main_cf())
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(self._master_cf())
        with open(os.path.join(self.conf_dir, "rcpt_access"), "w") as f:
            f.write(RCPT_ACCESS)
        # Postfix waits until a table or main.cf written in the current
        # second is older (it may still be being written): backdate them.
        past = time.time() - 10
        for name in ("main.cf", "master.cf", "rcpt_access"):
            os.utime(os.path.join(self.conf_dir, name), (past, past))

    def postfix_cmd(self, *args, timeout=60, check=True):
        """The postfix(1) command on this instance (check, flush, ...)."""
        return run([POSTFIX_CMD, "-c", self.conf_dir] + list(args), timeout=timeout,
                   check=check)

    def start(self, timeout=20.0, tries=3):
        """Starts the instance on free ports; a port taken by someone else
        between the choice and the master's bind() means new ports."""
        why = unavailable()
        if why:
            raise RuntimeError(why)
        t0 = time.monotonic()
        for attempt in range(tries):
            try:
                self._start_once(timeout)
                break
            except RuntimeError as e:
                if attempt + 1 == tries or "Address already in use" not in str(e):
                    raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _start_once(self, timeout):
        self._write_conf()
        open(self.log_path, "w").close()
        # The queue directories with their owners and modes, made as
        # `postfix start` makes them (its integrity checks take seconds more).
        meta = run(["/usr/sbin/postconf", "-c", self.conf_dir, "-h", "meta_directory"]
                   ).stdout.decode().strip()
        r = run(["sh", os.path.join(POSTFIX_DAEMON_DIR, "post-install"),
                 f"config_directory={self.conf_dir}", f"meta_directory={meta}",
                 "create-missing"], check=False)
        if r.returncode != 0:
            raise RuntimeError(f"post-install create-missing failed:\n"
                               f"{(r.stdout + r.stderr).decode(errors='replace')}")
        out = open(os.path.join(self.workdir, "master.out"), "w")
        env = dict(os.environ)
        if not self.fsync:
            env["LD_PRELOAD"] = EATMYDATA
        self.proc = subprocess.Popen([os.path.join(POSTFIX_DAEMON_DIR, "master"),
                                      "-c", self.conf_dir],
                                     stdin=subprocess.DEVNULL, stdout=out, env=env,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        try:
            for addr in self.addrs:
                for port in (self.smtps_port, self.submission_port):
                    wait_port(addr, port, timeout, self.proc)
            # The ports answering could be someone else's: the master logs
            # this once it holds all of its own.
            deadline = time.monotonic() + timeout
            while "daemon started" not in self.log_text():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("no \"daemon started\" from the master")
                time.sleep(0.02)
        except Exception:
            self.stop()
            chk = self.postfix_cmd("check", check=False)
            raise RuntimeError(f"postfix did not start:\n{self.log_tail()}\npostfix check:\n"
                               f"{(chk.stdout + chk.stderr).decode(errors='replace')}")

    def stop(self, timeout=10.0):
        """SIGTERM to our master (it passes the signal to its children),
        then waits for every process of its group to be gone."""
        p = self.proc
        super().stop(timeout)
        if p is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not live_group_members(p.pid):
                return
            time.sleep(0.02)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # ---- looking at it ------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, n=4000):
        return self.log_text()[-n:]

    def queue_ids(self):
        """Queue IDs of every message still in Postfix's queue."""
        ids = []
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            top = os.path.join(self.queue_dir, sub)
            for _dirpath, _dirs, files in os.walk(top):
                ids += files
        return ids

    def flush(self):
        """Asks for deferred mail to be retried now (mail deferred after the
        request waits for the next one)."""
        self.postfix_cmd("flush", check=False)

    def release_held(self):
        """Moves mail on hold into the queue and asks for its delivery now."""
        run(["/usr/sbin/postsuper", "-c", self.conf_dir, "-H", "ALL"], check=False)
        self.flush()

    def purge_queue(self):
        """Deletes every message still in the queue (postsuper -d ALL)."""
        run(["/usr/sbin/postsuper", "-c", self.conf_dir, "-d", "ALL"], check=False)

    def wait_delivered(self, user, count, folder="INBOX", timeout=15.0):
        """Waits until the user's folder in the Dovecot holds at least count
        messages (read from the Maildir on disk); returns their contents.
        Past the timeout: AssertionError with the Postfix log's tail."""
        deadline = time.monotonic() + timeout
        have = []
        while True:
            try:
                have = self.dc.bodies(user, folder)
            except (RuntimeError, subprocess.CalledProcessError):
                have = []     # the folder does not exist yet
            if len(have) >= count:
                return have
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{user}/{folder}: {len(have)} of {count} messages after {timeout} s; "
                    f"still queued: {self.queue_ids()}\nPostfix log:\n{self.log_tail()}"
                    f"\nDovecot log:\n{self.dc.log_text()[-2000:]}")
            time.sleep(0.05)

    def wait_queue_empty(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while self.queue_ids():
            if time.monotonic() >= deadline:
                raise AssertionError(f"still queued: {self.queue_ids()}\n{self.log_tail()}")
            time.sleep(0.05)

    # ---- a client for the harness's own checks --------------------------------

    def tls_context(self):
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def client(self, starttls=False, user=None, password=None, timeout=30):
        """An smtplib client after EHLO (and STARTTLS on submission_port),
        logged in when user is given (password: the Dovecot's)."""
        if starttls:
            c = smtplib.SMTP(self.host, self.submission_port, timeout=timeout)
            c.ehlo("client.test")
            c.starttls(context=self.tls_context())
        else:
            c = smtplib.SMTP_SSL(self.host, self.smtps_port, timeout=timeout,
                                 context=self.tls_context())
        c.ehlo("client.test")
        if user is not None:
            c.login(user, password if password is not None else self.dc.password)
        return c


if __name__ == "__main__":
    # Manual use: start a Dovecot and a Postfix, print how to reach them, wait for Ctrl-C.
    import sys
    from dovecot import Dovecot
    with Dovecot(lmtp=True, auth_inet=True) as dc, Postfix(dc) as pf:
        print(f"workdir {pf.workdir} (dovecot {dc.workdir})\nca_file {pf.ca_file}\n"
              f"password {dc.password}\nsmtps {pf.smtps_port} submission {pf.submission_port} "
              f"imaps {dc.imaps_port}\naddresses USER@{pf.domain}\nlog {pf.log_path}",
              flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
        sys.exit(0)
