"""Command line and configuration file checks."""

import os
import shutil

import pytest

from conftest import ROOT, EX_OK, EX_USAGE, EX_CONFIG, Raw, make_message, assert_error


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
