#!/usr/bin/env python3
"""Independent implementation of the pod's HPKE and STREAM formats, on Python's `cryptography` package.

Run by protocol/tests/interop.rs:  interop.py <dir>
  reads  <dir>/rust.json   (what the Rust side sealed, and the keys to open it)
  writes <dir>/python.json (what this side sealed, for the Rust side to open)
Exits non-zero, with the reason on stderr, when anything Rust sealed does not open to the expected plaintext.
"""
import json
import os
import sys

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
CHUNK = 64 * 1024
TAG = 16


def stream_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def stream_seal(key: bytes, plaintext: bytes) -> bytes:
    aead = AESGCM(key)
    chunks = [plaintext[i:i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    return b"".join(
        aead.encrypt(stream_nonce(i, i == len(chunks) - 1), c, None) for i, c in enumerate(chunks)
    )


def stream_open(key: bytes, sealed: bytes) -> bytes:
    aead = AESGCM(key)
    size = CHUNK + TAG
    pieces = [sealed[i:i + size] for i in range(0, len(sealed), size)]
    if not pieces:
        raise ValueError("empty stream")
    if len(pieces) > 1 and len(pieces[-1]) == TAG:
        raise ValueError("empty last chunk after a full one")
    return b"".join(
        aead.decrypt(stream_nonce(i, i == len(pieces) - 1), p, None) for i, p in enumerate(pieces)
    )


def private_key(scalar_hex: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(scalar_hex, 16), ec.SECP256R1())


def public_key(point_hex: str) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(point_hex))


def main() -> int:
    work = sys.argv[1]
    with open(os.path.join(work, "rust.json")) as f:
        rust = json.load(f)

    for case in rust["hpke"]:
        got = SUITE.decrypt(bytes.fromhex(case["sealed"]), private_key(case["recipient_scalar"]),
                            info=bytes.fromhex(case["info"]))
        if got != bytes.fromhex(case["plaintext"]):
            print(f"HPKE case {case['name']}: wrong plaintext", file=sys.stderr)
            return 1
    for case in rust["stream"]:
        with open(os.path.join(work, case["sealed_file"]), "rb") as f:
            sealed = f.read()
        got = stream_open(bytes.fromhex(case["key"]), sealed)
        if got != bytes.fromhex(case["plaintext"]):
            print(f"STREAM case {case['name']}: wrong plaintext", file=sys.stderr)
            return 1

    out = {"hpke": [], "stream": []}
    for name, info, size in [("empty", b"", 0), ("file-key", b"secure-pod/v1 interop", 32), ("long", b"x", 5000)]:
        plaintext = os.urandom(size)
        sealed = SUITE.encrypt(plaintext, public_key(rust["python_recipient_point"]), info=info)
        out["hpke"].append({"name": name, "info": info.hex(), "plaintext": plaintext.hex(), "sealed": sealed.hex()})
    for name, size in [("empty", 0), ("one-chunk", 1000), ("exact", CHUNK), ("three", 2 * CHUNK + 77)]:
        key = AESGCM.generate_key(256)
        plaintext = os.urandom(size)
        file = f"python-{name}.bin"
        with open(os.path.join(work, file), "wb") as f:
            f.write(stream_seal(key, plaintext))
        out["stream"].append({"name": name, "key": key.hex(), "plaintext": plaintext.hex(), "sealed_file": file})
    with open(os.path.join(work, "python.json"), "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
