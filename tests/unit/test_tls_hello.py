"""Reading what a TLS client offered from its first bytes: real ClientHellos made by the local OpenSSL, and the
inputs a confused client sends instead (plain SMTP, an SSLv2-format hello, a cut-off record)."""

from __future__ import annotations

import ssl
import warnings

from gateway.intake.smtp_tls_hello import read_hello


def client_hello(context: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="scan.contoso.com")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_a_modern_client_offers_tls_1_3_and_forward_secret_ciphers() -> None:
    hello = read_hello(client_hello(ssl.create_default_context()))
    assert hello.versions[0] == "TLSv1.3" and "TLSv1.2" in hello.versions
    assert "TLS_AES_128_GCM_SHA256" in hello.ciphers and hello.server_name == "scan.contoso.com"
    assert not hello.old


def test_a_tls_1_0_client_is_old() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("AES128-SHA:@SECLEVEL=0")
    hello = read_hello(client_hello(context))
    assert hello.versions == ("TLSv1",) and hello.ciphers == ("AES128-SHA",) and hello.old
    assert hello.fields() == "offered=TLSv1 ciphers=AES128-SHA sni=scan.contoso.com"


def test_what_is_not_a_client_hello_is_named() -> None:
    assert "plain text" in read_hello(b"EHLO scanner\r\n").note
    assert read_hello(b"").note == "nothing"
    assert read_hello(b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10").versions == ("TLSv1",)
    cut = client_hello(ssl.create_default_context())[:60]
    assert read_hello(cut).fields().startswith("offered=")  # never raises on a short read
    assert read_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00").note == "not a ClientHello"
