"""The content pipeline in the offline mode: every corpus entry (corpus.py)
through `imapgwd -f CONFIG -a ACTION -S FILE --json -o OUT`.

For each entry: the exit code (0 clean, 1 policy acted, 2 scan error, 3
usage), the JSON report (verdict, action, the stages of the findings and
some of their keys, findings in pipeline order), the rewritten message
(-o) checked with Python's email package against the entry's expected
structure, the same rewrite twice gives the same bytes, and `-k append`
rejects what a fetch rewrites.  The runs go in parallel, once, in a
module fixture; the tests only look at their results.
"""

import os
import subprocess

import pytest

import corpus
from gateway import IMAPGWD

C = corpus.shared()
NAMES = [e.name for e in C.entries]
SLOW_LIMIT = 60.0       # seconds one judgement may take, the largest too
# -k append of one entry of each kind (test_pipeline_gateway.py uploads
# them all through the gateway)
APPEND_SAMPLE = ["eicar-body", "eicar-base64", "eicar-rfc822-body",
                 "testfile-clam-exe", "pdf-as-bin", "pe-as-text",
                 "name-rfc2231", "exe-in-zip", "gtube", "header-strip",
                 "apt-high", "apt-medium", "apt-low", "zip-encrypted",
                 "zip-bomb", "nested-rfc822-200-eicar", "clean-plain",
                 "clean-image", "combo"]


@pytest.fixture(scope="module")
def conf():
    if not os.path.exists(IMAPGWD):
        pytest.fail("%s does not exist: run make first" % IMAPGWD)
    return corpus.offline_config(C)


@pytest.fixture(scope="module")
def runs(conf):
    """{(name, kind, n): corpus.Offline}: every entry fetched, twice if
    it may be rewritten, and APPEND_SAMPLE appended; the heavy one (10,000
    parts) only fetched, once."""
    jobs = []
    for e in C.entries:
        jobs.append((e, "fetch", "1"))
        if e.heavy:
            continue
        if not all(a["verdict"] == "clean" for a in e.alternatives()):
            jobs.append((e, "fetch", "2"))
        if e.name in APPEND_SAMPLE:
            jobs.append((e, "append", "1"))
    return corpus.offline_runs(C, jobs)


def _report(r):
    assert isinstance(r.rc, int) and r.rc >= 0, \
        "imapgwd -S crashed or hung: " + r.why()
    assert r.rc != 3, "usage error: the offline mode (-S) is missing or " \
        "refuses these arguments: " + r.why()
    assert r.report is not None, "no JSON report on stdout: " + r.why()
    return r.report


@pytest.mark.parametrize("name", NAMES)
def test_report(runs, name):
    """Verdict, action and findings of the report; the exit code."""
    e = C.get(name)
    r = runs[name, "fetch", "1"]
    rep = _report(r)
    probs = corpus.check_report(e, rep)
    assert not probs, "%s (%s): %s\nreport: %s" % (
        name, e.note or e.action, "; ".join(probs), rep)
    assert r.rc in corpus.expected_rc(e, rep), \
        "exit %s for a %s verdict: %s" % (r.rc, rep.get("verdict"), r.why())
    if "size" in rep:
        assert rep["size"] == len(e.data), rep


@pytest.mark.parametrize("name", NAMES)
def test_rewrite(runs, name):
    """The message -o writes: the original (or nothing) when clean, else
    the expected structure."""
    e = C.get(name)
    r = runs[name, "fetch", "1"]
    rep = _report(r)
    if rep.get("verdict") == "clean":
        assert r.out in (None, b"", e.data), \
            "clean verdict but -o wrote other bytes: %r" % r.out[:300]
        assert corpus.may_be_clean(e), \
            "%s was not rewritten (verdict clean): %s" % (name, rep)
        return
    assert r.out, "verdict %r but -o wrote no message: %s" % (
        rep.get("verdict"), r.why())
    probs = corpus.check_output(e, e.data, r.out)
    assert not probs, "%s: %s\n--- output ---\n%s" % (
        name, "\n".join(probs), r.out[:3000].decode("utf-8", "replace"))


CHANGING = [e.name for e in C.entries
            if not e.heavy and not all(a["verdict"] == "clean"
                                       for a in e.alternatives())]


@pytest.mark.parametrize("name", CHANGING)
def test_deterministic(runs, name):
    """Same message, same policy: same bytes (and the same report but
    for its time)."""
    a, b = runs[name, "fetch", "1"], runs[name, "fetch", "2"]
    ra, rb = _report(a), _report(b)
    assert a.rc == b.rc, (a.why(), b.why())
    assert a.out == b.out, "%s: two runs wrote different messages" % name
    # what may differ: the time taken, and where -o wrote
    ra = dict(ra, time_ms=None, output=None)
    rb = dict(rb, time_ms=None, output=None)
    assert ra == rb, "%s: two runs gave different reports:\n%s\n%s" % (
        name, ra, rb)


@pytest.mark.parametrize("name", APPEND_SAMPLE)
def test_append(runs, name):
    """-k append: an upload is rejected where a fetch is rewritten (spam
    is not judged on upload), and never rewritten."""
    e = C.get(name)
    r = runs[name, "append", "1"]
    rep = _report(r)
    probs = corpus.check_report(e, rep, kind="append")
    assert not probs, "%s (append): %s\nreport: %s" % (
        name, "; ".join(probs), rep)
    assert r.rc in corpus.expected_rc(e, rep, "append"), r.why()
    assert rep.get("verdict") != "changed", "an upload was rewritten"
    assert r.out in (None, b"", e.data), \
        "-o of an upload holds a rewritten message: %r" % r.out[:300]
    fetch = runs[name, "fetch", "1"].report
    if fetch and fetch.get("verdict") == "changed" and \
            corpus.append_outcome(e) != "clean":
        assert rep.get("verdict") == "reject", (fetch, rep)


@pytest.mark.parametrize("name", [e.name for e in C.entries if e.slow])
def test_bounded_time(runs, name):
    """The large, deep and wide messages are judged, without crash, in
    bounded time (every run of them)."""
    for key in ((name, "fetch", "1"), (name, "fetch", "2"),
                (name, "append", "1")):
        r = runs.get(key)
        if r is None:
            continue
        assert isinstance(r.rc, int) and r.rc >= 0, r.why()
        assert r.secs < SLOW_LIMIT, "%s took %.1fs: %s" % (key, r.secs,
                                                            r.why())


def test_usage_errors(conf):
    """Exit 3 for what the command line gets wrong."""
    src = os.path.join(C.path, "clean-plain.eml")
    for args in (["-a", "no-such-action", "-S", src, "--json"],
                 ["-a", corpus.ACT_ALL, "-S", src, "--json", "-k", "bogus"]):
        r = subprocess.run([IMAPGWD, "-f", conf] + args,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        assert r.returncode == 3, (args, r.returncode, r.stdout[:300],
                                   r.stderr[-600:])
        assert r.stderr.strip(), "no message saying what is wrong: %s" % args
