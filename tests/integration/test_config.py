"""Command line and configuration file checks."""

import os
import shutil
import time

import pytest

import mprun
from conftest import ROOT, EX_OK, EX_USAGE, EX_CONFIG, EX_TEMPFAIL, Raw, make_message, assert_error


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_check_config_sample(mp):
    sample = os.path.join(ROOT, "conf", "mailpull.conf")
    if not os.path.exists(sample):
        pytest.skip("conf/mailpull.conf not present")
    path = mp.path("sample.conf")
    shutil.copyfile(sample, path)
    os.chmod(path, 0o600)
    r = mp.run("--check-config", config=path)
    assert r.rc == EX_OK, str(r)


def test_check_config_good(mp):
    mp.configure(mp.pop3_account("someone"))
    r = mp.run("--check-config")
    assert r.rc == EX_OK, str(r)
    # A check connects nowhere and creates no Maildir.
    assert not os.path.exists(mp.maildir())


BROKEN = {
    # unknown key on line 6
    "unknown_key": ('state_dir = "/tmp/x"\n'
                    'account "t1" {\n'
                    '    protocol = pop3\n'
                    '    host = "127.0.0.1"\n'
                    '    user = "a"\n'
                    '    frobnicate = 3\n'
                    '    password = "x"\n'
                    '    maildir = "/tmp/x/Maildir"\n'
                    '}\n', 6),
    # bad value on line 4
    "bad_tls": ('# comment\n'
                'account "t1" {\n'
                '    protocol = pop3\n'
                '    tls = sometimes\n'
                '    host = "127.0.0.1"\n'
                '    user = "a"\n'
                '    password = "x"\n'
                '    maildir = "/tmp/x/Maildir"\n'
                '}\n', 4),
    # syntax error (unterminated section) reported on line 3
    "syntax": ('account "t1" {\n'
               '    protocol = pop3\n'
               '    host = "127.0.0.1" }}\n', 3),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_config_broken(mp, name):
    text, line = BROKEN[name]
    path = write(mp.path(f"{name}.conf"), text)
    r = mp.run("--check-config", config=path)
    assert_error(r, EX_CONFIG, f"{path}:{line}:")


def test_broken_config_one_shot(mp):
    text, line = BROKEN["bad_tls"]
    path = write(mp.path("bad.conf"), text)
    r = mp.run(config=path)
    assert_error(r, EX_CONFIG, f"{path}:{line}:")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_readable_by_others(mp, mode):
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    mp.configure(mp.pop3_account(user), mode=mode)
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, mp.config_path)
    r = mp.run()
    assert_error(r, EX_CONFIG, mp.config_path)
    assert mp.dc.count(user) == 1
    assert mp.dc.password not in r.err


def test_readable_config_without_password_is_fine(mp):
    pwfile = write(mp.path("pw"), mp.dc.password + "\n")
    acct = mp.pop3_account("someone", password_file=pwfile)
    del acct["password"]
    mp.configure(acct, mode=0o644)
    r = mp.run("--check-config")
    assert r.rc == EX_OK, str(r)


@pytest.mark.parametrize("mode", [0o620, 0o664, 0o602, 0o666])
@pytest.mark.parametrize("secret", ["password", "password_command"])
def test_config_writable_by_others(mp, mode, secret):
    """Whoever may change the file may make mailpull run any command
    (password_command) or trust another CA: refused whatever it holds."""
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    acct = mp.pop3_account(user)
    if secret == "password_command":
        acct["password_command"] = f"echo {mp.dc.password}"
        del acct["password"]
    mp.configure(acct, mode=mode)
    for args in (["--check-config"], []):
        r = mp.run(*args)
        assert_error(r, EX_CONFIG, mp.config_path, f"run: chmod go-w {mp.config_path}")
        assert mp.dc.password not in r.err
    assert mp.dc.count(user) == 1


def test_config_owned_by_another_user(mp):
    """A file another user owns (root's excepted) is refused with the chown
    that fixes it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file away")
    acct = mp.pop3_account("someone", password_command="echo x")
    del acct["password"]
    mp.configure(acct, mode=0o644)
    os.chown(mp.config_path, 4242, -1)
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, mp.config_path, "uid 4242",
                 f"run: chown {os.geteuid()} {mp.config_path}")
    os.chown(mp.config_path, 0, -1)
    r = mp.run("--check-config")
    assert r.rc == EX_OK, str(r)


@pytest.mark.parametrize("how", ["group_writable", "other_owner"])
def test_password_file_unsafe(mp, how):
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    pwfile = write(mp.path("pw"), mp.dc.password + "\n",
                   mode=0o620 if how == "group_writable" else 0o600)
    if how == "other_owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the file away")
        os.chown(pwfile, 4242, -1)
    acct = mp.pop3_account(user, password_file=pwfile)
    del acct["password"]
    mp.configure(acct)
    r = mp.run()
    fix = f"chmod 600 {pwfile}" if how == "group_writable" else \
        f"chown {os.geteuid()} {pwfile}"
    assert_error(r, EX_CONFIG, f"password_file {pwfile}", fix)
    assert mp.dc.count(user) == 1


def test_password_file_and_command(mp):
    ua, ub = mp.new_user(), mp.new_user()
    mp.dc.add_message(ua, make_message(0, tag="a"))
    mp.dc.add_message(ub, make_message(0, tag="b"))
    pwfile = write(mp.path("pw"), mp.dc.password + "\n")
    a = mp.pop3_account(ua, mp.maildir("A"), password_file=pwfile)
    b = mp.pop3_account(ub, mp.maildir("B"), password_command=f"cat {pwfile}")
    del a["password"], b["password"]
    mp.configure({"a": a, "b": b})
    r = mp.run()
    assert r.rc == EX_OK, str(r)
    assert len(mp.messages(mp.maildir("A"))) == 1
    assert len(mp.messages(mp.maildir("B"))) == 1


def test_plaintext_needs_opt_in(mp):
    acct = mp.pop3_account("x", tls=Raw("none"), port=mp.dc.pop3_port)
    mp.configure(acct)
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, mp.config_path)


def test_usage_error(mp):
    r = mp.run("--no-such-option", config=False)
    assert r.rc == EX_USAGE, str(r)
    assert r.err.strip(), "no message for a usage error"


def test_missing_config_file(mp):
    path = mp.path("no-such.conf")
    for args in (("--check-config",), ()):
        r = mp.run(*args, config=path)
        assert_error(r, EX_CONFIG, f"{path}: No such file or directory")


def test_config_is_a_directory(mp):
    path = mp.path("confdir")
    os.mkdir(path)
    r = mp.run("--check-config", config=path)
    assert_error(r, EX_CONFIG, f"{path}: not a regular file")


MORE_BROKEN = {
    # bad values, each with its line and what is wrong
    "bad_port": ('account "t1" {\n'
                 '    protocol = pop3\n'
                 '    host = "127.0.0.1"\n'
                 '    port = 99999\n'
                 '    user = "a"\n'
                 '    password = "x"\n'
                 '    maildir = "/tmp/x/Maildir"\n'
                 '}\n', 4, "must be a number from 1 to 65535"),
    "bad_protocol": ('account "t1" {\n'
                     '    protocol = smtp\n'
                     '    host = "127.0.0.1"\n'
                     '    user = "a"\n'
                     '    password = "x"\n'
                     '    maildir = "/tmp/x/Maildir"\n'
                     '}\n', 2, "must be pop3 or imap"),
    "bad_bool": ('account "t1" {\n'
                 '    protocol = pop3\n'
                 '    host = "127.0.0.1"\n'
                 '    user = "a"\n'
                 '    password = "x"\n'
                 '    maildir = "/tmp/x/Maildir"\n'
                 '    keep = maybe\n'
                 '}\n', 7, "must be yes or no"),
    "missing_maildir": ('account "t1" {\n'
                        '    protocol = pop3\n'
                        '    host = "127.0.0.1"\n'
                        '    user = "a"\n'
                        '    password = "x"\n'
                        '}\n', 1, "maildir is required"),
    "unknown_top_level": ('state_dir = "/tmp/x"\n'
                          'bogus_top = 1\n', 2, "bogus_top"),
    "duration_with_space": ('account "t1" {\n'
                            '    protocol = pop3\n'
                            '    host = "127.0.0.1"\n'
                            '    user = "a"\n'
                            '    password = "x"\n'
                            '    maildir = "/tmp/x/Maildir"\n'
                            '    timeout = 2 hours\n'
                            '}\n', 7, "no such option 'hours' (write a duration or size "
                            "with its unit letter and no space: 2h, 90s, 10M)"),
    "unclosed_string": ('account "t1" {\n'
                        '    protocol = pop3\n'
                        '    host = "127.0.0.1"\n'
                        '    user = "a"\n'
                        '    password = "x\n'
                        '}\n', 5, "not closed"),
}


@pytest.mark.parametrize("name", sorted(MORE_BROKEN))
def test_check_config_bad_values(mp, name):
    text, line, what = MORE_BROKEN[name]
    path = write(mp.path(f"{name}.conf"), text)
    r = mp.run("--check-config", config=path)
    assert_error(r, EX_CONFIG, f"{path}:{line}:", what)


# ---- password_command ------------------------------------------------------

def command_account(mp, user, script, timeout="30s"):
    acct = mp.pop3_account(user, password_command=script, timeout=Raw(timeout))
    del acct["password"]
    mp.configure(acct)


FAILING_COMMANDS = {
    "exit_status": ("exit 3\n", EX_CONFIG, "password_command exited with status 3"),
    # /bin/sh -c runs the script as its child and reports its death as 128 + 9
    "killed": ("kill -9 $$\n", EX_CONFIG,
               "password_command exited with status 137 (the shell's way of saying: "
               "killed by signal 9)"),
    "empty": ("exit 0\n", EX_CONFIG, "password_command gave an empty secret"),
    "not_found": ("exec /nonexistent/pass-helper\n", EX_CONFIG,
                  "password_command exited with status 127"),
}


@pytest.mark.parametrize("name", sorted(FAILING_COMMANDS))
def test_password_command_fails(mp, name):
    body, code, what = FAILING_COMMANDS[name]
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    script = write(mp.path("pw.sh"), "#!/bin/sh\n" + body, mode=0o700)
    command_account(mp, user, script)
    r = mp.run()
    assert_error(r, code, "account t1", what)
    assert 'account "t1"' not in r.err, f"the account named twice:\n{r}"
    assert mp.dc.count(user) == 1
    assert mp.messages() == []


def _alive(pid):
    """Whether pid runs (a zombie waiting for its parent does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_password_command_hangs(mp):
    """A command that never finishes is killed, with what it started, when
    the account's timeout runs out; the account fails, nothing else waits."""
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    pids = mp.path("pids")
    script = write(mp.path("hang.sh"),
                   "#!/bin/sh\n"
                   f"echo $$ > {pids}\n"
                   "sleep 60 &\n"
                   f"echo $! >> {pids}\n"
                   "wait\n", mode=0o700)
    command_account(mp, user, script, timeout="2s")
    r = mp.run(timeout=30)
    assert_error(r, 75, "account t1", "password_command did not finish within 2000 ms "
                 "and was killed")
    assert r.elapsed < 2 + 5 * mprun.TIME_SCALE, f"took {r.elapsed:.1f} s with a 2 s timeout"
    with open(pids) as f:
        started = [int(x) for x in f.read().split()]
    assert len(started) == 2, started
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in started if _alive(p)]
    for p in left:
        os.kill(p, 9)
    assert not left, f"password_command processes still running: {left}"
    assert mp.dc.count(user) == 1


def test_password_file_missing(mp):
    user = mp.new_user()
    mp.dc.add_message(user, make_message(0))
    path = mp.path("no-such-pw")
    acct = mp.pop3_account(user, password_file=path)
    del acct["password"]
    mp.configure(acct)
    r = mp.run()
    assert_error(r, EX_CONFIG, "account t1", f"password_file {path}: No such file")
    assert mp.dc.count(user) == 1


def test_unquoted_password_not_echoed(mp):
    """password = my secret pw: libconfuse reads "my" and then an option
    "secret"; the error names file:line, says to quote the value, and
    repeats no part of it."""
    path = write(mp.path("pw.conf"),
                 'account "a" {\n  protocol = pop3\n  host = h\n  user = u\n'
                 '  maildir = /m\n  password = my sekrit pw\n}\n')
    for args in (["--check-config"], []):
        r = mp.run(*args, config=path)
        assert_error(r, EX_CONFIG, f"{path}:6:", "must be quoted")
        for part in ("sekrit", " my ", "'my'", " pw"):
            assert part not in r.err, f"{part!r} in {r.err!r}"


def run_on_terminal(mp, answers, timeout=60.0):
    """mailpull as the foreground job of a new session whose controlling
    terminal is a pseudo-terminal; answers (bytes) are typed into it once
    something reads. Returns (exit status, what appeared on the terminal)."""
    import fcntl
    import pty
    import select
    import subprocess
    import termios

    master, slave = pty.openpty()

    def session():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = dict(mp.env)
    p = subprocess.Popen(mp.command() + ["-c", mp.config_path], stdin=slave, stdout=slave,
                         stderr=slave, env=env, cwd=mp.tmp, preexec_fn=session)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            if pending:
                # Typed ahead: the line waits in the terminal's input queue.
                os.write(master, pending.pop(0))
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    chunk = b""
                out += chunk
                if not chunk and p.poll() is not None:
                    break
            elif p.poll() is not None:
                break
        else:
            p.kill()
    finally:
        rc = p.wait(timeout=10)
        os.close(master)
    return rc, out.decode("utf-8", "replace")


@pytest.mark.parametrize("how", ["dev_tty", "stdin_silent"])
def test_password_command_prompts_on_terminal(mp, how):
    """A password_command that prompts on the terminal (as pinentry-tty or
    `read -s` do) works when mailpull runs in the foreground of one: it is
    not left in a background process group, where reading the terminal
    stops it (SIGTTIN) until the timeout kills it. Two accounts: the
    second prompts only if the first gave the terminal back."""
    ua, ub = mp.new_user(), mp.new_user()
    mp.dc.add_message(ua, make_message(0, tag="ta"))
    mp.dc.add_message(ub, make_message(0, tag="tb"))
    cmd = {"dev_tty": 'printf "pw: " >/dev/tty; read -r pw </dev/tty; echo "$pw"',
           "stdin_silent": 'printf "pw: " >&2; stty -echo; read -r pw; stty echo; echo "$pw"'}[how]
    accts = {}
    for name, u in (("a", ua), ("b", ub)):
        acct = mp.pop3_account(u, mp.maildir(name.upper()), password_command=cmd,
                               timeout=Raw("10s"))
        del acct["password"]
        accts[name] = acct
    mp.configure(accts)
    line = (mp.dc.password + "\n").encode()
    rc, out = run_on_terminal(mp, [line, line])
    assert rc == EX_OK, f"exit {rc}; terminal:\n{out}"
    assert out.count("pw: ") == 2, out
    assert len(mp.messages(mp.maildir("A"))) == 1
    assert len(mp.messages(mp.maildir("B"))) == 1


def test_password_command_terminal_back_after_timeout(mp):
    """A password_command that times out while it holds the terminal: the
    terminal comes back, so the next account's command can prompt."""
    ua, ub = mp.new_user(), mp.new_user()
    mp.dc.add_message(ub, make_message(0, tag="tb"))
    a = mp.pop3_account(ua, mp.maildir("A"), password_command="sleep 30",
                        timeout=Raw("1s"))
    b = mp.pop3_account(ub, mp.maildir("B"), timeout=Raw("10s"),
                        password_command='read -r pw </dev/tty; echo "$pw"')
    del a["password"], b["password"]
    mp.configure({"a": a, "b": b})
    rc, out = run_on_terminal(mp, [(mp.dc.password + "\n").encode()])
    assert rc != EX_OK, out
    assert "did not finish within" in out, out
    assert len(mp.messages(mp.maildir("B"))) == 1, out


# ---- built-in OAuth2, client certificates, the new auth names ----

def oauth2_account(mp, **over):
    """An IMAPS account of the Dovecot with built-in OAuth2 (no password key)."""
    a = mp.imap_account("someone", password=None, oauth2=Raw("google"),
                        oauth2_client_id="123-abc.apps.googleusercontent.com")
    a.update(over)
    return a


def test_check_config_oauth2_and_cert(mp):
    mp.configure({
        "gmail": oauth2_account(mp, oauth2_client_secret="GOCSPX-x"),
        "m365": oauth2_account(mp, oauth2=Raw("microsoft"), auth="oauthbearer xoauth2",
                               smtp_host="127.0.0.1"),
        "own": oauth2_account(mp, oauth2=Raw("custom"),
                              oauth2_token_url="https://127.0.0.1:1/token",
                              oauth2_device_url="https://127.0.0.1:1/device"),
        "cert": mp.imap_account("someone", password=None, tls_cert="~/c.pem",
                                tls_key="~/k.pem", auth="external"),
        "scram": mp.imap_account("someone", auth="scram-sha-256-plus SCRAM-SHA-256 scram"),
    })
    r = mp.run("--check-config")
    assert r.rc == EX_OK, str(r)
    assert "5 accounts" in r.out


OAUTH2_BROKEN = {
    "no_client_id": (dict(oauth2_client_id=None), "oauth2 = google needs oauth2_client_id"),
    "unknown_provider": (dict(oauth2=Raw("yahoo")),
                         "oauth2 \"yahoo\" must be none, google, microsoft or custom"),
    "plain_http": (dict(oauth2_token_url="http://127.0.0.1/token"), "must be an https:// URL"),
    "custom_no_token_url": (dict(oauth2=Raw("custom"), oauth2_auth_url="https://a.example/"),
                            "oauth2 = custom needs oauth2_token_url"),
    "custom_no_grant": (dict(oauth2=Raw("custom"), oauth2_token_url="https://a.example/t"),
                        "needs oauth2_auth_url or oauth2_device_url"),
    "with_password": (dict(password="x"), "password would never be used"),
    "with_smtp_password": (dict(smtp_host="127.0.0.1", smtp_password="x"),
                           "smtp_password would never be used"),
    "password_auth": (dict(auth="plain"), "auth may name only xoauth2 and oauthbearer"),
    "key_without_cert": (dict(tls_key="/k.pem"), "tls_key needs tls_cert"),
    "secret_line_break": (dict(oauth2_client_secret=Raw('"a\\nb"')),
                          "oauth2_client_secret contains a line break"),
}


@pytest.mark.parametrize("name", sorted(OAUTH2_BROKEN))
def test_check_config_oauth2_broken(mp, name):
    over, what = OAUTH2_BROKEN[name]
    mp.configure(oauth2_account(mp, **over))
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, f"{mp.config_path}:", what)
    assert "GOCSPX" not in r.err


def test_check_config_oauth2_key_without_oauth2(mp):
    mp.configure(mp.imap_account("someone", oauth2_scope="x"))
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, "oauth2_scope needs oauth2 = google, microsoft or custom")


def test_check_config_external_needs_cert(mp):
    mp.configure(mp.imap_account("someone", password=None, auth="external"))
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, "auth = external logs in with a client certificate: set tls_cert")


def test_check_config_unknown_mechanism(mp):
    mp.configure(mp.imap_account("someone", auth="scram-sha-512"))
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, "unknown mechanism \"scram-sha-512\"")


def test_oauth2_client_secret_needs_private_file(mp):
    mp.configure(oauth2_account(mp, oauth2_client_secret="GOCSPX-x"), mode=0o644)
    r = mp.run("--check-config")
    assert_error(r, EX_CONFIG, "chmod 600")
    assert "GOCSPX" not in r.err


AUTHORIZE_USAGE = {
    "no_account": ((), "authorize takes one account name"),
    "two_accounts": (("t1", "t2"), "authorize takes one account name"),
    "unknown_account": (("nope",), 'no account named "nope"'),
    "no_oauth2": (("plain",), "account plain does not use OAuth2"),
}


@pytest.mark.parametrize("name", sorted(AUTHORIZE_USAGE))
def test_authorize_usage(mp, name):
    args, what = AUTHORIZE_USAGE[name]
    mp.configure({"t1": oauth2_account(mp), "plain": mp.imap_account("someone")})
    r = mp.run("authorize", *args)
    assert r.rc == EX_USAGE, str(r)
    assert what in r.err, str(r)


def test_authorize_while_another_run_holds_the_account(mp):
    import fcntl
    mp.configure(oauth2_account(mp))
    os.makedirs(mp.state_dir, exist_ok=True)
    with open(os.path.join(mp.state_dir, "t1.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = mp.run("authorize", "t1")
    assert_error(r, EX_TEMPFAIL, "another run is using t1")
    assert not os.path.exists(os.path.join(mp.state_dir, "t1.oauth2"))


def test_authorize_unreachable_device_endpoint(mp):
    # nothing listens on port 1: the device request fails at once, nothing is saved
    mp.configure(oauth2_account(mp, oauth2=Raw("custom"),
                                oauth2_token_url="https://127.0.0.1:1/token",
                                oauth2_device_url="https://127.0.0.1:1/device"))
    r = mp.run("authorize", "t1")
    assert_error(r, EX_TEMPFAIL, "account t1: OAuth2 endpoint https://127.0.0.1:1/device")
    assert not os.path.exists(os.path.join(mp.state_dir, "t1.oauth2"))
