"""The TLS policy keys of frontends and backends: versions, ciphers, session reuse, SNI."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftplb.config.load import load_config, load_config_text
from tests.unit.test_config import (
    _PEM_CERT,
    _PEM_KEY,
    MINIMAL,
    _tls_backend,
    _tls_frontend,
    problems,
    write,
)


def _frontend_tls(tmp_path: Path, lines: str, mode: str = "explicit") -> str:
    (tmp_path / "lb.pem").write_text(_PEM_KEY + _PEM_CERT)
    return _tls_frontend(MINIMAL, f'tls = "{mode}"\ntls_certificate = "lb.pem"\n{lines}')


def test_the_defaults_are_tls_1_2_to_1_3_with_optional_reuse() -> None:
    config = load_config_text(MINIMAL)
    frontend, backend = config.frontends[0], config.backends[0]
    assert (frontend.tls_min_version, frontend.tls_max_version) == ("1.2", "1.3")
    assert (frontend.tls_ciphers, frontend.tls_session_reuse, frontend.tls_sni) == (
        None,
        "optional",
        [],
    )
    assert (backend.tls_min_version, backend.tls_max_version, backend.tls_ciphers) == (
        "1.2",
        "1.3",
        None,
    )


def test_a_full_policy_loads(tmp_path: Path) -> None:
    (tmp_path / "one.pem").write_text(_PEM_KEY + _PEM_CERT)
    (tmp_path / "two.crt").write_text(_PEM_CERT)
    (tmp_path / "two.key").write_text(_PEM_KEY)
    lines = (
        'tls_min_version = "1.3"\ntls_ciphers = "ECDHE+AESGCM"\ntls_session_reuse = "required"\n'
        'tls_sni = [{ names = ["FTP.One.Test"], certificate = "one.pem" },\n'
        '  { names = ["*.two.test"], certificate = "two.crt", key = "two.key" }]'
    )
    text = _tls_backend(_frontend_tls(tmp_path, lines), 'tls = "explicit"\ntls_max_version = "1.2"')
    config = load_config(write(tmp_path, text))
    frontend = config.frontends[0]
    assert frontend.tls_min_version == "1.3"
    assert frontend.tls_session_reuse == "required"
    assert [entry.names for entry in frontend.tls_sni] == [["ftp.one.test"], ["*.two.test"]]
    # Relative paths are taken from the file's folder, as for tls_certificate.
    assert frontend.tls_sni[1].key == str(tmp_path / "two.key")
    assert config.backends[0].tls_max_version == "1.2"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"1.1"', "TLS 1.1 is not offered: RFC 8996 retired TLS 1.0 and 1.1"),
        ('"1.0"', "TLS 1.0 is not offered"),
        ('"TLSv1.3"', 'invalid TLS version "TLSv1.3": expected "1.2" or "1.3"'),
        ("1.3", 'invalid TLS version 1.3: expected "1.2" or "1.3"'),
    ],
)
def test_bad_versions_name_their_line_and_key(tmp_path: Path, value: str, message: str) -> None:
    name, found = problems(tmp_path, _frontend_tls(tmp_path, f"tls_min_version = {value}"))
    assert len(found) == 1, found
    assert found[0].startswith(f"{name}:7: frontends[0].tls_min_version: {message}"), found


def test_versions_out_of_order(tmp_path: Path) -> None:
    text = _tls_backend(
        _frontend_tls(tmp_path, 'tls_min_version = "1.3"\ntls_max_version = "1.2"'),
        'tls = "explicit"\ntls_min_version = "1.3"\ntls_max_version = "1.2"',
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:8: frontends[0].tls_max_version: "1.2" is below tls_min_version = "1.3": '
        "no TLS version is left",
        f'{name}:14: backends[0].tls_max_version: "1.2" is below tls_min_version = "1.3": '
        "no TLS version is left",
    ]


@pytest.mark.parametrize("ciphers", ["NO-SUCH-CIPHER", "", "!ALL", "TLS_AES_128_GCM_SHA256"])
def test_a_cipher_string_openssl_refuses(tmp_path: Path, ciphers: str) -> None:
    # The last one is a TLS 1.3 suite: tls_ciphers cannot set those.
    text = _tls_backend(MINIMAL, f'tls = "explicit"\ntls_ciphers = "{ciphers}"')
    name, found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(
        f'{name}:9: backends[0].tls_ciphers: invalid cipher string "{ciphers}": '
    ), found


def test_policy_keys_need_tls(tmp_path: Path) -> None:
    lines = 'tls_min_version = "1.3"\ntls_ciphers = "HIGH"\ntls_session_reuse = "required"'
    text = _tls_backend(_tls_frontend(MINIMAL, lines), 'tls_max_version = "1.2"')
    name, found = problems(tmp_path, text)
    without = 'has no effect without tls = "explicit" or "implicit"'
    assert found == [
        f"{name}:5: frontends[0].tls_min_version: {without}",
        f"{name}:6: frontends[0].tls_ciphers: {without}",
        f"{name}:7: frontends[0].tls_session_reuse: {without}",
        f"{name}:11: backends[0].tls_max_version: {without}",
    ]


def test_required_reuse_needs_explicit_tls(tmp_path: Path) -> None:
    text = _frontend_tls(tmp_path, 'tls_session_reuse = "required"', mode="implicit")
    name, found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(
        f'{name}:7: frontends[0].tls_session_reuse: needs tls = "explicit"'
    ), found


def test_bad_sni_names(tmp_path: Path) -> None:
    lines = (
        "tls_sni = [\n"
        '  { names = ["bad name", "*.*.test"], certificate = "lb.pem" },\n'
        '  { names = [], certificate = "lb.pem" },\n'
        "]"
    )
    name, found = problems(tmp_path, _frontend_tls(tmp_path, lines))
    expected = 'expected a DNS name such as "ftp.example.com", or "*.example.com"'
    assert found == [
        f'{name}:8: frontends[0].tls_sni[0].names[0]: invalid SNI name "bad name": {expected} '
        "for every name one label below it",
        f'{name}:8: frontends[0].tls_sni[0].names[1]: invalid SNI name "*.*.test": {expected} '
        "for every name one label below it",
        f"{name}:9: frontends[0].tls_sni[1].names: List should have at least 1 item after "
        "validation, not 0",
    ]


def test_sni_certificates_are_checked_like_the_default_one(tmp_path: Path) -> None:
    (tmp_path / "cert-only.pem").write_text(_PEM_CERT)
    lines = (
        "tls_sni = [\n"
        '  { names = ["a.test", "*.b.test"], certificate = "missing.pem" },\n'
        '  { names = ["A.test"], certificate = "cert-only.pem" },\n'
        "]"
    )
    name, found = problems(tmp_path, _frontend_tls(tmp_path, lines))
    missing, cert_only = tmp_path / "missing.pem", tmp_path / "cert-only.pem"
    assert found == [
        f"{name}:8: frontends[0].tls_sni[0].certificate: cannot read {missing}: "
        "No such file or directory",
        f'{name}:9: frontends[0].tls_sni[1].names: "a.test" is also a name of '
        "frontends[0].tls_sni[0]",
        f"{name}:9: frontends[0].tls_sni[1].certificate: {cert_only} holds no private key, "
        "and key is not set",
    ]
