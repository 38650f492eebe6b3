"""Text helpers the test IMAP clients and servers share: modified UTF-7
folder names (RFC 3501 section 5.1.3) and CRLF line ends."""

import base64
import re


def mutf7(name):
    """name in modified UTF-7."""
    out, run = [], []

    def flush():
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).decode()
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def from_mutf7(name):
    """A modified UTF-7 name back in UTF-8."""
    def dec(m):
        s = m.group(1)
        if not s:
            return "&"
        s = s.replace(",", "/")
        return base64.b64decode(s + "=" * (-len(s) % 4)).decode("utf-16-be")
    return re.sub(r"&([^-]*)-", dec, name)


def crlf(data):
    """data with every line end CRLF (bare LF turned into CRLF)."""
    return re.sub(rb"\r?\n", b"\r\n", data)
