// Tests of the in-page attestation verifier (app/lib/attest.js) and its DER reader (app/lib/der.js).
//
// They follow attestation-verifier/tests/real_documents.rs: real AWS documents verify at their own timestamps and
// fail now, every rejection rule has a case, and single-byte changes fail. A synthetic chain made here with
// WebCrypto covers the certificate rules that no real document breaks. Fixtures: test/fixtures/attest/README.md.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decode, encode } from '../app/lib/cbor.js';
import {
  verifyAttestation,
  parsePcrFile,
  podBinding,
  pemToDer,
  isDebug,
  toHex,
  AttestationError,
  AWS_NITRO_ROOT_G1_PEM,
  AWS_NITRO_ROOT_G1_SHA256,
  LIMITS,
} from '../app/lib/attest.js';
import {
  DerReader,
  DerError,
  ecdsaDerToRaw,
  time as derTime,
  oid as derOid,
  parseCertificate,
  pemToDer as pemToDerLabel,
} from '../app/lib/der.js';

const subtle = globalThis.crypto.subtle;
const FIXTURES = new URL('./fixtures/attest/', import.meta.url);
// A plain Uint8Array copy: Node's Buffer is a Uint8Array whose slice() shares memory.
const load = (name) => new Uint8Array(readFileSync(new URL(name, FIXTURES)));
const text = (name) => readFileSync(new URL(name, FIXTURES), 'utf8');
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

const AWS_ROOT = pemToDer(text('aws-nitro-root-g1.pem'));
const MOCK_ROOT = pemToDer(text('mock/mock-root.pem'));

/** Expects `promise` to reject with an AttestationError of `code` (and `extra` properties, if given). */
async function refuses(promise, code, extra = {}, label = '') {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof AttestationError, `${label}: not an AttestationError: ${e}`);
    assert.equal(e.code, code, `${label}: ${e.message}`);
    for (const [k, v] of Object.entries(extra)) assert.equal(e[k], v, `${label}: ${k}`);
    return true;
  });
}

// ---- Real documents --------------------------------------------------------------------------------------------

const Z = '00'.repeat(48);

/** The real documents, with PCR0, PCR1, PCR2 and PCR8 as the fixtures' README lists them. */
const VECTORS = [
  { file: 'evervault-debug-2022-10-12.cbor', ts: 1665582606081, debug: true, pcrs: [Z, Z, Z, Z], pk: true, ud: true, nonce: false },
  {
    file: 'evervault-prod-2022-10-13.cbor', ts: 1665651482136, debug: false, pk: false, ud: false, nonce: true,
    pcrs: [
      'f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b',
      'bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f',
      'd8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a',
      '8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a79157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb',
    ],
  },
  {
    file: 'evervault-tlscert-san-2023-01-18.cbor', ts: 1674047239280, debug: false, pk: false, ud: true, nonce: true,
    pcrs: [
      'd265a83faa7b4fa0d73b82b6d06253e894445922937d0ee5a74fe4891da9817611a71e71b98e5329232902de3cf419af',
      'bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f',
      'e4f634d24ad83b7f6e49fe283bafdb220f6252fb4a278a858e19d15b7cd0f263b9168ed0bacefb4444266df9f9a77f24',
      '97c5395a83c0d6a04d53ff962663c714c178c24500bf97f78456ed3721d922cf3f940614da4bb90107c439bc4a1443ca',
    ],
  },
  { file: 'evervault-debug-2023-09-18.cbor', ts: 1695049410860, debug: true, pcrs: [Z, Z, Z, Z], pk: false, ud: true, nonce: true },
  {
    file: 'marlin-nitroprover-2024-02-26.cbor', ts: 1708930921439, debug: false, pk: true, ud: true, nonce: false,
    pcrs: [
      '17bf8f048519797be90497001a7559a3d555395937117d76f8baaedf56ca6d97952de79479bc0c76e5d176d20f663790',
      '5d3938eb05288e20a981038b1861062ff4174884968a39aee5982b312894e60561883576cc7381d1a7d05b809936bd16',
      '249037310daa90f4eb0703e7b105a241fdb09f12d3c40b7aea2f39e57b07b887e6ff4e4f9757943e127e391626b5e4d5',
      Z,
    ],
  },
  {
    file: 'marlin-nitroprover-2024-04-03.cbor', ts: 1712149702338, debug: false, pk: true, ud: true, nonce: false,
    pcrs: [
      'ea6ff0cc81650a6a2e5e6b009b058d684600ea08006beafb60a693e2eeb362e3a06039ff8341f0715543672c5c9ffa61',
      '41245c1ef3514f08230e85fd21d97dee1eb2c3cfbca59cabd15b8858bc45c019acbbf1ec737cec472ffd0b0d8040e4ba',
      '861ca1d00bed2c7d8fa0bf5aa11fcb6a002fe729f3123477d470299fc5eb72ae886d33c3d73216064f9dc15e3f7251e2',
      Z,
    ],
  },
  {
    file: 'marlin-nitroprover-2024-04-10.cbor', ts: 1712732941701, debug: false, pk: true, ud: true, nonce: false,
    pcrs: [
      'ea6ff0cc81650a6a2e5e6b009b058d684600ea08006beafb60a693e2eeb362e3a06039ff8341f0715543672c5c9ffa61',
      '41245c1ef3514f08230e85fd21d97dee1eb2c3cfbca59cabd15b8858bc45c019acbbf1ec737cec472ffd0b0d8040e4ba',
      '861ca1d00bed2c7d8fa0bf5aa11fcb6a002fe729f3123477d470299fc5eb72ae886d33c3d73216064f9dc15e3f7251e2',
      Z,
    ],
  },
  {
    file: 'base-nitro-validator-2026-01-03.cbor', ts: 1767472867402, debug: false, pk: false, ud: true, nonce: false,
    pcrs: [
      '4b8d4cf2a99e05ce1b5bddaf9d21cb446eb0e606c5bebd1ebf02b473a22165f7b68b0bb0d1ac5a90f0311e493522cfab',
      '0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa',
      '16efcc1d6952c5b9737eb2ab1751a08412835c5125818bfb55f6367cb3cdca49b13d2a5b6d771de9db1578242e328c6d',
      Z,
    ],
  },
];
const vector = (file) => VECTORS.find((v) => v.file === file);
const MARLIN = vector('marlin-nitroprover-2024-02-26.cbor');
const EVERVAULT_PROD = vector('evervault-prod-2022-10-13.cbor');
const INDEFINITE = vector('base-nitro-validator-2026-01-03.cbor');

/** Expected PCRs {0, 1, 2, 8} of a vector, as a Map of bytes. */
const expectedPcrs = (v) => new Map([0, 1, 2, 8].map((index, i) => [index, hex(v.pcrs[i])]));
/** The options a careful caller would pass for a vector, at its own timestamp. */
const pinned = (v, extra = {}) => ({
  rootsDer: [AWS_ROOT], expectedPcrs: expectedPcrs(v), allowDebug: v.debug, now: v.ts, ...extra,
});
const anyPcrs = (v, extra = {}) => ({ rootsDer: [AWS_ROOT], insecureAnyPcrs: true, allowDebug: true, now: v.ts, ...extra });

test('every real AWS document verifies at its own timestamp with its PCRs', async () => {
  for (const v of VECTORS) {
    const doc = load(v.file);
    const got = await verifyAttestation(doc, pinned(v));
    assert.equal(got.timestamp, v.ts, v.file);
    assert.equal(got.verifiedAt, v.ts, v.file);
    assert.equal(got.debug, v.debug, v.file);
    assert.equal(got.digest, 'SHA384');
    assert.equal(got.pcrs.size, 16, v.file);
    assert.deepEqual([...got.pcrs.keys()], [...Array(16).keys()], `${v.file}: PCRs in index order`);
    assert.equal(toHex(got.pcrs.get(8)), v.pcrs[3], v.file);
    assert.equal(got.publicKey !== null, v.pk, v.file);
    assert.equal(got.userData !== null, v.ud, v.file);
    assert.equal(got.nonce !== null, v.nonce, v.file);
    assert.match(got.moduleId, /^i-/, v.file);
    assert.equal(got.rootSha256, AWS_NITRO_ROOT_G1_SHA256);
    assert.equal(got.cabundle.length, 4);
    assert.ok(Object.isFrozen(got));
    // The same at a Date, at 'document', tagged with 18, and with a policy that pins no image.
    await verifyAttestation(doc, pinned(v, { now: new Date(v.ts) }));
    await verifyAttestation(doc, pinned(v, { now: 'document' }));
    await verifyAttestation(concat([0xd2], doc), anyPcrs(v));
  }
});

test('every real AWS document fails at the current time', async () => {
  for (const v of VECTORS) {
    await refuses(verifyAttestation(load(v.file), pinned(v, { now: undefined })), 'expired', {}, v.file);
    await refuses(verifyAttestation(load(v.file), pinned(v, { now: new Date() })), 'expired', {}, v.file);
  }
});

test('the AWS root is the default pin, and the embedded PEM is the published one', async () => {
  const der = pemToDer(AWS_NITRO_ROOT_G1_PEM);
  assert.deepEqual(der, AWS_ROOT);
  assert.equal(toHex(new Uint8Array(await subtle.digest('SHA-256', der))), AWS_NITRO_ROOT_G1_SHA256);
  const { rootsDer, ...rest } = pinned(MARLIN);
  assert.ok(rootsDer);
  const got = await verifyAttestation(load(MARLIN.file), rest);
  assert.equal(got.rootSha256, AWS_NITRO_ROOT_G1_SHA256);
});

test('debug-mode documents are refused unless allowDebug', async () => {
  for (const v of VECTORS.filter((x) => x.debug)) {
    const doc = load(v.file);
    await refuses(verifyAttestation(doc, pinned(v, { allowDebug: false })), 'debug_enclave', {}, v.file);
    await refuses(verifyAttestation(doc, anyPcrs(v, { allowDebug: false })), 'debug_enclave', {}, v.file);
    assert.equal((await verifyAttestation(doc, pinned(v, { allowDebug: true }))).debug, true);
  }
  const zero = new Uint8Array(48);
  const one = new Uint8Array(48).fill(1);
  assert.equal(isDebug(new Map([[0, zero], [1, zero], [2, zero], [3, one]])), true);
  assert.equal(isDebug(new Map([[0, zero], [1, one], [2, zero]])), false);
  assert.equal(isDebug(new Map([[0, zero], [1, zero]])), false);
});

test('a single changed PCR byte, or an expected PCR the document lacks, fails with pcr_mismatch', async () => {
  for (const v of [MARLIN, EVERVAULT_PROD, INDEFINITE]) {
    const doc = load(v.file);
    for (const [slot, index] of [0, 1, 2, 8].entries()) {
      for (const position of [0, 47]) {
        const bytes = hex(v.pcrs[slot]);
        bytes[position] ^= 0x01;
        const pcrs = new Map([...expectedPcrs(v), [index, bytes]]);
        const label = `${v.file} PCR${index}`;
        await refuses(verifyAttestation(doc, pinned(v, { expectedPcrs: pcrs })), 'pcr_mismatch', { index }, label);
      }
    }
    await refuses(verifyAttestation(doc, pinned(v, { expectedPcrs: { 0: v.pcrs[0], 20: Z } })), 'pcr_mismatch', { index: 20 });
    // A PCR file that pins no image (only PCR3 or PCR4, say) is refused before the document is looked at.
    await refuses(verifyAttestation(doc, pinned(v, { expectedPcrs: { 20: Z } })), 'options');
    await refuses(verifyAttestation(doc, pinned(v, { expectedPcrs: { 2: v.pcrs[2] } })), 'options');
  }
  // Hex forms of the expectation are accepted too.
  const mixed = { PCR0: MARLIN.pcrs[0].toUpperCase(), 2: MARLIN.pcrs[2] };
  await verifyAttestation(load(MARLIN.file), pinned(MARLIN, { expectedPcrs: mixed }));
});

test('a wrong root is refused, and several pinned roots may be given', async () => {
  const doc = load(MARLIN.file);
  await refuses(verifyAttestation(doc, pinned(MARLIN, { rootsDer: [MOCK_ROOT] })), 'wrong_root', { position: 'cabundle[0]' });
  const got = await verifyAttestation(load(MARLIN.file), pinned(MARLIN, { rootsDer: [MOCK_ROOT, AWS_ROOT] }));
  assert.equal(got.rootSha256, AWS_NITRO_ROOT_G1_SHA256);
});

test('the nonce must be present and equal', async () => {
  const v = EVERVAULT_PROD;
  const doc = load(v.file);
  const nonce = (await verifyAttestation(doc, pinned(v))).nonce;
  assert.equal(nonce.length, 256);
  await verifyAttestation(doc, pinned(v, { nonce }));
  const wrong = Uint8Array.from(nonce);
  wrong[0] ^= 1;
  await refuses(verifyAttestation(doc, pinned(v, { nonce: wrong })), 'nonce');
  await refuses(verifyAttestation(doc, pinned(v, { nonce: nonce.subarray(1) })), 'nonce');
  await refuses(verifyAttestation(load(MARLIN.file), pinned(MARLIN, { nonce: new Uint8Array(32).fill(1) })), 'nonce');
});

test('stale and future documents are refused when maxAgeMs is given', async () => {
  const v = MARLIN;
  const doc = load(v.file);
  const policy = (now) => pinned(v, { now, maxAgeMs: 300_000 });
  await verifyAttestation(doc, policy(v.ts + 299_000));
  await refuses(verifyAttestation(doc, policy(v.ts + 600_000)), 'stale');
  // Two minutes before its own timestamp (the leaf is already valid then): from the future.
  await refuses(verifyAttestation(doc, policy(v.ts - 120_000)), 'future');
  await verifyAttestation(doc, policy(v.ts - 30_000));
  await refuses(verifyAttestation(doc, pinned(v, { now: 'document', maxAgeMs: 1 })), 'options');
  // What the page does: certificates at the document's time, the document's age by the local clock. A document
  // whose certificates were valid long ago (a leaked, since expired key signing a fresh nonce) is refused.
  const page = (clockMs) => pinned(v, { now: 'document', clockMs, maxAgeMs: 300_000, maxFutureMs: 300_000 });
  await verifyAttestation(doc, page(v.ts + 60_000));
  await verifyAttestation(doc, page(v.ts - 240_000));
  await refuses(verifyAttestation(doc, page(v.ts + 86_400_000)), 'stale');
  await refuses(verifyAttestation(doc, page(v.ts - 400_000)), 'future');
});

test('expected public_key and user_data must be bound', async () => {
  const v = MARLIN;
  const doc = load(v.file);
  const got = await verifyAttestation(doc, pinned(v));
  await verifyAttestation(doc, pinned(v, { publicKey: got.publicKey, userData: got.userData }));
  await refuses(verifyAttestation(doc, pinned(v, { publicKey: new Uint8Array(32).fill(1) })), 'public_key');
  await refuses(verifyAttestation(doc, pinned(v, { userData: new Uint8Array(4).fill(1) })), 'user_data');
  const p = EVERVAULT_PROD;
  await refuses(verifyAttestation(load(p.file), pinned(p, { publicKey: got.publicKey })), 'public_key');
  await refuses(verifyAttestation(load(p.file), pinned(p, { userData: got.userData })), 'user_data');
});

test('certificates outside their validity are refused, with the position named', async () => {
  const v = MARLIN;
  const doc = load(v.file);
  // The leaf lives three hours: four hours later it has expired (the intermediates are still valid).
  await refuses(verifyAttestation(doc, pinned(v, { now: v.ts + 4 * 3600_000 })), 'expired', { position: 'leaf' });
  await refuses(verifyAttestation(doc, pinned(v, { now: v.ts - 3600_000 })), 'not_yet_valid', { position: 'leaf' });
});

test('options a caller can get wrong are refused', async () => {
  const doc = load(MARLIN.file);
  const { expectedPcrs: _omit, ...noPcrs } = pinned(MARLIN);
  await refuses(verifyAttestation(doc, noPcrs), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { expectedPcrs: new Map() })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { insecureAnyPcrs: true })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { expectedPcrs: { 32: Z } })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { expectedPcrs: { 0: 'ab'.repeat(47) } })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { expectedPcrs: { 0: 'zz'.repeat(48) } })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { now: 'yesterday' })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { now: NaN })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { rootsDer: [] })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { rootsDer: AWS_ROOT })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { rootsDer: [AWS_ROOT.subarray(1)] })), 'options');
  await refuses(verifyAttestation(doc, pinned(MARLIN, { nonce: 'abcd' })), 'options');
  await refuses(verifyAttestation([...doc], pinned(MARLIN)), 'options');
  // An ArrayBuffer is accepted as well as a Uint8Array.
  await verifyAttestation(doc.buffer.slice(0), pinned(MARLIN));
});

test('the input is copied before verification awaits anything', async () => {
  const doc = load(MARLIN.file);
  const pending = verifyAttestation(doc, pinned(MARLIN));
  doc.fill(0);
  const got = await pending;
  assert.equal(got.timestamp, MARLIN.ts);
});

// ---- One test per rejection rule, on an edited real document ---------------------------------------------------

/** The four parts of a COSE_Sign1, as bytes (the unprotected header raw). */
function split(doc) {
  const [protectedBytes, , payload, signature] = decode(doc, { allowIndefinite: true });
  return { protectedBytes, unprotected: Uint8Array.of(0xa0), payload, signature };
}

function join({ protectedBytes, unprotected, payload, signature }) {
  return concat([0x84], encode(protectedBytes), unprotected, encode(payload), encode(signature));
}

/** Payload entries as [key, raw CBOR value]. */
function entries(payload) {
  return [...decode(payload, { allowIndefinite: true })].map(([k, v]) => [k, encode(v)]);
}

/** A definite-length map from [key, raw value] entries, duplicates allowed. */
function rawMap(list) {
  assert.ok(list.length < 24);
  return concat([0xa0 + list.length], ...list.flatMap(([k, v]) => [encode(k), v]));
}

/** The real document with its payload rebuilt by `edit(entries) -> entries`. */
function withPayload(v, edit) {
  const parts = split(load(v.file));
  return join({ ...parts, payload: rawMap(edit(entries(parts.payload))) });
}

const replace = (field, raw) => (list) => list.map(([k, val]) => [k, k === field ? raw : val]);

test('rule: tag other than 18, indefinite or wrong-length arrays, trailing bytes, oversize input', async () => {
  const v = MARLIN;
  const doc = load(v.file);
  await refuses(verifyAttestation(concat([0xd1], doc), anyPcrs(v)), 'cose');
  await refuses(verifyAttestation(concat([0x9f], doc.subarray(1), [0xff]), anyPcrs(v)), 'cose');
  await refuses(verifyAttestation(concat([0x83], doc.subarray(1, doc.length - 99)), anyPcrs(v)), 'cose');
  await refuses(verifyAttestation(concat(doc, [0x00]), anyPcrs(v)), 'cose');
  await refuses(verifyAttestation(new Uint8Array(LIMITS.MAX_DOCUMENT_LEN + 1), anyPcrs(v)), 'cose');
  await refuses(verifyAttestation(new Uint8Array(0), anyPcrs(v)), 'cose');
  const parts = split(doc);
  await refuses(verifyAttestation(join({ ...parts, signature: parts.signature.subarray(1) }), anyPcrs(v)), 'cose');
});

test('rule: the protected header must be exactly {1: -35}', async () => {
  const v = MARLIN;
  const parts = split(load(v.file));
  assert.equal(toHex(parts.protectedBytes), 'a1013822');
  for (const h of ['a1013823', 'a10126', 'a0', 'a20138220440', 'a101382200', '8101', '', 'a1013822'.slice(0, 6)]) {
    await refuses(verifyAttestation(join({ ...parts, protectedBytes: hex(h) }), anyPcrs(v)), 'cose', {}, h);
  }
});

test('rule: the unprotected header must be empty (an empty indefinite map is empty)', async () => {
  const v = MARLIN;
  const parts = split(load(v.file));
  await refuses(verifyAttestation(join({ ...parts, unprotected: hex('a10440') }), anyPcrs(v)), 'cose');
  await refuses(verifyAttestation(join({ ...parts, unprotected: hex('80') }), anyPcrs(v)), 'cose');
  await verifyAttestation(join({ ...parts, unprotected: hex('bfff') }), anyPcrs(v));
  await verifyAttestation(join(parts), anyPcrs(v));
});

test('rule: null is absent for optional fields and missing for required ones', async () => {
  const v = MARLIN;
  assert.equal((await verifyAttestation(withPayload(v, (l) => l), pinned(v))).nonce, null);
  for (const field of ['module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle']) {
    const doc = withPayload(v, replace(field, Uint8Array.of(0xf6)));
    await refuses(verifyAttestation(doc, anyPcrs(v)), 'payload', {}, field);
    const dropped = withPayload(v, (l) => l.filter(([k]) => k !== field));
    await refuses(verifyAttestation(dropped, anyPcrs(v)), 'payload', {}, field);
  }
});

test('rule: duplicate, unknown and mistyped fields are refused', async () => {
  const v = MARLIN;
  await refuses(verifyAttestation(withPayload(v, (l) => [...l, ['nonce', hex('4107')]]), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, (l) => [...l, ['extra', hex('00')]]), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, (l) => [...l, [7, hex('00')]]), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('timestamp', hex('6131'))), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('timestamp', hex('20'))), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('digest', encode('SHA256'))), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('module_id', encode(''))), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('public_key', encode(new Uint8Array(0)))), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('cabundle', encode([]))), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('pcrs', encode(new Map()))), anyPcrs(v)), 'payload');
  const pcrs = (m) => withPayload(v, replace('pcrs', encode(m)));
  await refuses(verifyAttestation(pcrs(new Map([[32, new Uint8Array(48)]])), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(pcrs(new Map([[-1, new Uint8Array(48)]])), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(pcrs(new Map([[0, new Uint8Array(47)]])), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(pcrs(new Map([['0', new Uint8Array(48)]])), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('pcrs', hex('a2005830' + Z + '005830' + Z))), anyPcrs(v)), 'payload');
  await refuses(verifyAttestation(withPayload(v, replace('cabundle', encode(Array(9).fill(hex('00'))))), anyPcrs(v)), 'payload');
});

test('rule: oversize fields are refused', async () => {
  const v = MARLIN;
  const big = encode(new Uint8Array(1025).fill(7));
  for (const field of ['user_data', 'nonce', 'public_key', 'certificate']) {
    await refuses(verifyAttestation(withPayload(v, replace(field, big)), anyPcrs(v)), 'payload', {}, field);
  }
  await refuses(verifyAttestation(withPayload(v, replace('module_id', encode('i'.repeat(256)))), anyPcrs(v)), 'payload');
  // 1024 bytes is the schema's limit and still parses (the signature then fails, as the payload changed).
  await refuses(verifyAttestation(withPayload(v, replace('nonce', encode(new Uint8Array(1024)))), anyPcrs(v)), 'signature');
});

test('rule: a re-encoded payload no longer verifies (the signature covers the original bytes)', async () => {
  // The indefinite-length payload re-encoded as a definite map holds the same values.
  const v = INDEFINITE;
  assert.equal(split(load(v.file)).payload[0], 0xbf);
  await refuses(verifyAttestation(withPayload(v, (l) => l), anyPcrs(v)), 'signature');
});

// ---- Mutations -------------------------------------------------------------------------------------------------

/** Byte ranges of the COSE signature and of each certificate inside a document. */
function regions(doc) {
  const parts = split(doc);
  const find = (needle) => {
    for (let i = 0; i + needle.length <= doc.length; i++) {
      let j = 0;
      while (j < needle.length && doc[i + j] === needle[j]) j++;
      if (j === needle.length) return i;
    }
    throw new Error('not found');
  };
  const payload = decode(parts.payload, { allowIndefinite: true });
  const certs = [payload.get('certificate'), ...payload.get('cabundle')].map((c) => {
    const start = find(c);
    return [start, start + c.length];
  });
  return { sig: [doc.length - 96, doc.length], certs };
}

test('single-byte changes (every 7th byte of two documents) all fail, with the stage that owns the byte', async () => {
  const chainCodes = new Set(['wrong_root', 'chain', 'expired', 'not_yet_valid']);
  for (const v of [MARLIN, INDEFINITE]) {
    const doc = load(v.file);
    const { sig, certs } = regions(doc);
    const mutated = Uint8Array.from(doc);
    let checked = 0;
    for (let i = 3 * (v === INDEFINITE); i < doc.length; i += 7) {
      mutated[i] ^= 0x01;
      let err = null;
      try {
        await verifyAttestation(mutated, anyPcrs(v));
      } catch (e) {
        err = e;
      }
      mutated[i] ^= 0x01;
      assert.ok(err instanceof AttestationError, `${v.file}: flipping byte ${i} still verifies (or threw ${err})`);
      if (i >= sig[0]) assert.equal(err.code, 'signature', `${v.file}: signature byte ${i}: ${err.message}`);
      else if (certs.some(([a, b]) => i >= a && i < b)) {
        assert.ok(chainCodes.has(err.code), `${v.file}: certificate byte ${i}: ${err.code} ${err.message}`);
      }
      checked++;
    }
    assert.ok(checked > 600, `${checked}`);
  }
});

// ---- The mock NSM's document ----------------------------------------------------------------------------------

const MOCK = JSON.parse(text('mock/expected.json'));
const mockDoc = () => load('mock/mock-doc.cbor');
const mockOptions = (extra = {}) => ({
  rootsDer: [MOCK_ROOT],
  expectedPcrs: parsePcrFile(text('mock/pcrs.json')),
  nonce: hex(MOCK.nonce),
  now: 'document',
  ...extra,
});

test('a document from the mock NSM verifies against the mock root, and gives the pod binding', async () => {
  const got = await verifyAttestation(mockDoc(), mockOptions());
  assert.equal(got.debug, false);
  assert.equal(toHex(got.nonce), MOCK.nonce);
  assert.equal(toHex(got.publicKey), MOCK.public_key);
  assert.equal(toHex(got.userData), MOCK.user_data);
  assert.match(got.moduleId, /^i-mock/);
  // At an explicit time inside the three-hour leaf validity, too; not after it.
  await verifyAttestation(mockDoc(), mockOptions({ now: got.timestamp + 3600_000 }));
  const later = mockOptions({ now: got.timestamp + 4 * 3600_000 });
  await refuses(verifyAttestation(mockDoc(), later), 'expired', { position: 'leaf' });
  // Pinned to the AWS root (the default), the mock document is refused.
  await refuses(verifyAttestation(mockDoc(), mockOptions({ rootsDer: undefined })), 'wrong_root');
  await refuses(verifyAttestation(mockDoc(), mockOptions({ nonce: hex(MOCK.nonce).subarray(1) })), 'nonce');

  const binding = await podBinding(got);
  assert.equal(toHex(binding.podKeySpki), MOCK.public_key);
  assert.equal(toHex(binding.receiptKeySpki), MOCK.receipt_key_spki);
  assert.equal(toHex(binding.configHash), MOCK.config_hash);
  const fp = toHex(new Uint8Array(await subtle.digest('SHA-256', hex(MOCK.public_key))));
  assert.equal(binding.fingerprint, fp);
  assert.equal(toHex(binding.fingerprintBytes), fp);
  // The bound keys import as what SPEC §2.2 says they are.
  await subtle.importKey('spki', binding.podKeySpki, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
  await subtle.importKey('spki', binding.receiptKeySpki, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
});

test('podBinding refuses documents that carry no Secure Pod binding', async () => {
  // Marlin binds a 32-byte raw key and JSON user data; evervault-prod binds nothing.
  await refuses(podBinding(await verifyAttestation(load(MARLIN.file), pinned(MARLIN))), 'binding');
  await refuses(podBinding(await verifyAttestation(load(EVERVAULT_PROD.file), pinned(EVERVAULT_PROD))), 'binding');
  const got = await verifyAttestation(mockDoc(), mockOptions());
  const fake = (userData, publicKey = got.publicKey) => ({ ...got, userData, publicKey });
  await refuses(podBinding(fake(encode([hex(MOCK.receipt_key_spki), new Uint8Array(31)]))), 'binding');
  await refuses(podBinding(fake(encode([hex(MOCK.receipt_key_spki)]))), 'binding');
  await refuses(podBinding(fake(concat(hex(MOCK.user_data), [0]))), 'binding');
  await refuses(podBinding(fake(encode([new Uint8Array(91), new Uint8Array(32)]))), 'binding');
  await refuses(podBinding(fake(hex(MOCK.user_data), new Uint8Array(91))), 'binding');
  await refuses(podBinding({}), 'options');
});

// ---- PCR files -------------------------------------------------------------------------------------------------

test('parsePcrFile reads the formats attest-verify --pcrs reads, and nothing else', () => {
  const p = parsePcrFile(JSON.stringify({ PCR0: 'ab'.repeat(48), PCR2: 'CD'.repeat(48) }));
  assert.deepEqual([...p.keys()], [0, 2]);
  assert.equal(toHex(p.get(2)), 'cd'.repeat(48));
  const nitroCli = JSON.stringify({
    Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: Z, PCR1: '11'.repeat(48), PCR2: '22'.repeat(48) },
  });
  assert.equal(parsePcrFile(nitroCli).size, 3);
  assert.equal(parsePcrFile(text('mock/pcrs.json')).size, 3);
  for (const bad of [
    '{"PCR32": "00"}', '{"PCR00": "00"}', '{"pcr0": "00"}', '{"PCR+1": "00"}', '{"PCR1 ": "00"}',
    JSON.stringify({ PCR0: 'ab'.repeat(47) }), JSON.stringify({ PCR0: `${'ab'.repeat(47)}zz` }), '{"PCR0": 1}',
    '["PCR0"]', 'not json', 'null', JSON.stringify({ Measurements: { PCR0: Z }, PCR1: Z }), '{"Measurements": []}',
    ' '.repeat(64 * 1024 + 1),
  ]) {
    assert.throws(() => parsePcrFile(bad), (e) => e instanceof AttestationError && e.code === 'pcr_file', bad.slice(0, 40));
  }
  assert.throws(() => parsePcrFile(undefined), (e) => e.code === 'pcr_file');
});

test('the PCR file format drives the policy', async () => {
  const v = MARLIN;
  const file = JSON.stringify({ PCR0: v.pcrs[0], PCR1: v.pcrs[1], PCR2: v.pcrs[2] });
  await verifyAttestation(load(v.file), pinned(v, { expectedPcrs: parsePcrFile(file) }));
  const wrong = JSON.stringify({ PCR0: v.pcrs[1] });
  await refuses(verifyAttestation(load(v.file), pinned(v, { expectedPcrs: parsePcrFile(wrong) })), 'pcr_mismatch', { index: 0 });
});

// ---- A synthetic chain, for the certificate rules no real document breaks ----------------------------------------

/** DER TLV with a one-byte tag. */
function tlv(tag, ...parts) {
  const body = concat(...parts);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return concat([tag], len, body);
}
const seq = (...p) => tlv(0x30, ...p);
const derInt = (n) => tlv(0x02, n < 0x80 ? [n] : [0, n]);
const derOidBytes = (dotted) => {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const arc of rest) {
    const groups = [];
    let x = arc;
    do {
      groups.unshift(x & 0x7f);
      x = Math.floor(x / 128);
    } while (x > 0);
    out.push(...groups.map((g, i) => (i < groups.length - 1 ? g | 0x80 : g)));
  }
  return tlv(0x06, out);
};
const utf8 = (s) => tlv(0x0c, new TextEncoder().encode(s));
const name = (cn) => seq(tlv(0x31, seq(derOidBytes('2.5.4.3'), utf8(cn))));
const utcTime = (ms) => tlv(0x17, new TextEncoder().encode(new Date(ms).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z'));
const ALG = { sha384: seq(derOidBytes('1.2.840.10045.4.3.3')), sha256: seq(derOidBytes('1.2.840.10045.4.3.2')) };

function ext(id, critical, value) {
  return seq(derOidBytes(id), critical ? tlv(0x01, [0xff]) : new Uint8Array(0), tlv(0x04, value));
}
const NONE = new Uint8Array(0);
const bcExt = (ca, pathLen) =>
  ext('2.5.29.19', true, seq(ca ? tlv(0x01, [0xff]) : NONE, pathLen === undefined ? NONE : derInt(pathLen)));
// keyUsage bits: 0 digitalSignature, 5 keyCertSign, 6 cRLSign.
const kuExt = (bits) => {
  let v = 0;
  for (const b of bits) v |= 0x80 >> b;
  return ext('2.5.29.15', true, tlv(0x03, [1, v]));
};

function rawToDer(raw) {
  const int = (b) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    const v = b.subarray(i);
    return tlv(0x02, v[0] >= 0x80 ? concat([0], v) : v);
  };
  return seq(int(raw.subarray(0, 48)), int(raw.subarray(48)));
}

const T = 1_700_000_000_000;
const HOUR = 3600_000;
let keys;
async function getKeys() {
  if (!keys) {
    const gen = () => subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
    keys = { root: await gen(), inter: await gen(), leaf: await gen(), other: await gen() };
  }
  return keys;
}

async function makeCert(c) {
  const spki = new Uint8Array(await subtle.exportKey('spki', c.key.publicKey));
  const alg = ALG[c.alg ?? 'sha384'];
  const tbs = seq(
    c.version === 1 ? new Uint8Array(0) : tlv(0xa0, derInt(2)),
    derInt(c.serial ?? 1),
    alg,
    name(c.issuer),
    seq(utcTime(c.from), utcTime(c.to)),
    name(c.subject),
    spki,
    tlv(0xa3, seq(...c.exts)),
  );
  const hash = c.alg === 'sha256' ? 'SHA-256' : 'SHA-384';
  const raw = new Uint8Array(await subtle.sign({ name: 'ECDSA', hash }, c.signer.privateKey, tbs));
  return seq(tbs, alg, tlv(0x03, concat([0], rawToDer(raw))));
}

/**
 * A document signed by a synthetic chain root → intermediate → leaf. `tweak` overrides fields of the three
 * certificate descriptions, of the payload (`payload`) or of the COSE signer (`coseKey`).
 */
async function synthetic(tweak = {}) {
  const k = await getKeys();
  const root = {
    subject: 'test root', issuer: 'test root', key: k.root, signer: k.root,
    from: T - 365 * 24 * HOUR, to: T + 3650 * 24 * HOUR, exts: [bcExt(true, 1), kuExt([5, 6])], ...tweak.root,
  };
  const inter = {
    subject: 'test intermediate', issuer: 'test root', key: k.inter, signer: k.root,
    from: T - 24 * HOUR, to: T + 24 * HOUR, exts: [bcExt(true, 0), kuExt([0, 5, 6])], ...tweak.inter,
  };
  const leaf = {
    subject: 'test leaf', issuer: 'test intermediate', key: k.leaf, signer: k.inter,
    from: T - HOUR, to: T + 2 * HOUR, exts: [bcExt(false), kuExt([0])], ...tweak.leaf,
  };
  const [rootDer, interDer, leafDer] = [await makeCert(root), await makeCert(inter), await makeCert(leaf)];
  const pcrs = new Map([...Array(16).keys()].map((i) => [i, new Uint8Array(48).fill(i < 3 ? 0xa0 + i : 0)]));
  const payload = encode(new Map(Object.entries({
    module_id: 'i-synthetic-enc0', digest: 'SHA384', timestamp: T, pcrs, certificate: leafDer, cabundle: [rootDer, interDer],
    public_key: null, user_data: null, nonce: null, ...tweak.payload,
  })));
  const protectedBytes = hex('a1013822');
  const toSign = encode(['Signature1', protectedBytes, new Uint8Array(0), payload]);
  const signer = (tweak.coseKey ?? k.leaf).privateKey;
  const signature = new Uint8Array(await subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, signer, toSign));
  return { doc: encode([protectedBytes, new Map(), payload, signature]), rootDer };
}

const synthOptions = (rootDer, extra = {}) => ({ rootsDer: [rootDer], insecureAnyPcrs: true, now: T, ...extra });

test('synthetic chain: a well-formed chain verifies, and the builder is sound', async () => {
  const { doc, rootDer } = await synthetic();
  const got = await verifyAttestation(doc, synthOptions(rootDer));
  assert.equal(got.moduleId, 'i-synthetic-enc0');
  assert.equal(got.cabundle.length, 2);
  await verifyAttestation(doc, synthOptions(rootDer, { expectedPcrs: { 0: 'a0'.repeat(48) }, insecureAnyPcrs: undefined }));
});

test('synthetic chain: every certificate rule of chain.rs is enforced', async () => {
  const cases = [
    ['the leaf is a CA', { leaf: { exts: [bcExt(true), kuExt([0])] } }, 'chain', 'leaf'],
    ['the leaf lacks digitalSignature', { leaf: { exts: [bcExt(false), kuExt([2])] } }, 'chain', 'leaf'],
    ['an intermediate without basicConstraints', { inter: { exts: [kuExt([5])] } }, 'chain', 'cabundle[1]'],
    ['an intermediate with cA false', { inter: { exts: [bcExt(false), kuExt([5])] } }, 'chain', 'cabundle[1]'],
    ['an intermediate without keyUsage', { inter: { exts: [bcExt(true, 0)] } }, 'chain', 'cabundle[1]'],
    ['an intermediate without keyCertSign', { inter: { exts: [bcExt(true, 0), kuExt([0])] } }, 'chain', 'cabundle[1]'],
    ['the root with pathLen 0 above an intermediate', { root: { exts: [bcExt(true, 0), kuExt([5])] } }, 'chain', 'cabundle[0]'],
    ['an unknown critical extension', { leaf: { exts: [bcExt(false), kuExt([0]), ext('1.2.3.4', true, tlv(0x05))] } }, 'chain', 'leaf'],
    ['a repeated extension', { leaf: { exts: [bcExt(false), kuExt([0]), kuExt([0])] } }, 'chain', 'leaf'],
    ['a malformed basicConstraints', { leaf: { exts: [ext('2.5.29.19', true, tlv(0x04)), kuExt([0])] } }, 'chain', 'leaf'],
    ['ecdsa-with-SHA256', { leaf: { alg: 'sha256' } }, 'chain', 'leaf'],
    ['a version 1 certificate', { leaf: { version: 1 } }, 'chain', 'leaf'],
    ['an issuer that is not the parent', { leaf: { issuer: 'someone else' } }, 'chain', 'leaf'],
    ['a leaf signed by the wrong key', { leaf: { signer: 'other' } }, 'chain', 'leaf'],
    ['an intermediate that has expired', { inter: { to: T - 1 } }, 'expired', 'cabundle[1]'],
    ['a root that is not yet valid', { root: { from: T + 1000 } }, 'not_yet_valid', 'cabundle[0]'],
  ];
  const k = await getKeys();
  for (const [label, tweak, code, position] of cases) {
    if (tweak.leaf?.signer === 'other') tweak.leaf.signer = k.other;
    const { doc, rootDer } = await synthetic(tweak);
    await refuses(verifyAttestation(doc, synthOptions(rootDer)), code, { position }, label);
  }
  // An unknown extension that is not critical is fine; so is an explicit (if non-DER) critical FALSE, as in Rust.
  const explicitFalse = seq(derOidBytes('1.2.3.5'), tlv(0x01, [0]), tlv(0x04, tlv(0x05)));
  const fine = await synthetic({ leaf: { exts: [bcExt(false), kuExt([0]), ext('1.2.3.4', false, tlv(0x05)), explicitFalse] } });
  await verifyAttestation(fine.doc, synthOptions(fine.rootDer));
});

test('synthetic chain: signed by its leaf, timestamp inside the leaf validity, debug image caught', async () => {
  const k = await getKeys();
  const forged = await synthetic({ coseKey: k.inter });
  await refuses(verifyAttestation(forged.doc, synthOptions(forged.rootDer)), 'signature');
  const late = await synthetic({ payload: { timestamp: T + 3 * HOUR } });
  await refuses(verifyAttestation(late.doc, synthOptions(late.rootDer)), 'timestamp');
  // At the document's own time the leaf has expired: the chain refuses it before the timestamp rule.
  await refuses(verifyAttestation(late.doc, synthOptions(late.rootDer, { now: 'document' })), 'expired', { position: 'leaf' });
  const zero = new Map([...Array(16).keys()].map((i) => [i, new Uint8Array(48).fill(i < 3 ? 0 : 1)]));
  const dbg = await synthetic({ payload: { pcrs: zero } });
  await refuses(verifyAttestation(dbg.doc, synthOptions(dbg.rootDer)), 'debug_enclave');
  assert.equal((await verifyAttestation(dbg.doc, synthOptions(dbg.rootDer, { allowDebug: true }))).debug, true);
});

// ---- der.js ----------------------------------------------------------------------------------------------------

test('DER reader: lengths are definite, minimal and inside the input', () => {
  const one = (h) => new DerReader(hex(h)).read();
  assert.equal(one('0402aabb').value.length, 2);
  assert.equal(one(`0481${'80'}${'00'.repeat(128)}`).value.length, 128);
  for (const h of [
    '04', '0403aabb', '0480aabb00', '048102aabb', '04820002aabb', '0485010101010101', '1f0100', '0481',
    `04820080${'00'.repeat(128)}`,
  ]) {
    assert.throws(() => one(h), DerError, h);
  }
  const r = new DerReader(hex('0201010201020500'));
  assert.equal(r.read(0x02).value[0], 1);
  assert.throws(() => r.read(0x04), DerError);
});

test('DER reader: ECDSA signatures convert to raw r||s strictly', () => {
  const r = new Uint8Array(48).fill(0x11);
  const s = new Uint8Array(48).fill(0x99);
  const der = rawToDer(concat(r, s));
  assert.deepEqual(ecdsaDerToRaw(der), concat(r, s));
  const short = rawToDer(concat(new Uint8Array(47), [5], s));
  assert.deepEqual(ecdsaDerToRaw(short).subarray(0, 48), concat(new Uint8Array(47), [5]));
  for (const h of [
    '300602010102010100', // trailing byte
    '3006020100020101', // r = 0
    '30060201ff020101', // negative
    '300702020001020101', // non-minimal
    `30360231${'11'.repeat(49)}020101`, // r longer than 48 bytes
    '3006020101040101', // s not an INTEGER
  ]) {
    assert.throws(() => ecdsaDerToRaw(hex(h)), DerError, h);
  }
});

test('DER reader: times and OIDs', () => {
  const t = (tag, s) => derTime({ tag, value: new TextEncoder().encode(s) });
  assert.equal(t(0x17, '491231235959Z'), Date.UTC(2049, 11, 31, 23, 59, 59));
  assert.equal(t(0x17, '500101000000Z'), Date.UTC(1950, 0, 1));
  assert.equal(t(0x18, '20500101000000Z'), Date.UTC(2050, 0, 1));
  assert.equal(t(0x17, '240229120000Z'), Date.UTC(2024, 1, 29, 12));
  for (const [tag, s] of [[0x17, '230229120000Z'], [0x17, '241301000000Z'], [0x17, '2401010000Z'], [0x17, '240101000000+0100'],
    [0x18, '20240101000000.5Z'], [0x17, '240101240000Z'], [0x17, '24010100000aZ'], [0x04, '240101000000Z']]) {
    assert.throws(() => t(tag, s), DerError, s);
  }
  assert.equal(derOid({ tag: 0x06, value: hex('2a8648ce3d040303') }), '1.2.840.10045.4.3.3');
  assert.equal(derOid({ tag: 0x06, value: hex('2b81040022') }), '1.3.132.0.34');
  assert.throws(() => derOid({ tag: 0x06, value: hex('2a80860d') }), DerError);
  assert.throws(() => derOid({ tag: 0x06, value: hex('2a86') }), DerError);
});

test('DER reader: the AWS root parses as the certificate openssl shows', () => {
  const c = parseCertificate(AWS_ROOT);
  assert.equal(c.notBefore, Date.UTC(2019, 9, 28, 13, 28, 5));
  assert.equal(c.notAfter, Date.UTC(2049, 9, 28, 14, 28, 5));
  assert.equal(c.spki.curve, '1.3.132.0.34');
  assert.equal(c.signatureAlgorithm.oid, '1.2.840.10045.4.3.3');
  assert.deepEqual(c.issuer, c.subject);
  const exts = c.extensions.map((e) => [e.oid, e.critical]);
  assert.deepEqual(exts, [['2.5.29.19', true], ['2.5.29.14', false], ['2.5.29.15', true]]);
  assert.throws(() => parseCertificate(concat(AWS_ROOT, [0])), DerError);
  assert.throws(() => parseCertificate(AWS_ROOT.subarray(0, 100)), DerError);
});

test('pemToDer takes exactly one CERTIFICATE block', () => {
  const pem = text('aws-nitro-root-g1.pem');
  assert.deepEqual(pemToDer(`junk before\n${pem}\njunk after`), AWS_ROOT);
  assert.throws(() => pemToDer(pem + pem), AttestationError);
  assert.throws(() => pemToDer(pem.replaceAll('CERTIFICATE', 'PUBLIC KEY')), AttestationError);
  assert.throws(() => pemToDer(pem.replace('MIIC', 'MI!C')), AttestationError);
  assert.throws(() => pemToDer(''), AttestationError);
  assert.deepEqual(pemToDerLabel(pem.replaceAll('CERTIFICATE', 'PUBLIC KEY'), 'PUBLIC KEY'), AWS_ROOT);
});
