#!/usr/bin/env python3
"""An independent implementation of docs/SPEC.md on Python's `cryptography` package (48+).

    spec_vectors.py <vectors dir> <output dir>

Checks every vector in <vectors dir>/spec-vectors.json (opens what Rust sealed, verifies what Rust signed,
recomputes every id and hash), then writes <output dir>/python-vectors.json with a document, a user, a membership
log, a signed request and an audit chain made here, for the Rust side to accept. Exits non-zero with the reason on
stderr at the first disagreement. Written from the spec, not from the Rust code.
"""
import json
import os
import sys
import hashlib

from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
CHUNK, TAG = 64 * 1024, 16


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


# ---- CBOR, the subset the spec uses (deterministic encoding: shortest heads, definite lengths) ----------------

def cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError("integer too large")


def cbor(v):
    if v is None:
        return b"\xf6"
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return cbor_head(0, v) if v >= 0 else cbor_head(1, -1 - v)
    if isinstance(v, bytes):
        return cbor_head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return cbor_head(3, len(b)) + b
    if isinstance(v, list):
        return cbor_head(4, len(v)) + b"".join(cbor(x) for x in v)
    raise TypeError(type(v))


def uncbor(b):
    def item(i):
        ib = b[i]
        major, info = ib >> 5, ib & 31
        i += 1
        if info < 24:
            n = info
        elif info <= 27:
            size = 1 << (info - 24)
            n = int.from_bytes(b[i:i + size], "big")
            i += size
        elif major == 7 and info == 22:
            return None, i
        else:
            raise Fail("unsupported CBOR")
        if major == 0:
            return n, i
        if major == 1:
            return -1 - n, i
        if major == 2:
            check(i + n <= len(b), "CBOR byte string runs past the end")
            return b[i:i + n], i + n
        if major == 3:
            return b[i:i + n].decode(), i + n
        if major == 4:
            out = []
            for _ in range(n):
                x, i = item(i)
                out.append(x)
            return out, i
        if major == 7 and info == 22:
            return None, i
        raise Fail("unsupported CBOR major type %d" % major)

    v, end = item(0)
    check(end == len(b), "trailing bytes after CBOR item")
    return v


# ---- Primitives --------------------------------------------------------------------------------------------

def labeled_hash(label, data):
    return hashlib.sha256(b"secure-pod/v1/" + label.encode() + b"\0" + data).digest()


def sign(key, context, message):
    der = key.sign(b"secure-pod/v1/" + context.encode() + b"\0" + message, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(spki, context, message, sig):
    check(len(sig) == 64, "signature length")
    key = serialization.load_der_public_key(spki)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, b"secure-pod/v1/" + context.encode() + b"\0" + message, ec.ECDSA(hashes.SHA256()))


def spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def p256_private(scalar_hex):
    return ec.derive_private_key(int(scalar_hex, 16), ec.SECP256R1())


def stream_nonce(i, last):
    return i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def stream_seal(key, plaintext):
    aead = AESGCM(key)
    chunks = [plaintext[i:i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    return b"".join(aead.encrypt(stream_nonce(i, i == len(chunks) - 1), c, None) for i, c in enumerate(chunks))


def stream_open(key, sealed):
    aead = AESGCM(key)
    pieces = [sealed[i:i + CHUNK + TAG] for i in range(0, len(sealed), CHUNK + TAG)]
    check(pieces, "empty stream")
    return b"".join(aead.decrypt(stream_nonce(i, i == len(pieces) - 1), p, None) for i, p in enumerate(pieces))


# ---- Documents ---------------------------------------------------------------------------------------------

def payload_key(header_bytes, file_key):
    kind, room, doc = uncbor(header_bytes)[:3]
    salt = labeled_hash("payload", cbor([kind, room, doc]))
    return HKDF(hashes.SHA256(), 32, salt, b"secure-pod/v1/payload").derive(file_key)


def open_document(document, hpke_key=None, rsa_key=None):
    check(document[:4] == b"SPD1", "magic")
    n = int.from_bytes(document[4:8], "big")
    header_bytes = document[8:8 + n]
    kind, room, doc, recipient, wrap_alg, wrapped = uncbor(header_bytes)
    info = labeled_hash("wrap", cbor([kind, room, doc, recipient, wrap_alg]))
    if wrap_alg == 2:
        check(hashlib.sha256(spki(hpke_key.public_key())).digest() == recipient, "recipient fingerprint")
        file_key = SUITE.decrypt(wrapped, hpke_key, info=info)
    else:
        file_key = rsa_key.decrypt(wrapped, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), info))
    return (kind, room, doc), stream_open(payload_key(header_bytes, file_key), document[8 + n:])


def seal_document(kind, room, doc, pod_public, plaintext):
    recipient = hashlib.sha256(spki(pod_public)).digest()
    info = labeled_hash("wrap", cbor([kind, room, doc, recipient, 2]))
    file_key = os.urandom(32)
    header = cbor([kind, room, doc, recipient, 2, SUITE.encrypt(file_key, pod_public, info=info)])
    return b"SPD1" + len(header).to_bytes(4, "big") + header + stream_seal(payload_key(header, file_key), plaintext)


def bundle_keys(bundle_bytes):
    version, alg, enc, sig = uncbor(bundle_bytes)
    check(version == 1 and alg in (1, 2), "bundle version/algorithm")
    return enc, sig


def replay_membership(entries):
    """Checks links, signatures and authority for the actions the vectors use; returns (room id, head, members)."""
    members = {}
    owner = None
    room_id = head = None
    for i, signed in enumerate(entries):
        entry_bytes, sig = uncbor(signed)
        version, room, seq, prev, action, subject, _t, signer = uncbor(entry_bytes)
        check(version == 1 and seq == i, "membership sequence")
        if i == 0:
            check(action == 1 and room == b"" and prev == bytes(32), "genesis shape")
            check(labeled_hash("user-id", subject) == signer, "genesis signer is the owner")
            owner = signer
            members[signer] = subject
            verify(bundle_keys(subject)[1], "membership", entry_bytes, sig)
            room_id = head = labeled_hash("membership", signed)
        else:
            check(room == room_id and prev == head, "membership link")
            check(signer in members, "signer is a member")
            verify(bundle_keys(members[signer])[1], "membership", entry_bytes, sig)
            if action in (2, 4):
                members[labeled_hash("user-id", subject)] = subject
            elif action == 3:
                check(subject != owner, "owner revoked")
                members.pop(subject)
            head = labeled_hash("membership", signed)
    return room_id, head, members


def verify_audit(entries, key_spki):
    prev = bytes(32)
    hashes_ = []
    for i, signed in enumerate(entries):
        payload, sig = uncbor(signed)
        verify(key_spki, "audit", payload, sig)
        fields = uncbor(payload)
        check(fields[0] == 1 and fields[1] == i and fields[2] == prev, "audit link at %d" % i)
        prev = labeled_hash("audit", signed)
        hashes_.append(prev)
    return hashes_


# ---- Checking the Rust vectors -----------------------------------------------------------------------------

def check_vectors(vdir):
    with open(os.path.join(vdir, "spec-vectors.json")) as f:
        v = json.load(f)
    x = bytes.fromhex

    sk = p256_private(v["hpke"]["recipient_scalar"])
    check(SUITE.decrypt(x(v["hpke"]["sealed"]), sk, info=x(v["hpke"]["info"])) == x(v["hpke"]["plaintext"]), "HPKE")

    with open(os.path.join(vdir, v["stream"]["sealed_file"]), "rb") as f:
        got = stream_open(x(v["stream"]["key"]), f.read())
    check(got == bytes(i % 251 for i in range(v["stream"]["plaintext_len"])), "STREAM")

    for name in ("owner", "alice", "rob"):
        check(labeled_hash("user-id", x(v["users"][name]["bundle"])) == x(v["users"][name]["id"]), "user id " + name)

    room_id, head, members = replay_membership([x(e) for e in v["membership"]["entries"]])
    check(room_id == x(v["membership"]["room_id"]), "room id")
    check(head == x(v["membership"]["head"]), "membership head")
    check(sorted(members) == sorted(x(m) for m in v["membership"]["members_after"]), "members")

    pod = p256_private(v["pod"]["scalar"])
    check(hashlib.sha256(spki(pod.public_key())).digest() == x(v["pod"]["fingerprint"]), "pod fingerprint")
    doc = x(v["sealed_document"]["document"])
    (kind, room, doc_id), plain = open_document(doc, hpke_key=pod)
    check(kind == 1 and room == room_id and doc_id == x(v["sealed_document"]["doc_id"]), "sealed header")
    check(plain == x(v["sealed_document"]["plaintext"]), "sealed plaintext")
    header_bytes = doc[8:8 + int.from_bytes(doc[4:8], "big")]
    check(labeled_hash("header", header_bytes) == x(v["sealed_document"]["header_hash"]), "header hash")

    signed = x(v["signed_request"]["signed"])
    request_bytes, sig = uncbor(signed)
    _, alice_sign = bundle_keys(x(v["users"]["alice"]["bundle"]))
    verify(alice_sign, "request", request_bytes, sig)
    fields = uncbor(request_bytes)
    check(fields[0] == 1 and fields[1] == 1 and fields[2] == room_id, "request fields")
    check(fields[4] == x(v["sealed_document"]["header_hash"]), "request names the header")
    check(fields[5] == x(v["users"]["alice"]["id"]), "request user")
    check(fields[8] == x(v["pod"]["fingerprint"]), "request pod key")
    check(labeled_hash("request", signed) == x(v["signed_request"]["request_hash"]), "request hash")

    alice = p256_private(v["users"]["alice"]["decryption_scalar"])
    (kind, _, _), plain = open_document(x(v["re_encrypted"]["for_alice"]), hpke_key=alice)
    check(kind == 2 and plain == x(v["re_encrypted"]["plaintext"]), "re-encrypted for Alice")
    rob = serialization.load_der_private_key(x(v["users"]["rob"]["rsa_pkcs8"]), None)
    check(rob.key_size == 4096, "Rob's key is RSA-4096")
    (kind, _, _), plain = open_document(x(v["re_encrypted"]["for_rob"]), rsa_key=rob)
    check(kind == 2 and plain == x(v["re_encrypted"]["plaintext"]), "re-encrypted for Rob")

    key = x(v["audit"]["receipt_key_spki"])
    hashes_ = verify_audit([x(e) for e in v["audit"]["entries"]], key)
    check(hashes_[-1] == x(v["audit"]["head"]), "audit head")
    cp_payload, cp_sig = uncbor(x(v["audit"]["checkpoint"]))
    verify(key, "checkpoint", cp_payload, cp_sig)
    _, cp_seq, cp_head, _ = uncbor(cp_payload)
    check(hashes_[cp_seq] == cp_head, "checkpoint")
    r_payload, r_sig = uncbor(x(v["audit"]["receipt"]))
    verify(key, "receipt", r_payload, r_sig)
    _, r_req, _, r_seq, r_entry = uncbor(r_payload)
    check(r_req == labeled_hash("request", signed) and hashes_[r_seq] == r_entry, "receipt")

    if "rotation" in v:
        rot = v["rotation"]
        nxt = p256_private(rot["next_pod_scalar"])
        check(hashlib.sha256(spki(nxt.public_key())).digest() == x(rot["next_pod_fingerprint"]), "next pod fingerprint")
        moved = x(rot["rewrapped_document"])
        (kind, room, doc_id), plain = open_document(moved, hpke_key=nxt)
        check(kind == 1 and room == room_id and plain == x(v["sealed_document"]["plaintext"]), "rewrapped document")
        n_old, n_new = int.from_bytes(doc[4:8], "big"), int.from_bytes(moved[4:8], "big")
        check(doc[8 + n_old:] == moved[8 + n_new:], "a rewrap keeps the body")
        check_rotation_certificate(x(rot["certificate_file"]), key, x(rot["root"]), rot["count"])
    return v


def merkle_root(leaves):
    if not leaves:
        return labeled_hash("rotation", b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return labeled_hash("rotation", b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:]))


def check_rotation_certificate(file_bytes, receipt_spki, root, count):
    cert, items = uncbor(file_bytes)
    payload, sig = uncbor(cert)
    version, mode, old_pod, new_pod, old_receipt_spki, n, cert_root, _ = uncbor(payload)
    check(version == 1 and old_receipt_spki == receipt_spki, "certificate's receipt key")
    verify(old_receipt_spki, "rotation", payload, sig)
    last = None
    for it in items:
        i_payload, i_sig = uncbor(it)
        verify(old_receipt_spki, "rotation-item", i_payload, i_sig)
        _, i_mode, _, _, old_hash, _, i_new_pod = uncbor(i_payload)
        check(i_mode == mode and i_new_pod == new_pod, "item mode and pod")
        check(last is None or old_hash > last, "items sorted by old header hash")
        last = old_hash
    leaves = [labeled_hash("rotation", b"\x00" + it) for it in items]
    check(n == len(items) == count and merkle_root(leaves) == cert_root == root, "rotation Merkle root")


# ---- Making vectors for the Rust side ----------------------------------------------------------------------

def make_vectors(v, out_dir):
    x = bytes.fromhex
    sign_key = ec.generate_private_key(ec.SECP256R1())
    enc_key = ec.generate_private_key(ec.SECP256R1())
    bundle = cbor([1, 2, spki(enc_key.public_key()), spki(sign_key.public_key())])
    user_id = labeled_hash("user-id", bundle)
    genesis_entry = cbor([1, b"", 0, bytes(32), 1, bundle, 1767225600000, user_id])
    genesis = cbor([genesis_entry, sign(sign_key, "membership", genesis_entry)])
    room_id = labeled_hash("membership", genesis)

    pod_public = serialization.load_der_public_key(x(v["pod"]["spki"]))
    plaintext = os.urandom(CHUNK + 1234)
    document = seal_document(1, room_id, b"py-doc", pod_public, plaintext)
    header_bytes = document[8:8 + int.from_bytes(document[4:8], "big")]
    request = cbor([1, 1, room_id, b"py-doc", labeled_hash("header", header_bytes), user_id, os.urandom(16),
                    1767225601000, x(v["pod"]["fingerprint"])])
    signed_request = cbor([request, sign(sign_key, "request", request)])

    audit_key = ec.generate_private_key(ec.SECP256R1())
    audit, prev = [], bytes(32)
    for seq in range(3):
        entry = cbor([1, seq, prev, 1767225602000 + seq, user_id, room_id, b"py-doc", 1, "released", room_id,
                      labeled_hash("request", signed_request)])
        signed = cbor([entry, sign(audit_key, "audit", entry)])
        audit.append(signed.hex())
        prev = labeled_hash("audit", signed)

    out = {
        "bundle": bundle.hex(),
        "user_id": user_id.hex(),
        "membership": [genesis.hex()],
        "room_id": room_id.hex(),
        "sealed_document": document.hex(),
        "plaintext": plaintext.hex(),
        "signed_request": signed_request.hex(),
        "request_hash": labeled_hash("request", signed_request).hex(),
        "audit_key_spki": spki(audit_key.public_key()).hex(),
        "audit": audit,
    }
    with open(os.path.join(out_dir, "python-vectors.json"), "w") as f:
        json.dump(out, f)


def main():
    try:
        v = check_vectors(sys.argv[1])
        make_vectors(v, sys.argv[2])
    except Fail as e:
        print("spec mismatch: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
