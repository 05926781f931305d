// Every vector of docs/SPEC.md (protocol/tests/vectors/spec-vectors.json and stream-70000.bin) through the
// browser implementation, as protocol/tests/spec_vectors.rs and spec_vectors.py run them, plus the negative
// cases of the Rust unit tests (protocol/src/*.rs, protocol/tests/logs.rs): tampering, truncation, wrong keys,
// wrong contexts, wrong rooms, non-deterministic encodings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { encode, decode } from '../app/lib/cbor.js';
import * as pod from '../app/lib/pod.js';

const VECTORS = new URL('../../protocol/tests/vectors/', import.meta.url);
const V = JSON.parse(await readFile(new URL('spec-vectors.json', VECTORS), 'utf8'));
const x = pod.fromHex;
const hex = pod.toHex;
const subtle = globalThis.crypto.subtle;

/** Asserts that `promise` rejects with a PodFormatError of `code`. */
async function rejects(promise, code, what) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof pod.PodFormatError, `${what ?? ''}: expected PodFormatError, got ${e}`);
    if (code) assert.equal(e.code, code, `${what ?? ''}: ${e.message}`);
    return true;
  });
}

function throwsCode(fn, code) {
  assert.throws(fn, (e) => e instanceof pod.PodFormatError && e.code === code);
}

/** An HPKE key from a vector's scalar, checked against the public key the vectors give. */
async function hpkeKeyFromScalar(scalarHex, expectedSpki) {
  const { privateKey, spki } = await pod.importP256Scalar(x(scalarHex), 'ECDH');
  if (expectedSpki) assert.deepEqual(spki, expectedSpki);
  return { encAlg: pod.ENC_HPKE_P256, encPrivate: privateKey, encSpki: spki };
}

const bundleOf = (name) => x(V.users[name].bundle);
const podKey = () => hpkeKeyFromScalar(V.pod.scalar, x(V.pod.spki));
const vectorPlain70000 = () => Uint8Array.from({ length: V.stream.plaintext_len }, (_, i) => i % 251);

/** Splits bytes into pieces of pseudo-random sizes (1..max), deterministically. */
function* randomPieces(bytes, max, seed = 1) {
  let s = seed;
  for (let i = 0; i < bytes.length;) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const n = 1 + (s % max);
    yield bytes.subarray(i, Math.min(bytes.length, i + n));
    i += n;
  }
}

async function collectPush(chunker, source) {
  const out = [];
  for (const p of source) out.push(...(await chunker.push(p)));
  const last = await chunker.end();
  out.push(...(Array.isArray(last) ? last : [last]));
  return pod.concat(...out);
}

// ---- §1 conventions ------------------------------------------------------------------------------------------

test('labelled hashes, fingerprints, hex and base64', async () => {
  assert.deepEqual(await pod.fingerprint(x(V.pod.spki)), x(V.pod.fingerprint));
  // SHA-256("secure-pod/v1/" ‖ "header" ‖ 0 ‖ data), computed independently of labeledHash.
  const data = x('0102');
  const manual = new Uint8Array(await subtle.digest('SHA-256', pod.concat(new TextEncoder().encode('secure-pod/v1/header'), Uint8Array.of(0), data)));
  assert.deepEqual(await pod.labeledHash('header', data), manual);
  assert.notDeepEqual(await pod.labeledHash('wrap', data), manual);
  await rejects(pod.labeledHash('nonsense', data), 'invalid_argument');
  for (const n of [0, 1, 2, 3, 4, 5, 100]) {
    const b = pod.randomBytes(n);
    assert.deepEqual(pod.fromBase64(pod.toBase64(b)), b);
    assert.equal(pod.toBase64(b), Buffer.from(b).toString('base64'));
  }
  for (const bad of ['A', 'AB=', 'AB=C', 'AB==\n', 'AB\u00e9=', 'AF==', 'AAF=', '====']) {
    throwsCode(() => pod.fromBase64(bad), 'malformed');
  }
  throwsCode(() => pod.fromHex('abc'), 'malformed');
  throwsCode(() => pod.fromHex('zz'), 'malformed');
  assert.equal(hex(x('00ff10')), '00ff10');
});

test('signatures are raw r‖s and domain-separated by context', async () => {
  const k = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const spki = new Uint8Array(await subtle.exportKey('spki', k.publicKey));
  const m = x('6d');
  const sig = await pod.sign(k.privateKey, 'request', m);
  assert.equal(sig.length, 64);
  assert.equal(await pod.verify(spki, 'request', m, sig), true);
  for (const other of pod.SIGNATURE_CONTEXTS.filter((c) => c !== 'request')) {
    assert.equal(await pod.verify(spki, other, m, sig), false, other);
  }
  assert.equal(await pod.verify(spki, 'request', x('6e'), sig), false);
  assert.equal(await pod.verify(spki, 'request', m, sig.subarray(0, 63)), false);
  const flipped = sig.slice();
  flipped[10] ^= 1;
  assert.equal(await pod.verify(spki, 'request', m, flipped), false);
  await rejects(pod.sign(k.privateKey, 'nonsense', m), 'invalid_argument');
  await rejects(pod.verifyOrThrow(spki, 'membership', m, sig), 'bad_signature');
  // Independent check of the signing input: WebCrypto's own verify over the prefixed message.
  const input = pod.concat(new TextEncoder().encode('secure-pod/v1/request'), Uint8Array.of(0), m);
  assert.equal(await subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, k.publicKey, sig, input), true);
});

// ---- §3.1 HPKE -------------------------------------------------------------------------------------------------

test('HPKE: the spec vector opens, and nothing altered does', async () => {
  const h = V.hpke;
  assert.equal(h.aad, '');
  const key = await hpkeKeyFromScalar(h.recipient_scalar);
  assert.deepEqual(key.encSpki.subarray(26), x(h.recipient_public));
  const sealed = x(h.sealed);
  assert.deepEqual(await pod.hpkeOpen(key.encPrivate, key.encSpki, x(h.info), sealed), x(h.plaintext));
  await rejects(pod.hpkeOpen(key.encPrivate, key.encSpki, x('00'), sealed), 'decrypt', 'wrong info');
  for (let i = 0; i < sealed.length; i++) {
    const bad = sealed.slice();
    bad[i] ^= 1;
    await rejects(pod.hpkeOpen(key.encPrivate, key.encSpki, x(h.info), bad), 'decrypt', `byte ${i}`);
  }
  await rejects(pod.hpkeOpen(key.encPrivate, key.encSpki, x(h.info), sealed.subarray(0, 80)), 'decrypt');
  await rejects(pod.hpkeOpen(key.encPrivate, key.encSpki, x(h.info), sealed.subarray(0, sealed.length - 1)), 'decrypt');
  const other = await pod.generateUserKeys();
  await rejects(pod.hpkeOpen(other.encPrivate, other.encSpki, x(h.info), sealed), 'decrypt', 'wrong key');
  // The right private key but the wrong public key in the KEM context.
  await rejects(pod.hpkeOpen(key.encPrivate, other.encSpki, x(h.info), sealed), 'decrypt', 'wrong context');
});

test('HPKE: RFC 9180 A.3.1 (DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) known answers', async () => {
  const t = pod._hpkeTesting;
  const skEm = await pod.deriveKeyPairScalar(x('4270e54ffd08d79d5928020af4686d8f6b7d35dbe470265f1f5aa22816ce860e'));
  const skRm = await pod.deriveKeyPairScalar(x('668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550'));
  assert.equal(hex(skEm), '4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb');
  assert.equal(hex(skRm), 'f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2');
  const e = await pod.importP256Scalar(skEm, 'ECDH');
  const r = await pod.importP256Scalar(skRm, 'ECDH');
  const pkEm = '04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4';
  assert.equal(hex(e.spki.subarray(26)), pkEm);
  assert.equal(hex(r.spki.subarray(26)), '04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0');
  const dh = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: await subtle.importKey('spki', r.spki, { name: 'ECDH', namedCurve: 'P-256' }, true, []) }, e.privateKey, 256));
  const shared = await t.kemSharedSecret(dh, e.spki.subarray(26), r.spki.subarray(26));
  assert.equal(hex(shared), 'c0d26aeab536609a572b07695d933b589dcf363ff9d93c93adea537aeabb8cb8');
  const info = x('4f6465206f6e2061204772656369616e2055726e');
  const ks = await t.keySchedule(shared, info, 1);
  assert.equal(hex(ks.key), '868c066ef58aae6dc589b6cfdd18f97e');
  assert.equal(hex(ks.baseNonce), '4e0bc5018beba4bf004cca59');
  const pt = x('4265617574792069732074727574682c20747275746820626561757479');
  const aad = x('436f756e742d30');
  const sealed = await t.sealWithEphemeral(e.privateKey, e.spki.subarray(26), r.spki, info, aad, pt, 1);
  assert.equal(hex(sealed), pkEm + '5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f9076ac232e3ab2523f39513434');
  assert.deepEqual(await t.openWithAad(r.privateKey, r.spki, info, aad, sealed, 1), pt);
  // The spec's suite differs only in the AEAD: the same inputs give a different (AES-256) key.
  const ks256 = await t.keySchedule(shared, info, 2);
  assert.equal(ks256.key.length, 32);
});

test('HPKE: seal and open round trip with a non-extractable key; bad recipients are refused', async () => {
  const user = await pod.generateUserKeys();
  assert.equal(user.encPrivate.extractable, false);
  for (const n of [0, 32, 4000]) {
    const pt = pod.randomBytes(n);
    const sealed = await pod.hpkeSeal(user.encSpki, x('69'), pt);
    assert.equal(sealed.length, 65 + n + 16);
    assert.deepEqual(await pod.hpkeOpen(user.encPrivate, user.encSpki, x('69'), sealed), pt);
  }
  const offCurve = user.encSpki.slice();
  offCurve[90] ^= 1;
  await rejects(pod.hpkeSeal(offCurve, x('69'), x('00')), 'invalid_public_key');
  await rejects(pod.hpkeSeal(user.encSpki.subarray(1), x('69'), x('00')), 'invalid_public_key');
});

// ---- §3.2 STREAM ----------------------------------------------------------------------------------------------

test('STREAM: the 70,000-byte vector opens, and sealing it again gives the same bytes', async () => {
  assert.equal(V.stream.sealed_file, 'stream-70000.bin');
  const sealed = new Uint8Array(await readFile(new URL(V.stream.sealed_file, VECTORS)));
  const key = await pod.importStreamKey(x(V.stream.key));
  const plain = vectorPlain70000();
  assert.equal(sealed.length, pod.sealedLength(plain.length));
  assert.deepEqual(await pod.openAll(key, sealed), plain);
  assert.deepEqual(await pod.sealAll(key, plain), sealed);
  // Pieces of any size, in both directions, give the same result with at most one chunk held back.
  for (const max of [1000, 65552, 200000]) {
    assert.deepEqual(await collectPush(new pod.ChunkOpener(key), randomPieces(sealed, max, max)), plain, `open ${max}`);
    assert.deepEqual(await collectPush(new pod.ChunkSealer(key), randomPieces(plain, max, max)), sealed, `seal ${max}`);
  }
  // And through a TransformStream (what a page pipes a fetch body through).
  const readable = new ReadableStream({ start(c) { for (const p of randomPieces(sealed, 9000)) c.enqueue(p); c.close(); } });
  assert.deepEqual(await pod.collect(readable.pipeThrough(pod.openTransform(key))), plain);
});

test('STREAM: truncation, dropping, reordering, extension and the wrong key are detected', async () => {
  const key = await pod.importStreamKey(new Uint8Array(32).fill(7));
  const plain = new Uint8Array(3 * pod.CHUNK_SIZE + 10).fill(1);
  const sealed = await pod.sealAll(key, plain);
  const C = pod.SEALED_CHUNK_SIZE;
  const chunks = [0, 1, 2, 3].map((i) => sealed.subarray(i * C, Math.min(sealed.length, (i + 1) * C)));
  await rejects(pod.openAll(key, pod.concat(...chunks.slice(0, 3))), 'decrypt', 'truncated at a boundary');
  await rejects(pod.openAll(key, pod.concat(chunks[0], chunks[2], chunks[3])), 'decrypt', 'dropped');
  await rejects(pod.openAll(key, pod.concat(chunks[1], chunks[0], chunks[2], chunks[3])), 'decrypt', 'swapped');
  await rejects(pod.openAll(key, pod.concat(chunks[0], chunks[0], chunks[1], chunks[2], chunks[3])), 'decrypt', 'repeated');
  await rejects(pod.openAll(key, pod.concat(sealed, new Uint8Array(20))), 'decrypt', 'extended');
  await rejects(pod.openAll(key, pod.concat(sealed, chunks[3])), undefined, 'a second last chunk');
  await rejects(pod.openAll(key, new Uint8Array(0)), 'truncated', 'empty');
  await rejects(pod.openAll(key, sealed.subarray(0, sealed.length - 1)), 'decrypt', 'cut inside a chunk');
  await rejects(pod.openAll(key, sealed.subarray(0, 10)), 'chunk_length', 'shorter than a tag');
  await rejects(pod.openAll(await pod.importStreamKey(new Uint8Array(32).fill(8)), sealed), 'decrypt', 'wrong key');
  // A full final chunk: cutting after the first (full) chunk of a two-chunk stream fails on its `last` flag.
  const exact = await pod.sealAll(key, new Uint8Array(2 * pod.CHUNK_SIZE));
  assert.equal(exact.length, 2 * C);
  await rejects(pod.openAll(key, exact.subarray(0, C)), 'decrypt');
  // An empty final chunk after a full one is a second encoding of the same plaintext: refused on both sides.
  const s = new pod.StreamSealer(key);
  await s.sealChunk(new Uint8Array(pod.CHUNK_SIZE), false);
  await rejects(s.sealChunk(new Uint8Array(0), true), 'chunk_length');
  const gcm = async (i, last, data) => new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv: pod.streamNonce(i, last) }, key, data));
  const twoEncodings = pod.concat(await gcm(0, false, new Uint8Array(pod.CHUNK_SIZE)), await gcm(1, true, new Uint8Array(0)));
  await rejects(pod.openAll(key, twoEncodings), 'chunk_length', 'empty last chunk after a full one');
  // ... while the one encoding, built the same way by hand, opens (so the refusal above is about the shape).
  assert.deepEqual(await pod.openAll(key, await gcm(0, true, new Uint8Array(pod.CHUNK_SIZE))), new Uint8Array(pod.CHUNK_SIZE));
  // The chunk API enforces the shape and refuses to go on after the last chunk.
  const t = new pod.StreamSealer(key);
  await rejects(t.sealChunk(new Uint8Array(10), false), 'chunk_length');
  await t.sealChunk(new Uint8Array(5), true);
  await rejects(t.sealChunk(new Uint8Array(5), true), 'truncated');
});

test('STREAM: every length at the chunk boundaries round-trips; sealed lengths are exact', async () => {
  const key = pod.randomBytes(32);
  for (const n of [0, 1, pod.CHUNK_SIZE - 1, pod.CHUNK_SIZE, pod.CHUNK_SIZE + 1, 3 * pod.CHUNK_SIZE]) {
    const plain = Uint8Array.from({ length: n }, (_, i) => i % 251);
    const sealed = await pod.sealAll(key, plain);
    assert.equal(sealed.length, pod.sealedLength(n), `${n}`);
    assert.deepEqual(await pod.openAll(key, sealed), plain, `${n}`);
  }
  assert.equal(pod.sealedLength(0), 16);
  assert.equal(hex(pod.streamNonce(0x0102030405, true)), '000000000000010203040501');
});

// ---- §2.1 user keys -------------------------------------------------------------------------------------------

test('bundles: the vector users parse with their ids; .pub text round-trips', async () => {
  for (const name of ['owner', 'alice', 'rob']) {
    const b = await pod.parseBundle(bundleOf(name));
    assert.deepEqual(b.userId, x(V.users[name].id), name);
    assert.equal(b.encAlg, name === 'rob' ? pod.ENC_RSA_OAEP_4096 : pod.ENC_HPKE_P256, name);
    const text = await pod.publicText(b.bytes);
    assert.match(text, /^secure-pod-user\/v1 [A-Za-z0-9+/=]+\n# user id [0-9a-f]{64}\n$/);
    assert.ok(text.endsWith(`# user id ${V.users[name].id}\n`));
    const back = await pod.parsePublic(text);
    assert.deepEqual(back.bytes, b.bytes);
    // Without the comment, and with surrounding whitespace, as the CLI accepts it.
    assert.deepEqual((await pod.parsePublic(`\n  ${text.split('\n')[0]}  \n`)).userId, b.userId);
  }
  const alice = await pod.publicText(bundleOf('alice'));
  await rejects(pod.parsePublic(alice.replace(/# user id [0-9a-f]+/, `# user id ${V.users.owner.id}`)), 'malformed', 'wrong id comment');
  await rejects(pod.parsePublic('hello'), 'malformed');
  const b64 = alice.split('\n')[0].slice(pod.PUB_PREFIX.length);
  await rejects(pod.parsePublic(pod.PUB_PREFIX + b64.slice(0, -1)), 'malformed', 'truncated base64');
  await rejects(pod.parsePublic(pod.PUB_PREFIX + b64.slice(0, 40) + ' ' + b64.slice(40)), 'malformed', 'space in base64');
});

test('bundles: every deviation from §2.1 is refused', async () => {
  const alice = decode(bundleOf('alice'));
  const rob = decode(bundleOf('rob'));
  const [, , encSpki, signSpki] = alice;
  const refuse = async (bytes, code, what) => rejects(pod.parseBundle(bytes), code, what);
  // Non-deterministic encodings: a non-shortest integer head, a non-shortest byte-string length.
  const b = bundleOf('alice');
  await refuse(pod.concat(Uint8Array.of(0x84, 0x18, 0x01), b.subarray(2)), 'malformed', 'non-shortest version');
  const longLen = pod.concat(Uint8Array.of(0x84, 0x01, 0x02, 0x59, 0x00, 0x5b), b.subarray(5));
  assert.deepEqual(longLen.subarray(6, 10), encSpki.subarray(0, 4));
  await refuse(longLen, 'malformed', 'non-shortest length');
  await refuse(pod.concat(Uint8Array.of(0x9f), b.subarray(1), Uint8Array.of(0xff)), 'malformed', 'indefinite array');
  await refuse(pod.concat(b, Uint8Array.of(0)), 'malformed', 'trailing byte');
  await refuse(encode([2, 2, encSpki, signSpki]), 'malformed', 'version 2');
  await refuse(encode([1, 3, encSpki, signSpki]), 'malformed', 'unknown algorithm');
  await refuse(encode([1, 2, encSpki]), 'malformed', 'three elements');
  await refuse(encode([1, 2, encSpki, signSpki, x('00')]), 'malformed', 'five elements');
  await refuse(encode([1, '2', encSpki, signSpki]), 'malformed', 'text algorithm');
  await refuse(encode(new Map([[1, 2]])), 'malformed', 'a map');
  // Keys: off the curve, not in WebCrypto's SPKI form, the wrong kind, RSA of the wrong size, too large.
  const off = encSpki.slice();
  off[90] ^= 1;
  await refuse(encode([1, 2, off, signSpki]), 'invalid_public_key', 'enc off curve');
  await refuse(encode([1, 2, encSpki, off]), 'invalid_public_key', 'sign off curve');
  const compressed = pod.concat(x('3039301306072a8648ce3d020106082a8648ce3d030107032200'), Uint8Array.of(2 + (encSpki[90] & 1)), encSpki.subarray(27, 59));
  await refuse(encode([1, 2, compressed, signSpki]), 'invalid_public_key', 'compressed point');
  await refuse(encode([1, 2, rob[2], signSpki]), 'invalid_public_key', 'RSA key as HPKE');
  await refuse(encode([1, 1, encSpki, signSpki]), 'invalid_public_key', 'P-256 key as RSA');
  await refuse(encode([1, 2, encSpki, rob[2]]), 'invalid_public_key', 'RSA signing key');
  const rsa2048 = await subtle.generateKey({ name: 'RSA-OAEP', modulusLength: 2048, publicExponent: Uint8Array.of(1, 0, 1), hash: 'SHA-256' }, true, ['encrypt', 'decrypt']);
  const spki2048 = new Uint8Array(await subtle.exportKey('spki', rsa2048.publicKey));
  await refuse(encode([1, 1, spki2048, signSpki]), 'invalid_public_key', 'RSA-2048');
  await refuse(encode([1, 1, new Uint8Array(1025), signSpki]), 'too_large', 'SPKI over 1024 bytes');
  await refuse(new Uint8Array(5000), 'too_large', 'huge bundle');
  // And the good ones re-encode to themselves.
  assert.deepEqual(encode(alice), bundleOf('alice'));
  assert.deepEqual(encode(rob), bundleOf('rob'));
});

test('keys: generated keys are non-extractable, valid and storable (structured clone)', async () => {
  const k = await pod.generateUserKeys({ encAlg: 'p256' });
  assert.equal(k.encAlg, pod.ENC_HPKE_P256);
  assert.equal(k.encPrivate.extractable, false);
  assert.equal(k.signPrivate.extractable, false);
  assert.deepEqual((await pod.parseBundle(k.bundle)).userId, k.userId);
  const stored = structuredClone(k);
  assert.equal(stored.encPrivate.extractable, false);
  const sig = await pod.sign(stored.signPrivate, 'request', x('00'));
  assert.equal(await pod.verify(k.signSpki, 'request', x('00'), sig), true);
  await assert.rejects(subtle.exportKey('pkcs8', k.encPrivate));
  await assert.rejects(subtle.exportKey('pkcs8', k.signPrivate));
  await rejects(pod.generateUserKeys({ encAlg: 'dsa' }), 'invalid_argument');
});

test('keys: RSA-OAEP-4096 generation and import of an existing key (Rob\'s, DER, PEM and PKCS#1)', async () => {
  const gen = await pod.generateUserKeys({ encAlg: 'rsa' });
  assert.equal(gen.encAlg, pod.ENC_RSA_OAEP_4096);
  assert.equal(gen.encPrivate.extractable, false);
  assert.equal(gen.encPrivate.algorithm.modulusLength, 4096);
  const der = x(V.users.rob.rsa_pkcs8);
  const rob = decode(bundleOf('rob'));
  const imported = await pod.importRsaKeyBundle(der);
  assert.equal(imported.encPrivate.extractable, false);
  // The SPKI derived from the private key is byte for byte the one in Rob's bundle (made by the Rust side).
  assert.deepEqual(imported.encSpki, rob[2]);
  assert.deepEqual(imported.bundle.subarray(0, 3), bundleOf('rob').subarray(0, 3));
  const b64 = pod.toBase64(der).replace(/(.{64})/g, '$1\n');
  const fromPem = await pod.importRsaKeyBundle(`-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`);
  assert.deepEqual(fromPem.encSpki, rob[2]);
  // PKCS#1: the RSAPrivateKey inside the PKCS#8 OCTET STRING (it starts after 26 bytes of this key's header).
  const pkcs1 = der.subarray(26);
  assert.equal(pkcs1[0], 0x30);
  const fromPkcs1 = await pod.importRsaKeyBundle(`-----BEGIN RSA PRIVATE KEY-----\n${pod.toBase64(pkcs1)}\n-----END RSA PRIVATE KEY-----`);
  assert.deepEqual(fromPkcs1.encSpki, rob[2]);
  // Refused: RSA-2048, an EC key, encrypted PKCS#8, garbage.
  const rsa2048 = await subtle.generateKey({ name: 'RSA-OAEP', modulusLength: 2048, publicExponent: Uint8Array.of(1, 0, 1), hash: 'SHA-256' }, true, ['encrypt', 'decrypt']);
  await rejects(pod.importRsaKeyBundle(new Uint8Array(await subtle.exportKey('pkcs8', rsa2048.privateKey))), 'invalid_private_key', '2048');
  const ec = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
  await rejects(pod.importRsaKeyBundle(new Uint8Array(await subtle.exportKey('pkcs8', ec.privateKey))), 'unsupported', 'EC key');
  await rejects(pod.importRsaKeyBundle('-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----'), 'unsupported');
  await rejects(pod.importRsaKeyBundle(x('3003020100')), 'invalid_private_key');
  // A key whose modulus was altered no longer matches its private half.
  const tampered = der.slice();
  tampered[40] ^= 1;
  await rejects(pod.importRsaKeyBundle(tampered), 'invalid_private_key', 'inconsistent');
});

// ---- §5 membership ----------------------------------------------------------------------------------------------

test('membership: the vector log replays to its room, head, owner and members', async () => {
  const entries = V.membership.entries.map(x);
  const room = await pod.replayMembership(entries, { roomId: x(V.membership.room_id) });
  assert.deepEqual(room.roomId, x(V.membership.room_id));
  assert.deepEqual(room.head, x(V.membership.head));
  assert.equal(room.seq, entries.length - 1);
  assert.deepEqual(room.ownerId, x(V.users.owner.id));
  assert.deepEqual(pod.memberOf(room, x(V.users.owner.id)).bundle.bytes, bundleOf('owner'));
  assert.equal(room.members.size, V.membership.members_after.length);
  for (const m of V.membership.members_after) assert.ok(pod.memberOf(room, x(m)), m);
  assert.equal(pod.memberOf(room, x(V.users.rob.id)), undefined, 'Rob was granted, then revoked');
  assert.deepEqual(pod.memberList(room).map((m) => hex(m.userId))[0], V.users.owner.id);
  assert.deepEqual(await pod.entryHash(entries[0]), room.roomId);
  // Each prefix of the log is a valid earlier state; a room can be stored and replayed from a clone.
  const early = await pod.replayMembership(entries.slice(0, 3));
  assert.ok(pod.memberOf(early, x(V.users.rob.id)));
  await pod.applyMembershipEntry(structuredClone(early), entries[3]);
  // Tampering: a missing, repeated or reordered entry, any flipped byte, a log for another room.
  await rejects(pod.replayMembership([entries[0], entries[2], entries[3]]), 'membership', 'gap');
  await rejects(pod.replayMembership([entries[0], entries[1], entries[1]]), 'membership', 'repeat');
  await rejects(pod.replayMembership([entries[0], entries[2], entries[1], entries[3]]), 'membership', 'reordered');
  await rejects(pod.replayMembership(entries.slice(1)), 'membership', 'no genesis');
  await rejects(pod.replayMembership([]), 'membership', 'empty');
  await rejects(pod.replayMembership(entries, { roomId: new Uint8Array(32) }), 'membership', 'other room');
  for (let i = 0; i < entries[1].length; i++) {
    const bad = entries.map((e) => e.slice());
    bad[1][i] ^= 1;
    await rejects(pod.replayMembership(bad), undefined, `byte ${i}`);
  }
});

async function user() {
  return pod.generateUserKeys();
}

test('membership: the owner and admins manage members, and nobody else can (logs.rs)', async () => {
  const [owner, admin, alice, bob] = await Promise.all([user(), user(), user(), user()]);
  const { entry: genesis, room: r0 } = await pod.createRoom({ keys: owner, issuedAtMs: 1 });
  let room = r0;
  assert.deepEqual(room.roomId, await pod.entryHash(genesis));
  const log = [genesis];
  const step = async (p) => { const r = await p; log.push(r.entry); room = r.room; return r; };
  await step(pod.grantEntry({ keys: owner, room, bundle: alice.bundle, issuedAtMs: 2 }));
  // A member cannot grant (the builder checks as the pod will).
  await rejects(pod.grantEntry({ keys: alice, room, bundle: bob.bundle, issuedAtMs: 3 }), 'membership', 'member grants');
  await step(pod.addAdminEntry({ keys: owner, room, bundle: admin, issuedAtMs: 3 }));
  await step(pod.grantEntry({ keys: admin, room, bundle: bob, issuedAtMs: 4 }));
  assert.ok(pod.memberOf(room, bob.userId));
  await step(pod.revokeEntry({ keys: admin, room, userId: bob.userId, issuedAtMs: 5 }));
  assert.equal(pod.memberOf(room, bob.userId), undefined);
  await rejects(pod.revokeEntry({ keys: admin, room, userId: owner.userId, issuedAtMs: 6 }), 'membership', 'revoke owner');
  await rejects(pod.revokeEntry({ keys: owner, room, userId: owner.userId, issuedAtMs: 6 }), 'membership', 'owner revokes self');
  await rejects(pod.addAdminEntry({ keys: admin, room, bundle: bob, issuedAtMs: 6 }), 'membership', 'admin adds admin');
  await rejects(pod.grantEntry({ keys: owner, room, bundle: alice, issuedAtMs: 6 }), 'membership', 'already a member');
  await rejects(pod.removeAdminEntry({ keys: owner, room, userId: alice.userId, issuedAtMs: 6 }), 'membership', 'not an admin');
  await rejects(pod.revokeEntry({ keys: owner, room, userId: bob.userId, issuedAtMs: 6 }), 'membership', 'not a member');
  await rejects(pod.revokeEntry({ keys: owner, room, userId: x('00'), issuedAtMs: 6 }), 'membership', 'not a user id');
  await rejects(pod.revokeEntry({ keys: owner, room, userId: alice.userId, issuedAtMs: 1 }), 'membership', 'time goes back');
  // Admins cannot demote or revoke admins; the owner can.
  const admin2 = await user();
  await step(pod.addAdminEntry({ keys: owner, room, bundle: admin2, issuedAtMs: 7 }));
  await rejects(pod.revokeEntry({ keys: admin, room, userId: admin2.userId, issuedAtMs: 8 }), 'membership');
  await step(pod.removeAdminEntry({ keys: owner, room, userId: admin2.userId, issuedAtMs: 8 }));
  assert.equal(pod.memberOf(room, admin2.userId).admin, false);
  // An existing member can be promoted.
  await step(pod.addAdminEntry({ keys: owner, room, bundle: alice, issuedAtMs: 9 }));
  assert.equal(pod.memberOf(room, alice.userId).admin, true);
  // The whole log replays to the same state.
  const replayed = await pod.replayMembership(log);
  assert.deepEqual(replayed, room);
  assert.deepEqual(pod.memberList(room).map((m) => [m.owner, m.admin]).slice(0, 1), [[true, true]]);

  // An entry signed by someone other than its named signer; a stranger's key.
  const forge = async (signKey) => {
    const entry = encode([1, room.roomId, room.seq + 1, room.head, pod.ACTION_GRANT, bob.bundle, 10, owner.userId]);
    return pod.signStructure(signKey, 'membership', entry);
  };
  await rejects(pod.applyMembershipEntry(structuredClone(room), await forge(alice.signPrivate)), 'bad_signature');
  await rejects(pod.applyMembershipEntry(structuredClone(room), await forge(bob.signPrivate)), 'bad_signature');
  // The right signer, the wrong context.
  const entry = encode([1, room.roomId, room.seq + 1, room.head, pod.ACTION_GRANT, bob.bundle, 10, owner.userId]);
  const wrongContext = pod.encodeSigned(entry, await pod.sign(owner.signPrivate, 'request', entry));
  await rejects(pod.applyMembershipEntry(structuredClone(room), wrongContext), 'bad_signature');
  assert.ok(await pod.applyMembershipEntry(structuredClone(room), await forge(owner.signPrivate)));
  // A second genesis, and an entry for another room.
  await rejects(pod.applyMembershipEntry(structuredClone(room), genesis), 'membership');
  const { room: other } = await pod.createRoom({ keys: alice, issuedAtMs: 1 });
  const foreign = await pod.grantEntry({ keys: alice, room: other, bundle: bob, issuedAtMs: 12 });
  await rejects(pod.applyMembershipEntry(structuredClone(room), foreign.entry), 'membership');
  // A genesis not signed by the owner it names.
  const g = encode([1, new Uint8Array(0), 0, new Uint8Array(32), 1, owner.bundle, 1, owner.userId]);
  await rejects(pod.genesisRoom(await pod.signStructure(alice.signPrivate, 'membership', g)), 'bad_signature');
  const g2 = encode([1, new Uint8Array(0), 0, new Uint8Array(32), 1, owner.bundle, 1, alice.userId]);
  await rejects(pod.genesisRoom(await pod.signStructure(alice.signPrivate, 'membership', g2)), 'membership');
  // Entries over 4096 bytes are refused before they are decoded.
  throwsCode(() => pod.parseMembershipEntry(new Uint8Array(4097)), 'too_large');
});

// ---- §3.3 documents -------------------------------------------------------------------------------------------

test('documents: the sealed vector opens with the pod key, names its room and id, and opens with no one else', async () => {
  const d = V.sealed_document;
  const document = x(d.document);
  const key = await podKey();
  const { header, headerHash, plaintext } = await pod.openDocument({ keys: key, document });
  assert.deepEqual(plaintext, x(d.plaintext));
  assert.equal(header.kind, pod.KIND_SEALED_TO_POD);
  assert.deepEqual(header.roomId, x(d.room_id));
  assert.deepEqual(header.roomId, x(V.membership.room_id));
  assert.deepEqual(header.docId, x(d.doc_id));
  assert.deepEqual(header.recipient, x(V.pod.fingerprint));
  assert.deepEqual(headerHash, x(d.header_hash));
  assert.deepEqual(await pod.headerHash(header.bytes), x(d.header_hash));
  // The stored blob never opens with a user's key.
  const alice = await hpkeKeyFromScalar(V.users.alice.decryption_scalar, decode(bundleOf('alice'))[2]);
  await rejects(pod.openDocument({ keys: alice, document }), 'decrypt');
  // Any flipped byte anywhere fails (malformed header, wrong magic, unwrap or authentication).
  for (let i = 0; i < document.length; i++) {
    const bad = document.slice();
    bad[i] ^= 0x20;
    await rejects(pod.openDocument({ keys: key, document: bad }), undefined, `byte ${i}`);
  }
  // Truncated anywhere, or extended.
  for (const n of [0, 3, 8, 100, document.length - 17, document.length - 1]) {
    await rejects(pod.openDocument({ keys: key, document: document.subarray(0, n) }), undefined, `cut at ${n}`);
  }
  await rejects(pod.openDocument({ keys: key, document: pod.concat(document, x('00')) }), 'decrypt');
  // One byte at a time through the incremental opener.
  const o = new pod.DocumentOpener({ keys: key, expect: { kind: 1, roomId: x(d.room_id), docId: x(d.doc_id), headerHash: x(d.header_hash) } });
  const out = [];
  for (let i = 0; i < document.length; i++) out.push(...(await o.push(document.subarray(i, i + 1))));
  out.push(...(await o.end()));
  assert.deepEqual(pod.concat(...out), x(d.plaintext));
});

test('documents: a header changed to name another room or id does not open (the wrap info and payload key bind them)', async () => {
  const document = x(V.sealed_document.document);
  const key = await podKey();
  const { header, bodyStart } = pod.readHeader(document);
  const forge = (fields) => {
    const h = encode(fields);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, h.length);
    return pod.concat(pod.MAGIC, len, h, document.subarray(bodyStart));
  };
  const f = [header.kind, header.roomId, header.docId, header.recipient, header.wrapAlg, header.wrappedKey];
  assert.deepEqual(forge(f), document);
  await rejects(pod.openDocument({ keys: key, document: forge([1, new Uint8Array(32).fill(2), ...f.slice(2)]) }), 'decrypt', 'room');
  await rejects(pod.openDocument({ keys: key, document: forge([1, f[1], x('6f74686572'), ...f.slice(3)]) }), 'decrypt', 'doc id');
  await rejects(pod.openDocument({ keys: key, document: forge([2, ...f.slice(1)]) }), 'decrypt', 'kind');
  await rejects(pod.openDocument({ keys: key, document: forge([1, f[1], f[2], new Uint8Array(32), 2, f[5]]) }), 'decrypt', 'recipient');
  await rejects(pod.openDocument({ keys: key, document: forge([1, f[1], f[2], f[3], 1, f[5]]) }), 'decrypt', 'algorithm');
  // The payload key itself depends on kind, room and id: the same file key under another room's salt fails.
  const fileKey = pod.randomBytes(32);
  const h = { kind: 1, roomId: new Uint8Array(32).fill(1), docId: x('61') };
  const sealed = await pod.sealAll(await pod.payloadKey(h, fileKey, 'encrypt'), x('736563726574'));
  assert.deepEqual(await pod.openAll(await pod.payloadKey(h, fileKey, 'decrypt'), sealed), x('736563726574'));
  for (const other of [{ ...h, kind: 2 }, { ...h, roomId: new Uint8Array(32).fill(2) }, { ...h, docId: x('62') }]) {
    await rejects(pod.openAll(await pod.payloadKey(other, fileKey, 'decrypt'), sealed), 'decrypt');
  }
  // Expectations are checked before unwrapping.
  await rejects(pod.openDocument({ keys: key, document, expect: { kind: 2 } }), 'wrong_document');
  await rejects(pod.openDocument({ keys: key, document, expect: { roomId: new Uint8Array(32) } }), 'wrong_document');
  await rejects(pod.openDocument({ keys: key, document, expect: { docId: 'other' } }), 'wrong_document');
  await rejects(pod.openDocument({ keys: key, document, expect: { headerHash: new Uint8Array(32) } }), 'wrong_document');
});

test('documents: readHeader needs the whole header, refuses bad magic and oversized headers', async () => {
  const document = x(V.sealed_document.document);
  for (let n = 0; n < 8 + 0xc9; n++) assert.equal(pod.readHeader(document.subarray(0, n)), null, `${n}`);
  assert.equal(pod.readHeader(document.subarray(0, 8 + 0xc9)).bodyStart, 8 + 0xc9);
  throwsCode(() => pod.readHeader(x('5850')), 'malformed');
  throwsCode(() => pod.readHeader(x('585858580000000100')), 'malformed');
  throwsCode(() => pod.readHeader(x('53504431ffffffff')), 'too_large');
  throwsCode(() => pod.readHeader(x('5350443100000801')), 'too_large');
  throwsCode(() => pod.readHeader(x('535044310000000100')), 'malformed');
  // Header field checks.
  const h = (fields) => encode(fields);
  const ok = [1, new Uint8Array(32), x('61'), new Uint8Array(32), 2, x('00')];
  pod.parseHeader(h(ok));
  const cases = [
    [3, ...ok.slice(1)], [1, new Uint8Array(31), ...ok.slice(2)], [1, ok[1], new Uint8Array(0), ...ok.slice(3)],
    [1, ok[1], new Uint8Array(65), ...ok.slice(3)], [1, ok[1], ok[2], new Uint8Array(33), 2, ok[5]],
    [1, ok[1], ok[2], ok[3], 3, ok[5]], ok.slice(0, 5), [...ok, 0], [1, ok[1], ok[2], ok[3], 2, 'text'],
  ];
  for (const c of cases) throwsCode(() => pod.parseHeader(h(c)), 'malformed');
});

test('documents: sealToPod output opens with the pod key, in memory and streamed from a Blob or ReadableStream', async () => {
  const key = await podKey();
  const roomId = x(V.membership.room_id);
  const small = new TextEncoder().encode('term sheet');
  const doc = await pod.sealToPod({ podSpki: x(V.pod.spki), roomId, docId: 'term-sheet.pdf', plaintext: small });
  const opened = await pod.openDocument({ keys: key, document: doc, expect: { kind: 1, roomId, docId: 'term-sheet.pdf' } });
  assert.deepEqual(opened.plaintext, small);
  // Empty documents have one (empty) chunk.
  const empty = await pod.sealToPod({ podSpki: x(V.pod.spki), roomId, docId: x('00'), plaintext: new Uint8Array(0) });
  assert.deepEqual((await pod.openDocument({ keys: key, document: empty })).plaintext, new Uint8Array(0));

  const big = pod.randomBytes(5 * pod.CHUNK_SIZE + 123);
  const progress = [];
  const s = await pod.sealToPodStream({ podSpki: x(V.pod.spki), roomId, docId: 'big', source: new Blob([big]), onProgress: (d, t) => progress.push([d, t]) });
  assert.equal(s.header.kind, 1);
  assert.deepEqual(s.headerHash, await pod.headerHash(s.header));
  const sealedPieces = [];
  let maxPiece = 0;
  for await (const p of s.pieces) { sealedPieces.push(p); maxPiece = Math.max(maxPiece, p.length); }
  assert.ok(maxPiece <= pod.SEALED_CHUNK_SIZE, 'no piece larger than a chunk');
  const sealed = pod.concat(...sealedPieces);
  assert.equal(sealed.length, s.length);
  assert.deepEqual(progress.at(-1), [big.length, big.length]);
  // Open from a ReadableStream of odd-sized pieces, one chunk at a time.
  const stream = new ReadableStream({ start(c) { for (const p of randomPieces(sealed, 30000, 5)) c.enqueue(p); c.close(); } });
  let seenHeader = null;
  const out = [];
  for await (const p of pod.openDocumentStream({ keys: key, source: stream, onHeader: (h, hh) => { seenHeader = hh; } })) {
    assert.ok(p.length <= pod.CHUNK_SIZE);
    out.push(p);
  }
  assert.deepEqual(seenHeader, s.headerHash);
  assert.deepEqual(pod.concat(...out), big);
  // A declared total that the source does not deliver is an error, not a short document.
  const liar = await pod.sealToPodStream({ podSpki: x(V.pod.spki), roomId, docId: 'x', source: [x('00')], totalBytes: 2 });
  await rejects(pod.collect(liar.pieces), 'invalid_argument');
  // Bad arguments.
  await rejects(pod.sealToPod({ podSpki: x(V.pod.spki), roomId: new Uint8Array(31), docId: 'x', plaintext: small }), 'invalid_argument');
  await rejects(pod.sealToPod({ podSpki: x(V.pod.spki), roomId, docId: '', plaintext: small }), 'invalid_argument');
  await rejects(pod.sealToPod({ podSpki: x(V.pod.spki), roomId, docId: 'x'.repeat(65), plaintext: small }), 'invalid_argument');
  await rejects(pod.sealToPod({ podSpki: x(V.pod.spki).subarray(1), roomId, docId: 'x', plaintext: small }), 'invalid_public_key');
});

test('documents: re-encrypted vectors open with Alice\'s HPKE key and Rob\'s RSA key; JS round trips to both', async () => {
  const r = V.re_encrypted;
  const alice = await hpkeKeyFromScalar(V.users.alice.decryption_scalar, decode(bundleOf('alice'))[2]);
  const a = await pod.openDocument({ keys: alice, document: x(r.for_alice), expect: { kind: 2, roomId: x(V.membership.room_id), docId: x(V.sealed_document.doc_id) } });
  assert.equal(a.header.kind, pod.KIND_RE_ENCRYPTED);
  assert.deepEqual(a.plaintext, x(r.plaintext));
  const rob = await pod.importRsaKeyBundle(x(V.users.rob.rsa_pkcs8));
  const b = await pod.openDocument({ keys: rob, document: x(r.for_rob), expect: { kind: 2 } });
  assert.equal(b.header.wrapAlg, pod.ENC_RSA_OAEP_4096);
  assert.deepEqual(b.plaintext, x(r.plaintext));
  // Each copy opens only for its recipient.
  await rejects(pod.openDocument({ keys: rob, document: x(r.for_alice) }), 'decrypt');
  await rejects(pod.openDocument({ keys: alice, document: x(r.for_rob) }), 'decrypt');
  // A copy made here for each kind of user opens with that user's key (as the pod would make it).
  for (const u of [await user(), rob]) {
    const plain = pod.randomBytes(pod.CHUNK_SIZE + 7);
    const doc = await pod.sealDocument({ kind: 2, roomId: new Uint8Array(32).fill(9), docId: 'd', recipient: { encAlg: u.encAlg, spki: u.encSpki }, plaintext: plain });
    assert.deepEqual((await pod.openDocument({ keys: u, document: doc })).plaintext, plain);
    // RSA: the OAEP label is the wrap info, so a header for another room does not unwrap either.
    const { header, bodyStart } = pod.readHeader(doc);
    const h = encode([2, new Uint8Array(32).fill(8), header.docId, header.recipient, header.wrapAlg, header.wrappedKey]);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, h.length);
    await rejects(pod.openDocument({ keys: u, document: pod.concat(pod.MAGIC, len, h, doc.subarray(bodyStart)) }), 'decrypt');
  }
});

// ---- §4 requests ----------------------------------------------------------------------------------------------

test('requests: the vector request verifies under Alice\'s key and names the sealed document', async () => {
  const v = V.signed_request;
  assert.equal(v.user, 'alice');
  const signed = x(v.signed);
  assert.deepEqual(await pod.requestHash(signed), x(v.request_hash));
  const aliceSign = decode(bundleOf('alice'))[3];
  const f = await pod.verifySignedRequest(signed, aliceSign);
  assert.equal(f.op, pod.OP_RE_ENCRYPT);
  assert.deepEqual(f.roomId, x(V.membership.room_id));
  assert.deepEqual(f.docId, x(V.sealed_document.doc_id));
  assert.deepEqual(f.headerHash, x(V.sealed_document.header_hash));
  assert.deepEqual(f.userId, x(V.users.alice.id));
  assert.deepEqual(f.nonce, x(v.nonce));
  assert.equal(f.issuedAtMs, v.issued_at_ms);
  assert.deepEqual(f.podFingerprint, x(V.pod.fingerprint));
  await rejects(pod.verifySignedRequest(signed, decode(bundleOf('owner'))[3]), 'bad_signature', 'owner key');
  for (let i = 0; i < signed.length; i++) {
    const bad = signed.slice();
    bad[i] ^= 1;
    await assert.rejects(pod.verifySignedRequest(bad, aliceSign), pod.PodFormatError, `byte ${i}`);
  }
});

test('requests: made here, they verify; bounds and contexts are enforced', async () => {
  const keys = await user();
  const base = { keys, roomId: new Uint8Array(32).fill(1), docId: 'doc', headerHash: new Uint8Array(32).fill(2), podFingerprint: new Uint8Array(32).fill(5) };
  const r = await pod.signedRequest({ ...base, nonce: new Uint8Array(16).fill(4), issuedAtMs: 1700000000000 });
  assert.deepEqual(r.requestHash, await pod.labeledHash('request', r.bytes));
  const f = await pod.verifySignedRequest(r.bytes, keys.signSpki);
  assert.deepEqual(f.userId, keys.userId);
  assert.equal(f.issuedAtMs, 1700000000000);
  const fresh = await pod.signedRequest(base);
  assert.equal(fresh.fields.nonce.length, 16);
  assert.ok(Math.abs(fresh.fields.issuedAtMs - Date.now()) < 60000);
  assert.notDeepEqual(fresh.fields.nonce, (await pod.signedRequest(base)).fields.nonce);
  await rejects(pod.signedRequest({ ...base, nonce: new Uint8Array(15) }), 'invalid_argument');
  await rejects(pod.signedRequest({ ...base, nonce: new Uint8Array(33) }), 'invalid_argument');
  await rejects(pod.signedRequest({ ...base, headerHash: new Uint8Array(31) }), 'invalid_argument');
  // A request signed in another context, or with a short nonce, is refused.
  const { request } = pod.parseSignedRequest(r.bytes);
  await rejects(pod.verifySignedRequest(pod.encodeSigned(request, await pod.sign(keys.signPrivate, 'membership', request)), keys.signSpki), 'bad_signature');
  const fields = decode(request);
  fields[6] = new Uint8Array(8);
  const short = encode(fields);
  throwsCode(() => pod.parseSignedRequest(pod.encodeSigned(short, new Uint8Array(64))), 'malformed');
  throwsCode(() => pod.parseSignedRequest(new Uint8Array(2000)), 'too_large');
  throwsCode(() => pod.parseSignedRequest(encode([request, new Uint8Array(63)])), 'malformed');
});

// ---- §6 audit -------------------------------------------------------------------------------------------------

test('audit: the vector log, checkpoint and receipt verify under the receipt key', async () => {
  const a = V.audit;
  const spki = x(a.receipt_key_spki);
  const entries = a.entries.map(x);
  const checkpoint = await pod.parseCheckpoint(x(a.checkpoint), spki);
  const receipt = await pod.verifyReceipt({
    receiptKeySpki: spki, receipt: x(a.receipt), requestHash: x(V.signed_request.request_hash),
    responseHeaderHash: await pod.headerHash(pod.readHeader(x(V.re_encrypted.for_alice)).header),
  });
  const summary = await pod.verifyAuditLog({ entries, receiptKeySpki: spki, checkpoints: [checkpoint], receipts: [receipt] });
  assert.deepEqual(summary.head, x(a.head));
  assert.equal(summary.count, entries.length);
  assert.deepEqual(summary.entries[0].requestHash, x(V.signed_request.request_hash));
  assert.equal(summary.entries[0].decision, pod.DECISION_ALLOW);
  // Bytes work as well as parsed values.
  await pod.verifyAuditLog({ entries, receiptKeySpki: spki, checkpoints: [x(a.checkpoint)], receipts: [x(a.receipt)] });
  // A receipt for another request or response, or checked under another key, or in another context.
  await rejects(pod.verifyReceipt({ receiptKeySpki: spki, receipt: x(a.receipt), requestHash: new Uint8Array(32), responseHeaderHash: receipt.responseHeaderHash }), 'receipt_mismatch');
  await rejects(pod.verifyReceipt({ receiptKeySpki: spki, receipt: x(a.receipt), requestHash: receipt.requestHash, responseHeaderHash: x(V.sealed_document.header_hash) }), 'receipt_mismatch');
  await rejects(pod.verifyReceipt({ receiptKeySpki: x(V.pod.spki), receipt: x(a.receipt), requestHash: receipt.requestHash, responseHeaderHash: receipt.responseHeaderHash }), 'bad_signature');
  const cpParts = decode(x(a.checkpoint));
  await rejects(pod.parseReceipt(x(a.checkpoint), spki), 'bad_signature', 'a checkpoint is not a receipt');
  await rejects(pod.parseAuditEntry(encode([cpParts[0], cpParts[1]]), spki), 'bad_signature');
  // The vector log cut before the checkpoint's entry.
  await rejects(pod.verifyAuditLog({ entries: entries.slice(0, checkpoint.seq), receiptKeySpki: spki, checkpoints: [checkpoint] }), 'audit');
});

async function auditLog(n, key) {
  let prev = new Uint8Array(32);
  const out = [];
  for (let seq = 0; seq < n; seq++) {
    const entry = encode([1, seq, prev, 1000 + seq, new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), x('646f63'),
      seq % 3 === 0 ? 2 : 1, 'ok', new Uint8Array(32).fill(3), new Uint8Array(32).fill(seq)]);
    const signed = await pod.signStructure(key, 'audit', entry);
    prev = await pod.labeledHash('audit', signed);
    out.push(signed);
  }
  return out;
}

test('audit: deletion, alteration, reordering, forgery and truncation are detected (logs.rs)', async () => {
  const k = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const spki = new Uint8Array(await subtle.exportKey('spki', k.publicKey));
  const log = await auditLog(6, k.privateKey);
  const { head, count } = await pod.verifyAuditLog({ entries: log, receiptKeySpki: spki });
  assert.equal(count, 6);
  const cpBytes = await pod.signStructure(k.privateKey, 'checkpoint', encode([1, 5, head, 2000]));
  const checkpoint = await pod.parseCheckpoint(cpBytes, spki);
  await pod.verifyAuditLog({ entries: log, receiptKeySpki: spki, checkpoints: [checkpoint] });
  const failsAt = async (entries, seq, extra = {}) => {
    await assert.rejects(pod.verifyAuditLog({ entries, receiptKeySpki: spki, ...extra }), (e) => e.code === 'audit' && e.seq === seq);
  };
  await failsAt([...log.slice(0, 2), ...log.slice(3)], 2);
  for (let i = 0; i < log[3].length; i++) {
    const altered = log.map((e) => e.slice());
    altered[3][i] ^= 1;
    await assert.rejects(pod.verifyAuditLog({ entries: altered, receiptKeySpki: spki }), pod.PodFormatError, `byte ${i}`);
  }
  await failsAt([log[0], log[2], log[1], ...log.slice(3)], 1);
  // Truncated: the rest still chains, so only a checkpoint or receipt beyond the end reveals it.
  const truncated = log.slice(0, 4);
  await pod.verifyAuditLog({ entries: truncated, receiptKeySpki: spki });
  await failsAt(truncated, 5, { checkpoints: [checkpoint] });
  const receiptBytes = await pod.signStructure(k.privateKey, 'receipt', encode([1, new Uint8Array(32).fill(5), new Uint8Array(32).fill(9), 5, head]));
  const receipt = await pod.parseReceipt(receiptBytes, spki);
  await pod.verifyAuditLog({ entries: log, receiptKeySpki: spki, receipts: [receipt] });
  await failsAt(truncated, 5, { receipts: [receipt] });
  // A checkpoint naming a different head at that position.
  await failsAt(log, 5, { checkpoints: [{ seq: 5, head: new Uint8Array(32), timeMs: 0 }] });
  // Entries signed by another key (the parent forging entries).
  const forger = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const forged = (await auditLog(7, forger.privateKey)).pop();
  await failsAt([...log, forged], 6);
  // Shape checks: reason too long, unknown decision.
  const bad = await pod.signStructure(k.privateKey, 'audit', encode([1, 0, new Uint8Array(32), 1, new Uint8Array(32), new Uint8Array(32), x('00'), 1, 'r'.repeat(257), new Uint8Array(32), new Uint8Array(32)]));
  await rejects(pod.parseAuditEntry(bad, spki), 'malformed');
  const bad2 = await pod.signStructure(k.privateKey, 'audit', encode([1, 0, new Uint8Array(32), 1, new Uint8Array(32), new Uint8Array(32), x('00'), 4, 'r', new Uint8Array(32), new Uint8Array(32)]));
  await rejects(pod.parseAuditEntry(bad2, spki), 'malformed');
  // An empty log verifies to the zero head.
  assert.deepEqual((await pod.verifyAuditLog({ entries: [], receiptKeySpki: spki })).head, new Uint8Array(32));
});
