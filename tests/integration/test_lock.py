"""Never two runs at once on the same state: the second one fails with 75,
or with --wait waits its turn."""

import time

from conftest import EX_OK, EX_TEMPFAIL, Raw, make_message, multiset, assert_error
from fakepop3 import FakePOP3


def stalling_server(mp, msgs):
    """A trusted implicit-TLS fake server that stops answering at RETR."""
    return FakePOP3(tls="implicit", certfile=mp.dc.server_cert, keyfile=mp.dc.server_key,
                    capa=["USER", "UIDL", "TOP"], messages=msgs, stall_on=["RETR"],
                    password="lock-secret", timeout=120)


def account(mp, srv):
    return {
        "protocol": Raw("pop3"),
        "host": "127.0.0.1",
        "port": srv.port,
        "tls": Raw("implicit"),
        "tls_ca_file": mp.dc.ca_file,
        "user": "alice",
        "password": srv.password,
        "maildir": mp.maildir(),
        "keep": True,
        "timeout": Raw("60s"),
    }


def wait_stalled(srv, first, timeout=30):
    deadline = time.monotonic() + timeout
    while not srv.stalled.is_set():
        r = first.poll()
        assert r is None, f"first run ended before stalling:\n{r}"
        assert time.monotonic() < deadline, "first run never reached RETR"
        srv.stalled.wait(0.05)


def test_second_run_fails_while_locked(mp):
    msgs = [make_message(i) for i in range(2)]
    with stalling_server(mp, msgs) as srv:
        mp.configure(account(mp, srv))
        first = mp.start()
        try:
            wait_stalled(srv, first)
            t0 = time.monotonic()
            second = mp.run(timeout=30)
            assert_error(second, EX_TEMPFAIL, "t1")
            assert time.monotonic() - t0 < 20, "the second run waited for the lock"
            assert first.poll() is None
        finally:
            srv.release()
        r = first.finish(mp.timeout)
    assert r.rc == EX_OK, str(r)
    assert multiset(mp.messages()) == multiset(msgs)


def test_wait_takes_turns(mp):
    msgs = [make_message(i) for i in range(3)]
    with stalling_server(mp, msgs) as srv:
        mp.configure(account(mp, srv))
        first = mp.start()
        try:
            wait_stalled(srv, first)
            second = mp.start("--wait")
            time.sleep(1.5)
            assert second.poll() is None, f"--wait did not wait:\n{second.poll()}"
            # Only the first run's connection so far: the second waits before connecting
            # or at least before fetching.
            assert srv.verbs().count("RETR") == 1
        finally:
            srv.stall_on.clear()
            srv.release()
        r1 = first.finish(mp.timeout)
        r2 = second.finish(mp.timeout)
    assert r1.rc == EX_OK, str(r1)
    assert r2.rc == EX_OK, str(r2)
    # keep = yes: the second run found everything fetched already.
    assert multiset(mp.messages()) == multiset(msgs)
