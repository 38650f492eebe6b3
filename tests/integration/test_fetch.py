"""Fetching from Dovecot over POP3: transports, keep policies, content."""

import os
import poplib
import ssl
import time

import pytest

from conftest import (EX_OK, Raw, make_message, multiset, digest, assert_error, report)


def fill(mp, user, n, tag="m", **kw):
    msgs = [make_message(i, tag=tag, **kw) for i in range(n)]
    mp.dc.add_messages(user, msgs)
    return msgs


def assert_ok(r):
    assert r.rc == EX_OK, str(r)


@pytest.mark.servers
def test_pop3s_fetch(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 3)
    mp.configure(mp.pop3_account(user))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)
    assert mp.dc.count(user) == 0
    assert mp.tmp_files() == []


@pytest.mark.servers
def test_pop3_stls_fetch(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 3)
    mp.configure(mp.pop3_account(user, port=mp.dc.pop3_port, tls=Raw("starttls")))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)
    assert mp.dc.count(user) == 0


def test_pop3s_over_ipv6(mp):
    if not mp.dc.ipv6:
        pytest.skip("no IPv6 loopback")
    user = mp.new_user()
    msgs = fill(mp, user, 2)
    mp.configure(mp.pop3_account(user, host="::1"))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)


def test_quiet_success_prints_nothing(mp):
    user = mp.new_user()
    fill(mp, user, 2)
    mp.configure(mp.pop3_account(user))
    r = mp.run("-q")
    assert_ok(r)
    assert r.stdout == b"" and r.stderr == b"", str(r)


@pytest.mark.servers
def test_keep_yes_fetches_each_message_once(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 5)
    mp.configure(mp.pop3_account(user, keep=True))
    server_before = multiset(mp.dc.bodies(user))
    for _ in range(3):
        assert_ok(mp.run())
        assert multiset(mp.messages()) == multiset(msgs)
        assert mp.dc.count(user) == 5
    assert multiset(mp.dc.bodies(user)) == server_before
    more = [make_message(i, tag="later") for i in range(2)]
    mp.dc.add_messages(user, more)
    assert_ok(mp.run())
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs + more)
    assert mp.dc.count(user) == 7


@pytest.mark.servers
def test_keep_no_empties_server(mp):
    user = mp.new_user()
    msgs = fill(mp, user, 25, size=3000)
    mp.configure(mp.pop3_account(user, keep=False))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)
    assert mp.dc.count(user) == 0
    # A second pass finds nothing and changes nothing.
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)


def test_only_named_accounts_run(mp):
    ua, ub = mp.new_user(), mp.new_user()
    ma, mb = fill(mp, ua, 2, tag="a"), fill(mp, ub, 2, tag="b")
    mp.configure({"a": mp.pop3_account(ua, mp.maildir("A")),
                  "b": mp.pop3_account(ub, mp.maildir("B"))})
    assert_ok(mp.run("b"))
    assert mp.messages(mp.maildir("B")) and multiset(mp.messages(mp.maildir("B"))) == multiset(mb)
    assert not os.path.isdir(mp.maildir("A")) or mp.messages(mp.maildir("A")) == []
    assert mp.dc.count(ua) == 2
    assert_ok(mp.run())
    assert multiset(mp.messages(mp.maildir("A"))) == multiset(ma)


def test_one_failing_account_does_not_stop_others(mp):
    ua, ub = mp.new_user(), mp.new_user()
    fill(mp, ua, 2, tag="a")
    mb = fill(mp, ub, 3, tag="b")
    mp.configure({"bad": mp.pop3_account(ua, mp.maildir("A"), password="wrong-password"),
                  "good": mp.pop3_account(ub, mp.maildir("B"))})
    r = mp.run()
    assert r.rc != EX_OK, str(r)
    assert "bad" in r.err, str(r)
    assert multiset(mp.messages(mp.maildir("B"))) == multiset(mb)
    assert mp.dc.count(ua) == 2


def test_default_state_dir_and_config_path(mp):
    """Without state_dir the state goes to $XDG_STATE_HOME/mailpull; without
    -c the config is $XDG_CONFIG_HOME/mailpull/config."""
    user = mp.new_user()
    msgs = fill(mp, user, 2)
    cfgdir = os.path.join(mp.env["XDG_CONFIG_HOME"], "mailpull")
    os.makedirs(cfgdir)
    mp.configure(mp.pop3_account(user, keep=True), path=os.path.join(cfgdir, "config"),
                 state_dir=None)
    assert_ok(mp.run(config=False))
    assert multiset(mp.messages()) == multiset(msgs)
    sd = os.path.join(mp.env["XDG_STATE_HOME"], "mailpull")
    assert os.path.exists(os.path.join(sd, "t1.state")) or \
        os.path.exists(os.path.join(sd, "t1.journal")), os.listdir(sd)


# ---- content -----------------------------------------------------------------

TRICKY = [
    # Lines that POP3 dot-stuffs, and a lone dot that would end the message.
    b"Subject: dots\n\n.leading dot\n..two dots\n...three\n.\n..\nmiddle . dot\n.",
    # 8-bit headers: raw UTF-8 and raw Latin-1.
    "Subject: Gr\u00fc\u00dfe aus K\u00f6ln \u2013 \u65e5\u672c\nFrom: J\u00fcrgen "
    "<j@example.org>\n\nUTF-8 body: \u00e9\u00e8\u00ea \U0001F600\n".encode("utf-8"),
    "Subject: Caf\u00e9 cr\u00e8me\nFrom: Ren\u00e9e <r@example.org>\n\nLatin-1 body "
    "\u00e0\u00e7\u00f1\n".encode("latin-1"),
    # No final newline: POP3 cannot say so, the stored copy ends in one.
    b"Subject: no final newline\n\nlast line without newline",
    # Empty body.
    b"Subject: empty body\nMessage-ID: <empty@test>\n\n",
    # Headers only, no blank line.
    b"Subject: headers only\nMessage-ID: <headers-only@test>\n",
    # Long line, tabs, trailing spaces, blank lines at the end.
    b"Subject: whitespace\n\n\tindented\ntrailing   \n" + b"x" * 5000 + b"\n\n\n",
    # A line that is a dot followed by CR-less text after dot-stuffing boundary.
    b"Subject: end-like\n\nbefore\n.\r\nafter\n",
]


def expected_local(m):
    """What mailpull must store: CRLF -> LF, and a final newline."""
    m = m.replace(b"\r\n", b"\n")
    if not m.endswith(b"\n"):
        m += b"\n"
    return m


@pytest.mark.servers
def test_byte_exact_content(mp):
    user = mp.new_user()
    mp.dc.add_messages(user, TRICKY)
    mp.configure(mp.pop3_account(user))
    assert_ok(mp.run())
    got = mp.messages()
    want = [expected_local(m) for m in TRICKY]
    missing = [w for w in want if w not in got]
    assert not missing, f"not stored byte-exact: {missing!r}\ngot: {got!r}"
    assert multiset(got) == multiset(want)
    assert mp.dc.count(user) == 0


def test_large_message_streams_with_bounded_memory(mp):
    """A 20 MiB message arrives intact; mailpull's peak RSS stays far below it."""
    size = 20 * 1024 * 1024
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4\n"
    chunk = line * 63 + b".dot-stuffed line\n"
    body = chunk * (size // len(chunk) + 1)
    big = b"Subject: big\nMessage-ID: <big@test>\n\n" + body[:size]
    big = big[: big.rfind(b"\n") + 1]
    user = mp.new_user()
    mp.dc.add_message(user, big)
    mp.configure(mp.pop3_account(user, timeout=Raw("120s")))
    r = mp.run(measure_rss=True, timeout=mp.timeout * 3)
    assert_ok(r)
    got = mp.messages()
    assert len(got) == 1
    assert len(got[0]) == len(big) and digest(got[0]) == digest(big)
    assert mp.dc.count(user) == 0
    rss_mib = r.maxrss_kib / 1024
    report(f"20 MiB message: mailpull peak RSS {rss_mib:.1f} MiB"
           f"{' (sanitized build or valgrind)' if mp.slow else ''}, "
           f"wall {r.elapsed:.2f} s, CPU {r.cpu:.2f} s")
    if r.maxrss_kib == 0:
        pytest.skip("peak RSS not measured (GNU time missing)")
    if mp.slow:
        pytest.skip(f"sanitized build or valgrind: peak RSS {rss_mib:.1f} MiB is not mailpull's own")
    assert rss_mib < 12, f"peak RSS {rss_mib:.1f} MiB for a 20 MiB message"


def test_max_size_leaves_big_messages(mp):
    user = mp.new_user()
    small = [make_message(i, tag="small", size=2000) for i in range(3)]
    big = [make_message(i, tag="big", size=2 * 1024 * 1024) for i in range(2)]
    mp.dc.add_messages(user, small + big)
    mp.configure(mp.pop3_account(user, keep=False, max_size=Raw("1M")))
    r = mp.run()
    assert_ok(r)
    assert multiset(mp.messages()) == multiset(small)
    assert multiset(mp.dc.bodies(user)) == multiset(big)
    # Still left there on the next pass, and still not fetched.
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(small)
    assert mp.dc.count(user) == 2


# ---- keep_days ---------------------------------------------------------------

def uidl_map(dc, user):
    """{UIDL: Message-ID} straight from Dovecot."""
    ctx = ssl.create_default_context(cafile=dc.ca_file)
    p = poplib.POP3_SSL(dc.host, dc.pop3s_port, context=ctx, timeout=30)
    try:
        p.user(user)
        p.pass_(dc.password)
        res = {}
        for ln in p.uidl()[1]:
            num, uid = ln.decode().split()
            head = p.top(int(num), 0)[1]
            mid = [h for h in head if h.lower().startswith(b"message-id:")]
            res[uid] = mid[0].split(b":", 1)[1].strip().decode() if mid else None
        return res
    finally:
        p.quit()


def read_state(path, sizes=None):
    """{key: time} of a snapshot; the sizes of "L" records go into sizes."""
    with open(path) as f:
        lines = f.read().split("\n")
    assert lines[0] == "mailpull-state 1", lines[:1]
    entries = {}
    for ln in lines[1:]:
        if ln.startswith("L "):
            _, t, key, size = ln.split(" ")
            entries[key] = int(t)
            if sizes is not None:
                sizes[key] = int(size)
        elif ln:
            t, key = ln.split(" ", 1)
            entries[key] = int(t)
    return entries


def write_state(path, entries, sizes=None):
    tmp = path + ".edit"
    with open(tmp, "w") as f:
        f.write("mailpull-state 1\n")
        for k, t in entries.items():
            if sizes and k in sizes:
                f.write(f"L {t} {k} {sizes[k]}\n")
            else:
                f.write(f"{t} {k}\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, os.stat(path).st_mode & 0o777)
    os.rename(tmp, path)


def fold_journal(mp, account="t1"):
    """Makes the snapshot the whole truth so a test can edit it: folds a
    journal holding only "+" and "L" records into NAME.state and removes it."""
    j = mp.journal_file(account)
    if not os.path.exists(j) or os.path.getsize(j) == 0:
        return
    with open(j) as f:
        lines = [ln for ln in f.read().split("\n") if ln and not ln.startswith("mailpull-journal ")]
    if any(not ln.startswith(("+ ", "L ")) for ln in lines):
        pytest.fail(f"cannot age entries: journal holds more than additions: {lines!r}")
    sizes = {}
    entries = read_state(mp.state_file(account), sizes) \
        if os.path.exists(mp.state_file(account)) else {}
    for ln in lines:
        fields = ln.split(" ")
        entries.setdefault(fields[2], int(fields[1]))
        if fields[0] == "L":
            sizes[fields[2]] = int(fields[4])
    if not os.path.exists(mp.state_file(account)):
        with open(mp.state_file(account), "w") as f:
            f.write("mailpull-state 1\n")
        os.chmod(mp.state_file(account), 0o600)
    write_state(mp.state_file(account), entries, sizes)
    os.unlink(j)


def test_keep_days_deletes_only_old_messages(mp):
    """keep_days = 5: a message fetched 10 days ago is deleted on the server,
    one fetched now stays; nothing is fetched twice."""
    user = mp.new_user()
    msgs = fill(mp, user, 4, tag="kd")
    mp.configure(mp.pop3_account(user, keep=True))
    assert_ok(mp.run())
    assert multiset(mp.messages()) == multiset(msgs)
    assert mp.dc.count(user) == 4

    fold_journal(mp)
    sizes = {}
    entries = read_state(mp.state_file(), sizes)
    uids = uidl_map(mp.dc, user)
    assert set(entries) == set(uids), (entries, uids)
    old_ids = {"<kd-0@test>", "<kd-2@test>"}
    ten_days_ago = int(time.time()) - 10 * 86400
    for key, mid in uids.items():
        if mid in old_ids:
            entries[key] = ten_days_ago
    write_state(mp.state_file(), entries, sizes)

    acct = mp.pop3_account(user, keep_days=5)
    del acct["keep"]
    mp.configure(acct)
    assert_ok(mp.run())
    left = set(uidl_map(mp.dc, user).values())
    assert left == {"<kd-1@test>", "<kd-3@test>"}, left
    assert multiset(mp.messages()) == multiset(msgs)
    assert_ok(mp.run())
    assert set(uidl_map(mp.dc, user).values()) == left
    assert multiset(mp.messages()) == multiset(msgs)


def test_messages_land_in_new(mp):
    user = mp.new_user()
    fill(mp, user, 2)
    mp.configure(mp.pop3_account(user))
    assert_ok(mp.run())
    new = os.listdir(os.path.join(mp.maildir(), "new"))
    assert len(new) == 2
    for n in new:
        st = os.stat(os.path.join(mp.maildir(), "new", n))
        assert st.st_mode & 0o077 == 0, f"{n} is readable by others: {oct(st.st_mode)}"


@pytest.mark.servers
def test_wrong_password_deletes_nothing(mp):
    user = mp.new_user()
    fill(mp, user, 3)
    mp.configure(mp.pop3_account(user, password="not-the-Password-42"))
    r = mp.run()
    assert_error(r, 77, "t1", mp.dc.host)
    assert "not-the-Password-42" not in r.err + r.out
    assert mp.dc.count(user) == 3
    assert mp.messages() == []
