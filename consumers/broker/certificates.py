"""A throw-away TLS CA and broker certificate (openssl) for the local SASL_SSL listener."""

from __future__ import annotations

import shutil
from pathlib import Path

from consumers.broker.errors import BrokerError, run_checked


def make_test_certificates(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Create a throw-away CA and a server certificate for 127.0.0.1 / ``hostname``.

    Returns ``(ca_pem, server_keystore_pem)``; the keystore holds the PKCS#8 key followed by
    the certificate chain, which Kafka reads with ``ssl.keystore.type=PEM``. The extensions
    (CA basic constraints, key usage, SAN, AKI) satisfy strict X.509 verification as done by
    Python >= 3.13.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrokerError("openssl is not on PATH; it is needed for the SASL_SSL listener")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:{hostname}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run_checked(
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_pem),
         "-days", "30", "-subj", "/CN=streamcover local test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"],
        "openssl: creating the test CA",
    )
    run_checked(
        [openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hostname}"],
        "openssl: creating the broker key",
    )
    run_checked(
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(crt), "-days", "30", "-sha256", "-extfile", str(ext)],
        "openssl: signing the broker certificate",
    )
    keystore = directory / "server-keystore.pem"
    keystore.write_text(key.read_text() + crt.read_text() + ca_pem.read_text())
    keystore.chmod(0o600)
    return ca_pem, keystore
