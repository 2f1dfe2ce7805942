"""The TLS contexts a frontend and a backend build from their settings (no sockets).

Certificates come from trustme; each test only asks the contexts what they
hold: versions, which certificate a server name gets, which one a data
connection keeps, and whether a session gets a context of its own.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from ftplb.config.backends import Backend
from ftplb.config.frontends import Frontend
from ftplb.runtime.tls import FrontendTls, TlsPolicy, TlsSetupError, backend_tls, frontend_tls


def _pem(work: Path, name: str) -> str:
    path = work / f"{name}.pem"
    trustme.CA().issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


def _frontend(work: Path, **settings: object) -> Frontend:
    return Frontend.model_validate(
        {
            "name": "f",
            "bind": ["127.0.0.1:2121"],
            "backend": "b",
            "tls": "explicit",
            "tls_certificate": _pem(work, "default.test"),
            **settings,
        }
    )


def _with_sni(work: Path, **settings: object) -> FrontendTls:
    sni = [
        {"names": ["ftp.one.test"], "certificate": _pem(work, "ftp.one.test")},
        {"names": ["*.two.test", "two.test"], "certificate": _pem(work, "ftp.two.test")},
    ]
    tls = frontend_tls(_frontend(work, tls_sni=sni, **settings))
    assert tls is not None
    return tls


def test_versions_are_applied_to_frontend_and_backend_contexts(tmp_path: Path) -> None:
    tls = frontend_tls(_frontend(tmp_path, tls_min_version="1.3"))
    assert tls is not None
    assert tls.context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert tls.context.maximum_version is ssl.TLSVersion.TLSv1_3
    backend = Backend.model_validate(
        {
            "name": "b",
            "tls": "explicit",
            "tls_max_version": "1.2",
            "tls_ciphers": "ECDHE+AESGCM",
            "servers": [{"name": "s", "address": "127.0.0.11:21"}],
        }
    )
    to_servers = backend_tls(backend)
    assert to_servers is not None
    assert to_servers.context.maximum_version is ssl.TLSVersion.TLSv1_2
    tls12 = [c for c in to_servers.context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all("GCM" in c["name"] and "ECDHE" in c["name"] for c in tls12), tls12


def test_a_cipher_string_openssl_refuses_at_start_names_its_key() -> None:
    # The loader refuses it first; an OpenSSL that changed since is still named.
    with pytest.raises(TlsSetupError) as raised:
        TlsPolicy(ciphers="NO-SUCH-CIPHER").apply(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert raised.value.key == "tls_ciphers"


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("ftp.one.test", "ftp.one.test"),
        ("FTP.One.Test.", "ftp.one.test"),
        ("a.two.test", "ftp.two.test"),
        ("two.test", "ftp.two.test"),
        ("a.b.two.test", None),
        ("one.test", None),
        (None, None),
    ],
)
def test_sni_names_pick_certificates(
    tmp_path: Path, server_name: str | None, expected: str | None
) -> None:
    tls = _with_sni(tmp_path)
    chosen = tls.certificate_for(server_name)
    if expected is None:
        assert chosen is None
    else:
        assert chosen is not None
        assert chosen is tls.certificate_for(expected)
        assert chosen.sni_callback is None


def test_a_data_connection_keeps_its_control_connections_certificate(tmp_path: Path) -> None:
    tls = _with_sni(tmp_path)
    one = tls.certificate_for("ftp.one.test")
    assert tls.pinned(one) is one
    # The control connection stayed in the context it started in: the default
    # certificate, which has no SNI callback of its own to switch it again.
    default = tls.pinned(tls.context)
    assert default is not None and default is not tls.context
    assert default.sni_callback is None
    assert tls.context.sni_callback is not None
    # Without SNI certificates there is nothing to pin.
    plain = frontend_tls(_frontend(tmp_path))
    assert plain is not None and plain.pinned(plain.context) is None


def test_required_reuse_gives_each_session_a_context_of_its_own(tmp_path: Path) -> None:
    optional = frontend_tls(_frontend(tmp_path))
    assert optional is not None and not optional.reuse_required
    assert optional.session_context() is optional.context
    assert optional.context.num_tickets == 0
    tls = _with_sni(tmp_path, tls_session_reuse="required")
    first, second = tls.session_context(), tls.session_context()
    assert first is not second and tls.context not in (first, second)
    # A TLS 1.3 ticket for the control connection, then none for its data connections.
    assert first.num_tickets == 1
    FrontendTls.control_started(first)
    assert first.num_tickets == 0 and second.num_tickets == 1
    # Its certificates by SNI all the same.
    assert first.sni_callback is not None
