"""The client proxy with TLS inspection (policy `to: original-destination`
with a Proxy Authority), in a network namespace the test creates, with
loopback addresses only: a Dovecot on 127.0.0.2:993, an nft redirect of
root's connections to it, the gateway's own connection exempted by its
user.  The client connecting to 127.0.0.2 ends up at the gateway, sees a
certificate for the server's names signed by the test Proxy Authority,
and gets scanned mail.  The scenario runs in proxy_scenario.py under
`ip netns exec`.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gateway

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def netns():
    name = "imapgw-proxy-%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if r.returncode != 0:
        pytest.fail("cannot create a network namespace: %s" %
                    r.stderr.decode(errors="replace"))
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def scenario(netns, *args):
    r = subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/python3",
                        os.path.join(HERE, "proxy_scenario.py")] +
                       list(args), capture_output=True, timeout=120)
    out = r.stdout.decode(errors="replace").strip().splitlines()
    assert r.returncode == 0 and out, r.stderr.decode(errors="replace")
    res = json.loads(out[-1])
    assert "error" not in res, (res.get("error"), res.get("log_tail"))
    return res


def test_transparent_client_proxy(netns):
    res = scenario(netns)
    # the certificate the client saw: the Proxy Authority's, for the
    # real server's names
    assert res["issuer"].get("commonName") == \
        "imapgw test Proxy Authority", res
    assert ("DNS", "mail.test") in [tuple(x) for x in res["san"]], res
    assert ("IP Address", "127.0.0.2") in [tuple(x) for x in res["san"]], res
    assert res["greeting"].startswith("* OK"), res
    assert "a OK" in res["login"], res
    # scanned like the server proxy: IMAP-Client.Standard locks the
    # infected attachment
    assert res["orig_has_eicar"], res
    assert res["fetch_ok"] and not res["fetch_has_eicar"], res
    assert res["fetch_has_notice"], res
    # the gateway went to the real server, verified it, and told us so
    assert res["log_backend"], res
    assert res["log_server_tls"] and res["log_client_tls"], res
    # no SNI: verified by the address, which the certificate has
    assert res.get("nosni_greeting", "").startswith("* OK"), res
    # not TLS: ended before the real server is met
    assert res["log_not_hello"], res
    # a ClientHello that stalls: ended after the connect timeout (10 s),
    # with nothing answered (closed, or reset: its bytes were not read)
    assert res["stalled_answer"] in (
        "", "ConnectionResetError(104, 'Connection reset by peer')"), res
    assert 8 <= res["stalled_secs"] <= 25, res
    assert res["log_no_hello"], res


def test_client_proxy_verifies_by_sni(netns):
    """A real server whose certificate has only its DNS name (as most
    have): the gateway reads the name the client asks for from its
    ClientHello (SNI), meets the server under it and verifies it, and
    the client gets a certificate for that name.  A client that names no
    server gets nothing: the address alone cannot verify that server."""
    res = scenario(netns, "DNS:mail.test")
    assert res["issuer"].get("commonName") == \
        "imapgw test Proxy Authority", res
    assert [tuple(x) for x in res["san"]] == [("DNS", "mail.test")], res
    assert res["greeting"].startswith("* OK"), res
    assert "a OK" in res["login"], res
    assert res["fetch_ok"] and not res["fetch_has_eicar"], res
    assert "nosni_greeting" not in res or \
        not res["nosni_greeting"].startswith("* OK"), res
    assert res["log_verify_failed"], res
