// Interoperability of the browser implementation with the two others:
// - the Rust CLI: a key pair from `podctl keygen` (target/debug/podctl; skipped, with a note, when it has not been
//   built) parses here, and its .key imports to the same bundle byte for byte;
// - the independent Python implementation (protocol/tests/spec_vectors.py, imported, not modified): it accepts
//   what this side makes (documents to the pod and to an RSA user, a membership log, a signed request), and this
//   side accepts what it makes (its python-vectors.json, and a document it seals to a non-extractable key here).
// Python 3 with `cryptography` >= 48 is required, as for the Rust suite.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, writeFile, rm, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode } from '../app/lib/cbor.js';
import * as pod from '../app/lib/pod.js';

const run = promisify(execFile);
const path = (rel) => fileURLToPath(new URL(rel, import.meta.url));
const VECTORS_DIR = path('../../protocol/tests/vectors');
const PY_DIR = path('../../protocol/tests');
// The podctl the Rust test run built (tests/tests/web_client.rs passes its directory), else the default debug build.
const PODCTL = process.env.POD_BIN_DIR ? join(process.env.POD_BIN_DIR, 'podctl') : path('../../target/debug/podctl');
const V = JSON.parse(await readFile(join(VECTORS_DIR, 'spec-vectors.json'), 'utf8'));
const x = pod.fromHex;
const hex = pod.toHex;

async function withTmp(fn) {
  const dir = await mkdtemp(join(tmpdir(), 'pod-web-interop-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs a Python program with spec_vectors importable; `input` goes in as JSON, its JSON output comes back. */
async function python(program, input) {
  return withTmp(async (dir) => {
    await writeFile(join(dir, 'driver.py'), program);
    await writeFile(join(dir, 'in.json'), JSON.stringify(input));
    try {
      await run('python3', [join(dir, 'driver.py'), join(dir, 'in.json'), join(dir, 'out.json')], {
        env: { ...process.env, PYTHONPATH: PY_DIR }, maxBuffer: 1 << 24,
      });
    } catch (e) {
      assert.fail(`python3 failed (it needs the cryptography package, >= 48):\n${e.stderr ?? e.message}`);
    }
    return JSON.parse(await readFile(join(dir, 'out.json'), 'utf8'));
  });
}

const PY_PRELUDE = `
import json, sys, hashlib
from spec_vectors import *
from cryptography.hazmat.primitives import serialization
x = bytes.fromhex
inp = json.load(open(sys.argv[1]))
out = {}
`;
const PY_END = `
json.dump(out, open(sys.argv[2], "w"))
`;

async function podHpkeKey() {
  const { privateKey, spki } = await pod.importP256Scalar(x(V.pod.scalar), 'ECDH');
  return { encAlg: pod.ENC_HPKE_P256, encPrivate: privateKey, encSpki: spki };
}

test('podctl keygen: the .pub parses here and the .key imports to the same bundle', async (t) => {
  try {
    await access(PODCTL);
  } catch {
    // Run from cargo test, podctl must be there: a skip would hide the interoperability check.
    if (process.env.POD_BIN_DIR) throw new Error(`${PODCTL} is missing`);
    t.skip(`${PODCTL} is not built (cargo build -p pod-client)`);
    return;
  }
  await withTmp(async (dir) => {
    const { stdout } = await run(PODCTL, ['keygen', '--out', join(dir, 'carol')]);
    const printed = /user id ([0-9a-f]{64})/.exec(stdout)?.[1];
    assert.ok(printed, stdout);
    const pubText = await readFile(join(dir, 'carol.pub'), 'utf8');
    const bundle = await pod.parsePublic(pubText);
    assert.equal(hex(bundle.userId), printed);
    assert.equal(bundle.encAlg, pod.ENC_HPKE_P256);
    // The .pub text this side writes is the CLI's, character for character.
    assert.equal(await pod.publicText(bundle.bytes), pubText);
    const keyText = await readFile(join(dir, 'carol.key'), 'utf8');
    const keys = await pod.importCliKey(keyText);
    assert.deepEqual(keys.bundle, bundle.bytes);
    assert.equal(keys.encPrivate.extractable, false);
    // Python opens, with the CLI key's scalar, a document this side sealed to the key's .pub.
    const plaintext = pod.randomBytes(70000);
    const document = await pod.sealDocument({
      kind: 2, roomId: x(V.membership.room_id), docId: 'for-carol', recipient: { encAlg: bundle.encAlg, spki: bundle.encSpki }, plaintext,
    });
    const out = await python(`${PY_PRELUDE}
(kind, room, doc), plain = open_document(x(inp["document"]), hpke_key=p256_private(inp["scalar"]))
out["kind"] = kind; out["doc"] = doc.hex(); out["plaintext"] = plain.hex()
${PY_END}`, { document: hex(document), scalar: JSON.parse(keyText).decryption_scalar });
    assert.equal(out.kind, 2);
    assert.equal(out.doc, hex(new TextEncoder().encode('for-carol')));
    assert.equal(out.plaintext, hex(plaintext));
    // And a request signed with the imported key verifies under the .pub's signing key.
    const r = await pod.signedRequest({ keys, roomId: x(V.membership.room_id), docId: 'd', headerHash: new Uint8Array(32), podFingerprint: x(V.pod.fingerprint) });
    await pod.verifySignedRequest(r.bytes, bundle.signSpki);
  });
});

test('Python accepts what this side makes: documents, a membership log, a signed request', async () => {
  const owner = await pod.generateUserKeys();
  const alice = await pod.generateUserKeys();
  const bob = await pod.generateUserKeys();
  const { entry: genesis, room: r0 } = await pod.createRoom({ keys: owner, issuedAtMs: 1767225600000 });
  const g1 = await pod.grantEntry({ keys: owner, room: r0, bundle: alice, issuedAtMs: 1767225601000 });
  const g2 = await pod.grantEntry({ keys: owner, room: g1.room, bundle: bob, issuedAtMs: 1767225602000 });
  const g3 = await pod.revokeEntry({ keys: owner, room: g2.room, userId: bob.userId, issuedAtMs: 1767225603000 });
  const room = g3.room;
  const plaintext = pod.randomBytes(2 * pod.CHUNK_SIZE + 99);
  const stored = await pod.sealToPod({ podSpki: x(V.pod.spki), roomId: room.roomId, docId: 'js-doc', plaintext });
  const { header } = pod.readHeader(stored);
  const forRob = await pod.sealDocument({
    kind: 2, roomId: room.roomId, docId: 'js-doc', recipient: { encAlg: pod.ENC_RSA_OAEP_4096, spki: decode(x(V.users.rob.bundle))[2] }, plaintext,
  });
  const req = await pod.signedRequest({ keys: alice, roomId: room.roomId, docId: 'js-doc', headerHash: await pod.headerHash(header), podFingerprint: x(V.pod.fingerprint) });

  const out = await python(`${PY_PRELUDE}
v = json.load(open(inp["vectors"]))
room_id, head, members = replay_membership([x(e) for e in inp["membership"]])
out["room_id"] = room_id.hex(); out["head"] = head.hex(); out["members"] = sorted(m.hex() for m in members)
(kind, room, doc), plain = open_document(x(inp["stored"]), hpke_key=p256_private(v["pod"]["scalar"]))
out["stored"] = [kind, room.hex(), doc.hex(), plain.hex()]
rob = serialization.load_der_private_key(x(v["users"]["rob"]["rsa_pkcs8"]), None)
(kind, room, doc), plain = open_document(x(inp["for_rob"]), rsa_key=rob)
out["for_rob"] = [kind, plain.hex()]
signed = x(inp["request"])
request_bytes, sig = uncbor(signed)
verify(x(inp["alice_sign_spki"]), "request", request_bytes, sig)
fields = uncbor(request_bytes)
out["request"] = [fields[2].hex(), fields[4].hex(), fields[5].hex(), labeled_hash("request", signed).hex()]
out["user_ids"] = [labeled_hash("user-id", x(b)).hex() for b in inp["bundles"]]
out["header_hash"] = labeled_hash("header", x(inp["stored"])[8:8 + int.from_bytes(x(inp["stored"])[4:8], "big")]).hex()
${PY_END}`, {
    vectors: join(VECTORS_DIR, 'spec-vectors.json'),
    membership: [genesis, g1.entry, g2.entry, g3.entry].map(hex),
    stored: hex(stored),
    for_rob: hex(forRob),
    request: hex(req.bytes),
    alice_sign_spki: hex(alice.signSpki),
    bundles: [owner, alice, bob].map((u) => hex(u.bundle)),
  });
  assert.equal(out.room_id, hex(room.roomId));
  assert.equal(out.head, hex(room.head));
  assert.deepEqual(out.members, [hex(owner.userId), hex(alice.userId)].sort());
  assert.deepEqual(out.stored, [1, hex(room.roomId), hex(new TextEncoder().encode('js-doc')), hex(plaintext)]);
  assert.deepEqual(out.for_rob, [2, hex(plaintext)]);
  assert.deepEqual(out.request, [hex(room.roomId), hex(await pod.headerHash(header)), hex(alice.userId), hex(req.requestHash)]);
  assert.deepEqual(out.user_ids, [owner, alice, bob].map((u) => hex(u.userId)));
  assert.equal(out.header_hash, hex(await pod.headerHash(header)));
});

test('this side accepts what Python makes: its vectors, and a document it seals to a non-extractable key', async () => {
  const me = await pod.generateUserKeys();
  const out = await withTmp(async (dir) => {
    try {
      await run('python3', [join(PY_DIR, 'spec_vectors.py'), VECTORS_DIR, dir], { maxBuffer: 1 << 24 });
    } catch (e) {
      assert.fail(`spec_vectors.py failed (it needs the cryptography package, >= 48):\n${e.stderr ?? e.message}`);
    }
    return JSON.parse(await readFile(join(dir, 'python-vectors.json'), 'utf8'));
  });
  // Python sealed a document to the vectors' pod key.
  const opened = await pod.openDocument({ keys: await podHpkeKey(), document: x(out.sealed_document), expect: { kind: 1, roomId: x(out.room_id) } });
  assert.deepEqual(opened.plaintext, x(out.plaintext));
  // Its user bundle, membership log and signed request are accepted.
  const user = await pod.parseBundle(x(out.bundle));
  assert.deepEqual(user.userId, x(out.user_id));
  const room = await pod.replayMembership(out.membership.map(x));
  assert.deepEqual(room.roomId, x(out.room_id));
  assert.ok(pod.memberOf(room, user.userId));
  const fields = await pod.verifySignedRequest(x(out.signed_request), user.signSpki);
  assert.deepEqual(fields.headerHash, opened.headerHash);
  assert.deepEqual(await pod.requestHash(x(out.signed_request)), x(out.request_hash));
  // Its audit chain verifies under its key.
  const log = await pod.verifyAuditLog({ entries: out.audit.map(x), receiptKeySpki: x(out.audit_key_spki) });
  assert.equal(log.count, 3);
  assert.equal(log.entries[2].reason, 'released');

  // Python seals a re-encrypted (kind 2) document to this side's non-extractable HPKE key.
  const sealed = await python(`${PY_PRELUDE}
import os
pub = serialization.load_der_public_key(x(inp["spki"]))
plain = os.urandom(3 * CHUNK)
out["document"] = seal_document(2, x(inp["room"]), b"py-for-js", pub, plain).hex()
out["plaintext"] = plain.hex()
${PY_END}`, { spki: hex(me.encSpki), room: hex(room.roomId) });
  const mine = await pod.openDocument({ keys: me, document: x(sealed.document), expect: { kind: 2, roomId: room.roomId, docId: 'py-for-js' } });
  assert.deepEqual(mine.plaintext, x(sealed.plaintext));
  // A stream of exactly three full chunks: the last full chunk carries the `last` flag.
  assert.equal(mine.plaintext.length, 3 * pod.CHUNK_SIZE);
});
