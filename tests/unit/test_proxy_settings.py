"""A frontend's accept_proxy and a backend's send_proxy as the runtime holds them."""

from __future__ import annotations

import pytest

from ftplb.proto.addresses import HostPort
from ftplb.proto.proxy_header import TlsFacts, build_v1, build_v2
from ftplb.runtime.proxy_protocol import HEADER_TIMEOUT_CAP, ProxyIntake, ProxyOutlet

CLIENT = HostPort("192.0.2.7", 4000)
FRONTEND = HostPort("198.51.100.1", 21)


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("10.1.2.3", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("2001:db8::42", True),
        ("2001:db9::1", False),
    ],
)
def test_intake_trusts_its_networks_only(host: str, trusted: bool) -> None:
    intake = ProxyIntake.of(["10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32"], 300.0)
    assert intake.trusts(host) is trusted


def test_intake_waits_for_the_client_timeout_but_never_long() -> None:
    assert ProxyIntake.of(["10.0.0.0/8"], 3.0).timeout == 3.0
    assert ProxyIntake.of(["10.0.0.0/8"], 300.0).timeout == HEADER_TIMEOUT_CAP


def test_outlet_of_each_setting() -> None:
    assert ProxyOutlet.of("none", False) is None
    assert ProxyOutlet.of("v1", True) == ProxyOutlet("v1", on_data=True)
    assert ProxyOutlet.of("v2", False) == ProxyOutlet("v2", on_data=False)


def test_outlet_headers() -> None:
    tls = TlsFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    # Version 1 has no room for TLS facts.
    assert ProxyOutlet("v1", False).header(CLIENT, FRONTEND, tls) == build_v1(CLIENT, FRONTEND)
    assert ProxyOutlet("v2", False).header(CLIENT, FRONTEND, tls) == build_v2(CLIENT, FRONTEND, tls)
