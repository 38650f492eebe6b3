"""The systemd units and `make install`.

`make install` puts the binary, the manual pages, the sample configuration
and the units where a distribution expects them, with @bindir@ replaced;
`systemd-analyze verify` accepts every installed unit without a warning;
`systemd-analyze security` rates them (printed, and bounded for the system
template). systemd need not be running: verify and the offline security
analysis only read unit files. Needs no Dovecot.
"""

import os
import re
import shutil
import stat
import pathlib
import subprocess
import tempfile

import pytest

from conftest import ROOT, report

USER_UNITS = ["mailpull.service", "mailpull-once.service", "mailpull.timer"]
SYSTEM_UNITS = ["mailpull@.service"]
ALL_UNITS = USER_UNITS + SYSTEM_UNITS

# The template's exposure as systemd-analyze security rates it offline
# (1.7 with systemd 252); a rise above this means hardening was lost.
TEMPLATE_MAX_EXPOSURE = 2.5


def _make_env():
    # Run make as a fresh top-level make: `make check` exports its job server
    # and command-line variables through MAKEFLAGS.
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


def make(mailpull_bin, *args):
    """make -C ROOT args..., using the build directory of the binary under
    test so nothing is rebuilt."""
    cmd = ["make", "-C", ROOT, f"BUILDDIR={os.path.dirname(mailpull_bin)}", *args]
    r = subprocess.run(cmd, env=_make_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r


def files_under(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def analyze_env(tmp_path):
    # `systemd-analyze --user` wants a runtime directory even when no user
    # manager runs (it only reads files here).
    # Keep it short: socket paths under it (gpg-agent's) must fit sun_path's
    # 108 bytes, which a deep pytest temporary directory can exceed.
    rt = tmp_path / "rt"
    if len(str(rt)) > 40:
        rt = pathlib.Path(tempfile.mkdtemp(prefix="mp-rt-", dir="/tmp"))
    rt.mkdir(mode=0o700, exist_ok=True)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(rt),
        "LANG": "C.UTF-8",
        "SYSTEMD_LOG_LEVEL": "info",
        "SYSTEMD_LOG_COLOR": "0",
        "SYSTEMD_PAGER": "",
        "SYSTEMD_COLORS": "0",
    }


def analyze(tmp_path, unit_path, *verb, user):
    cmd = ["systemd-analyze"] + (["--user"] if user else []) + list(verb) + [str(unit_path)]
    env = analyze_env(tmp_path)
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        if env["XDG_RUNTIME_DIR"].startswith("/tmp/mp-rt-"):
            shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)
    return r, cmd


@pytest.fixture(scope="module")
def systemd_analyze():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    return shutil.which("systemd-analyze")


# --- make install / uninstall ----------------------------------------------

def test_install_layout(mailpull_bin, tmp_path):
    dest = tmp_path / "dest"
    make(mailpull_bin, "install", f"DESTDIR={dest}", "PREFIX=/usr")

    expect = {
        "usr/bin/mailpull",
        "usr/share/man/man1/mailpull.1",
        "usr/share/man/man5/mailpull.conf.5",
        "usr/share/doc/mailpull/mailpull.conf.sample",
    }
    expect |= {f"usr/lib/systemd/user/{u}" for u in USER_UNITS}
    expect |= {f"usr/lib/systemd/system/{u}" for u in SYSTEM_UNITS}
    got = files_under(dest)
    assert expect <= got, f"missing: {sorted(expect - got)}"
    stray = [p for p in got if not p.startswith(("usr/bin/", "usr/share/", "usr/lib/systemd/"))]
    assert not stray, f"installed outside the usual places: {stray}"

    b = dest / "usr/bin/mailpull"
    assert os.stat(b).st_mode & 0o777 == 0o755
    with open(b, "rb") as f, open(mailpull_bin, "rb") as g:
        assert f.read() == g.read()
    for rel in expect - {"usr/bin/mailpull"}:
        assert stat.S_IMODE(os.stat(dest / rel).st_mode) == 0o644, rel

    for rel in sorted(e for e in expect if "/systemd/" in e):
        text = (dest / rel).read_text()
        assert "@bindir@" not in text and not re.search(r"@\w+@", text), rel
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                assert line.split("=", 1)[1].split()[0] == "/usr/bin/mailpull", rel


def test_install_overridable_unit_dirs(mailpull_bin, tmp_path):
    dest = tmp_path / "dest"
    make(mailpull_bin, "install", f"DESTDIR={dest}", "PREFIX=/opt/mp",
         "SYSTEMDUSERUNITDIR=/etc/systemd/user", "SYSTEMDSYSTEMUNITDIR=/etc/systemd/system")
    got = files_under(dest)
    assert {f"etc/systemd/user/{u}" for u in USER_UNITS} <= got
    assert {f"etc/systemd/system/{u}" for u in SYSTEM_UNITS} <= got
    assert not any(p.startswith("opt/mp/lib/systemd") for p in got)
    text = (dest / "etc/systemd/user/mailpull.service").read_text()
    assert "ExecStart=/opt/mp/bin/mailpull --daemon\n" in text


def test_uninstall_removes_what_install_installed(mailpull_bin, tmp_path):
    dest = tmp_path / "dest"
    make(mailpull_bin, "install", f"DESTDIR={dest}", "PREFIX=/usr")
    make(mailpull_bin, "uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
    left = files_under(dest)
    assert not left, f"make uninstall left {sorted(left)}: keep it in step with install"


# --- the units themselves ----------------------------------------------------

def unit_settings(path):
    """{(section, key): [values]} of a unit file."""
    out, section = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault((section, k), []).append(v)
    return out


def test_units_match_the_daemon_interface():
    units = {u: unit_settings(os.path.join(ROOT, "systemd", u)) for u in ALL_UNITS}
    for u in ("mailpull.service", "mailpull@.service"):
        s = units[u]
        assert s[("Service", "Type")] == ["notify"], u
        assert s[("Service", "ExecStart")] == ["@bindir@/mailpull --daemon"], u
        assert s[("Service", "ExecReload")] == ["/bin/kill -HUP $MAINPID"], u
        assert s[("Service", "Restart")] == ["on-failure"], u
        assert ("Service", "WatchdogSec") in s, u
    assert units["mailpull@.service"][("Service", "User")] == ["%i"]
    once = units["mailpull-once.service"]
    assert once[("Service", "Type")] == ["oneshot"]
    assert once[("Service", "ExecStart")] == ["@bindir@/mailpull -q"]
    assert "75" in once[("Service", "SuccessExitStatus")][0].split()
    timer = units["mailpull.timer"]
    # The timer starts the one-shot, not the daemon of the same name.
    assert timer[("Timer", "Unit")] == ["mailpull-once.service"]
    assert timer[("Timer", "Persistent")] == ["true"]
    assert ("Timer", "RandomizedDelaySec") in timer
    # %h is /root in a system unit: the template must not use it.
    with open(os.path.join(ROOT, "systemd", "mailpull@.service")) as f:
        body = "".join(l for l in f if not l.lstrip().startswith("#"))
    assert "%h" not in body
    # Settings the user manager cannot apply and that make the unit fail.
    for u in USER_UNITS:
        assert ("Service", "CapabilityBoundingSet") not in units[u], u
        assert ("Service", "PrivateUsers") not in units[u], u


@pytest.fixture(scope="module")
def prefix_install(mailpull_bin, tmp_path_factory):
    """An install with PREFIX in a temporary directory and no DESTDIR, so the
    units' ExecStart= names a binary that exists (verify checks it)."""
    prefix = tmp_path_factory.mktemp("prefix") / "usr"
    make(mailpull_bin, "install", f"PREFIX={prefix}")
    return prefix


def installed_unit(prefix, unit):
    kind = "user" if unit in USER_UNITS else "system"
    return prefix / "lib/systemd" / kind / unit


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_verify(systemd_analyze, prefix_install, tmp_path, unit):
    path = installed_unit(prefix_install, unit)
    r, cmd = analyze(tmp_path, path, "--man=no", "verify", user=unit in USER_UNITS)
    out = (r.stdout + r.stderr).strip()
    report(f"{' '.join(cmd)}: exit {r.returncode}, {'no output' if not out else out}")
    assert r.returncode == 0 and out == "", f"{' '.join(cmd)}\n{out}"


def test_verify_template_instance(systemd_analyze, prefix_install, tmp_path):
    # An instance is loaded from the template next to it. (Not "nobody":
    # verify rightly warns about running as that user.)
    path = installed_unit(prefix_install, "mailpull@.service").with_name("mailpull@alice.service")
    r, cmd = analyze(tmp_path, path, "--man=no", "verify", user=False)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and out == "", f"{' '.join(cmd)}\n{out}"


def test_verify_notices_a_broken_unit(systemd_analyze, tmp_path):
    """The verifier really looks: a bad key and a missing binary are reported
    (so the empty output above means something)."""
    bad = tmp_path / "broken.service"
    bad.write_text(f"[Service]\nExecStart={tmp_path}/nonexistent --daemon\nProtectSystem=strickt\n")
    r, _ = analyze(tmp_path, bad, "--man=no", "verify", user=True)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "strickt" in out and "not executable" in out


def exposure(tmp_path, path, user):
    r, cmd = analyze(tmp_path, path, "security", "--offline=true", "--no-pager", user=user)
    if r.returncode != 0 and "offline" in (r.stderr or ""):
        pytest.skip(f"systemd-analyze security --offline is not supported: {r.stderr.strip()}")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", r.stdout)
    assert m, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return float(m.group(1)), m.group(2)


@pytest.mark.parametrize("unit", ["mailpull.service", "mailpull-once.service", "mailpull@.service"])
def test_security_exposure(systemd_analyze, prefix_install, tmp_path, unit):
    user = unit in USER_UNITS
    level, word = exposure(tmp_path, installed_unit(prefix_install, unit), user)
    note = ""
    if user:
        # The offline analysis knows no user manager: it scores a user unit
        # as if it ran as root with every capability, which it does not.
        note = " (scored as a root service; a user unit has no capabilities)"
    report(f"systemd-analyze{' --user' if user else ''} security {unit}: {level} {word}{note}")
    if not user:
        assert level <= TEMPLATE_MAX_EXPOSURE, f"{unit}: exposure {level} {word}"
