"""The manual pages render without a warning from groff or mandoc."""

import glob
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

PAGES = sorted(glob.glob(os.path.join(ROOT, "man", "*.[1-8]")))

CHECKERS = {
    "groff": ["groff", "-ww", "-man", "-z"],
    "mandoc": ["mandoc", "-T", "lint", "-W", "warning"],
}


def test_pages_exist():
    names = {os.path.basename(p) for p in PAGES}
    assert {"mailpull.1", "mailpull.conf.5"} <= names


@pytest.mark.parametrize("checker", sorted(CHECKERS))
@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_page_renders_without_warnings(checker, page):
    if not shutil.which(checker):
        pytest.skip(f"{checker} is not installed")
    cmd = CHECKERS[checker] + [page]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"})
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and out == "", f"{' '.join(cmd)}: exit {r.returncode}\n{out}"
