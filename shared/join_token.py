"""The join token `greenctl up --lan` prints and `greenctl worker --join` takes: pure
encoding, standard library only.

`gct1.` + base64url (no padding) of compact JSON:
  {"b": [host, port, user, password],          the broker (TLS)
   "d": [host, port, dbname, user, password],  Postgres (TLS, the worker role)
   "f": "sha256:<hex>",                         the CA certificate's fingerprint
   "ca": "<base64 of the CA certificate DER>"}
As with kubeadm's `--discovery-token-ca-cert-hash`, the worker trusts only servers whose
certificate chains to that CA, and checks the CA it was given has that fingerprint.
The token is a secret: it carries the worker role's and the broker user's passwords.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

PREFIX = "gct1."


class TokenError(ValueError):
    """A token that cannot be used; the message is one line naming the fix."""


@dataclass(frozen=True)
class JoinToken:
    broker_host: str
    broker_port: int
    broker_user: str
    broker_password: str
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    db_password: str
    ca_fingerprint: str
    ca_der: bytes

    @property
    def ca_pem(self) -> str:
        body = base64.b64encode(self.ca_der).decode()
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def fingerprint(der: bytes) -> str:
    """'sha256:<hex>' of a certificate's DER bytes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def der_of_pem(pem: str) -> bytes:
    """The DER bytes of the first certificate in a PEM text."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    if begin not in pem or end not in pem:
        raise TokenError("the CA file is not a PEM certificate")
    body = pem.split(begin, 1)[1].split(end, 1)[0]
    return base64.b64decode("".join(body.split()))


def encode(token: JoinToken) -> str:
    data = {"b": [token.broker_host, token.broker_port, token.broker_user, token.broker_password],
            "d": [token.db_host, token.db_port, token.db_name, token.db_user, token.db_password],
            "f": token.ca_fingerprint, "ca": base64.b64encode(token.ca_der).decode()}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


REFETCH = "copy it again from `greenctl join-token` on the server"


def decode(text: str) -> JoinToken:
    """The token's contents; TokenError (one line) for a bad prefix, a truncated or
    altered token, or a CA that does not match the fingerprint."""
    text = (text or "").strip()
    if not text.startswith(PREFIX):
        hint = "it is empty" if not text else f"it starts with {text[:5]!r}"
        raise TokenError(f"--join: not a greenctl join token ({hint}, expected {PREFIX!r}): {REFETCH}")
    body = text[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw)
        b, d = data["b"], data["d"]
        token = JoinToken(str(b[0]), int(b[1]), str(b[2]), str(b[3]), str(d[0]), int(d[1]), str(d[2]),
                          str(d[3]), str(d[4]), str(data["f"]), base64.b64decode(data["ca"], validate=True))
    except (binascii.Error, ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
        raise TokenError(f"--join: the token is truncated or altered ({len(text)} characters): {REFETCH}") from None
    got = fingerprint(token.ca_der)
    if got != token.ca_fingerprint:
        raise TokenError(f"--join: the CA certificate in the token has fingerprint {got[:19]}…, not the "
                         f"token's {token.ca_fingerprint[:19]}…: the token was altered; {REFETCH}")
    return token

