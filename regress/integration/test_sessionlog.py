"""One `session start` and one `session end` log line per session, with the
client address, policy, backend, bytes in/out, duration and reason."""

import re
import time

import pytest

from rawimap import RawIMAP

pytestmark = pytest.mark.gateway

# Field names are checked loosely (key=value with a few spellings), the
# presence of every item strictly.
BYTES_IN = re.compile(r"(?<![\w-])(?:bytes_in|bytes-in|in_bytes|in|rx)=(\d+)")
BYTES_OUT = re.compile(
    r"(?<![\w-])(?:bytes_out|bytes-out|out_bytes|out|tx)=(\d+)")


def _session_lines(text, kind, lport):
    rx = re.compile(r"\bsession %s\b.*\bclient=\[?127\.0\.0\.1\]?:%d\b"
                    % (kind, lport))
    return [ln for ln in text.splitlines() if rx.search(ln)]


def test_session_start_and_end_lines(gw, dovecot):
    off = gw.log_offset()
    c = RawIMAP(gw.port())
    lport = c.local_port
    c.login("logger", "secret")
    c.command("SELECT INBOX")
    c.command("NOOP")
    st, _ = c.command("LOGOUT")
    assert b"OK" in st
    c.settimeout(10)
    assert c.read_to_eof() == b""
    c.close()

    end = time.time() + 10
    while time.time() < end:
        if _session_lines(gw.log_since(off), "end", lport):
            break
        time.sleep(0.05)
    time.sleep(0.3)             # a duplicate line would come now
    text = gw.log_since(off)
    starts = _session_lines(text, "start", lport)
    ends = _session_lines(text, "end", lport)
    assert len(starts) == 1, text
    assert len(ends) == 1, text
    s, e = starts[0], ends[0]
    assert "policy=imap-in" in s, s
    assert "policy=imap-in" in e, e
    assert re.search(r"\b(dovecot|127\.0\.0\.1:%d)\b" % dovecot.port, e), e
    bi, bo = BYTES_IN.search(e), BYTES_OUT.search(e)
    assert bi and bo, e
    # client-side byte counts, exactly
    assert int(bi.group(1)) == c.nsent, (c.nsent, e)
    assert int(bo.group(1)) == c.nrecv, (c.nrecv, e)
    assert re.search(r"\bduration=\S+", e), e
    assert re.search(r"\breason=\S+", e), e
