"""TLS with client certificates on top of the HMAC handshake, on uvloop and asyncio."""
from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

from core_ext.codes import Code
from switch import config as config_module
from switch.client import AsyncClient, SwitchError
from switch.server import Server, tls_context
from test_server_helpers import LOOP_KINDS, WALLET_ID, WALLET_SECRET, base_document, run_on
from test_server_wire import EngineDouble

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(ca_key), "-out", str(ca_cert))
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        key, request, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request))
        extfile = directory / f"{name}.ext"
        extfile.write_text(extension + "\n")
        openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
                "-days", "2", "-extfile", str(extfile), "-out", str(cert))
    return directory


def client_context(pki, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_client_with_a_certificate_authenticates_and_one_without_is_refused(loop_kind, pki):
    config = config_module.parse(base_document())

    async def body():
        server_context = tls_context(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
        server = Server(EngineDouble(), config, ssl_context=server_context)
        _, port = await server.start("127.0.0.1", 0)
        try:
            client = AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET, ssl=client_context(pki, True))
            await client.connect()
            assert await client.request_nowait("ping", None) == (Code.OK, WALLET_ID)
            await client.close()
            anonymous = AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET, ssl=client_context(pki, False),
                                    reconnect_attempts=0)
            # TLS 1.3 reports a missing client certificate after the client's side of the
            # TLS handshake: the server drops the connection before sending its challenge.
            with pytest.raises((ssl.SSLError, SwitchError, ConnectionResetError)) as error:
                await anonymous.connect()
            if isinstance(error.value, SwitchError):
                assert error.value.code == Code.CONNECTION_LOST
            assert anonymous.server_name is None
        finally:
            await server.shutdown(timeout_seconds=5)

    run_on(loop_kind, body)
