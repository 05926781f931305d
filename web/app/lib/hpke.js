// HPKE (RFC 9180) base mode, single shot, as docs/SPEC.md §3.1 fixes it: DHKEM(P-256, HKDF-SHA256),
// HKDF-SHA256, AES-256-GCM (0x0010 / 0x0001 / 0x0002), sequence number 0, empty AAD (all binding goes through
// `info`). The encoding is `enc (65 bytes) ‖ ciphertext ‖ tag`.
//
// WebCrypto has ECDH, HMAC and AES-GCM but no HKDF-Extract or HKDF-Expand on their own (its HKDF does both at
// once), and HPKE's LabeledExtract/LabeledExpand need them separately, so both are built on HMAC-SHA256 here.
// Intermediate secrets are zeroed once used (best effort: JavaScript gives no stronger guarantee).

import { PodFormatError, subtle, concat, utf8 } from './bytes.js';
import { checkP256Spki, SPKI_P256_PREFIX } from './keys.js';

/** Length of an encapsulated key (an uncompressed P-256 point). */
export const ENC_LEN = 65;
/** Length of the AES-GCM tag. */
export const HPKE_TAG_LEN = 16;

const KEM_ID = Uint8Array.of(0x00, 0x10);
const KDF_ID = Uint8Array.of(0x00, 0x01);
/** AEAD ids: the spec's AES-256-GCM, and AES-128-GCM only for RFC 9180 Appendix A.3's test vector. */
const AEADS = { 1: { id: Uint8Array.of(0x00, 0x01), nk: 16 }, 2: { id: Uint8Array.of(0x00, 0x02), nk: 32 } };
const HPKE_V1 = utf8('HPKE-v1');
const KEM_SUITE = concat(utf8('KEM'), KEM_ID);
const hpkeSuite = (aead) => concat(utf8('HPKE'), KEM_ID, KDF_ID, AEADS[aead].id);
const ECDH = { name: 'ECDH', namedCurve: 'P-256' };
/** The order of the P-256 group. */
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

async function hmacKey(key) {
  // HKDF's empty salt means HashLen zero bytes (RFC 5869 §2.2); WebCrypto refuses an empty HMAC key, and HMAC
  // pads keys with zeros anyway, so the two are the same key.
  const k = key.length === 0 ? new Uint8Array(32) : key;
  return subtle.importKey('raw', k, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
}

/**
 * HKDF-Extract with HMAC-SHA256.
 * @param {Uint8Array} salt
 * @param {Uint8Array} ikm
 * @returns {Promise<Uint8Array>} the 32-byte PRK
 */
export async function hkdfExtract(salt, ikm) {
  return new Uint8Array(await subtle.sign('HMAC', await hmacKey(salt), ikm));
}

/**
 * HKDF-Expand with HMAC-SHA256 (at most 255 blocks).
 * @param {Uint8Array} prk
 * @param {Uint8Array} info
 * @param {number} length
 * @returns {Promise<Uint8Array>}
 */
export async function hkdfExpand(prk, info, length) {
  if (length > 255 * 32) throw new PodFormatError('invalid_argument', 'HKDF output too long');
  const key = await hmacKey(prk);
  const out = new Uint8Array(Math.ceil(length / 32) * 32);
  let previous = new Uint8Array(0);
  for (let i = 0; i * 32 < length; i++) {
    const block = new Uint8Array(await subtle.sign('HMAC', key, concat(previous, info, Uint8Array.of(i + 1))));
    out.set(block, i * 32);
    previous.fill(0);
    previous = block;
  }
  previous.fill(0);
  const result = out.slice(0, length);
  out.fill(0);
  return result;
}

function labeledExtract(suite, salt, label, ikm) {
  return hkdfExtract(salt, concat(HPKE_V1, suite, utf8(label), ikm));
}

function labeledExpand(suite, prk, label, info, length) {
  return hkdfExpand(prk, concat(Uint8Array.of(length >> 8, length & 0xff), HPKE_V1, suite, utf8(label), info), length);
}

/** RFC 9180 §4.1 ExtractAndExpand: the KEM's shared secret from the DH output and `enc ‖ pkRm`. */
async function kemSharedSecret(dh, enc, pkR) {
  const prk = await labeledExtract(KEM_SUITE, new Uint8Array(0), 'eae_prk', dh);
  try {
    return await labeledExpand(KEM_SUITE, prk, 'shared_secret', concat(enc, pkR), 32);
  } finally {
    prk.fill(0);
  }
}

/** RFC 9180 §5.1 KeySchedule in base mode: the AEAD key bytes and base nonce. */
async function keySchedule(sharedSecret, info, aead = 2) {
  const suite = hpkeSuite(aead);
  const empty = new Uint8Array(0);
  const pskIdHash = await labeledExtract(suite, empty, 'psk_id_hash', empty);
  const infoHash = await labeledExtract(suite, empty, 'info_hash', info);
  const context = concat(Uint8Array.of(0), pskIdHash, infoHash);
  const secret = await labeledExtract(suite, sharedSecret, 'secret', empty);
  try {
    return {
      key: await labeledExpand(suite, secret, 'key', context, AEADS[aead].nk),
      baseNonce: await labeledExpand(suite, secret, 'base_nonce', context, 12),
    };
  } finally {
    secret.fill(0);
  }
}

async function aeadKey(keyBytes, usage) {
  try {
    return await subtle.importKey('raw', keyBytes, 'AES-GCM', false, [usage]);
  } finally {
    keyBytes.fill(0);
  }
}

function recipientPoint(recipientSpki) {
  checkP256Spki(recipientSpki);
  return recipientSpki.subarray(SPKI_P256_PREFIX.length);
}

async function sealWith(ephemeralPrivate, enc, recipientSpki, info, aad, plaintext, aead = 2) {
  const pkR = recipientPoint(recipientSpki);
  let recipient;
  try {
    recipient = await subtle.importKey('raw', pkR, ECDH, true, []);
  } catch (e) {
    throw new PodFormatError('invalid_public_key', 'the recipient is not a valid P-256 point', { cause: e });
  }
  const dh = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: recipient }, ephemeralPrivate, 256));
  const shared = await kemSharedSecret(dh, enc, pkR);
  dh.fill(0);
  const { key, baseNonce } = await keySchedule(shared, info, aead);
  shared.fill(0);
  const params = { name: 'AES-GCM', iv: baseNonce };
  if (aad.length > 0) params.additionalData = aad;
  const ct = new Uint8Array(await subtle.encrypt(params, await aeadKey(key, 'encrypt'), plaintext));
  return concat(enc, ct);
}

/**
 * Seals `plaintext` to a P-256 recipient (SPEC §3.1), binding `info`; returns `enc ‖ ciphertext ‖ tag`.
 * A fresh ephemeral key is made for every call.
 * @param {Uint8Array} recipientSpki the recipient's P-256 SPKI
 * @param {Uint8Array} info
 * @param {Uint8Array} plaintext
 * @returns {Promise<Uint8Array>}
 */
export async function hpkeSeal(recipientSpki, info, plaintext) {
  recipientPoint(recipientSpki);
  const eph = await subtle.generateKey(ECDH, false, ['deriveBits']);
  const enc = new Uint8Array(await subtle.exportKey('raw', eph.publicKey));
  return sealWith(eph.privateKey, enc, recipientSpki, info, new Uint8Array(0), plaintext);
}

async function openWith(privateKey, recipientSpki, info, aad, sealed, aead = 2) {
  const fail = (cause) => new PodFormatError('decrypt', 'decryption failed', { cause });
  if (!(sealed instanceof Uint8Array) || sealed.length < ENC_LEN + HPKE_TAG_LEN) throw fail();
  const pkR = recipientPoint(recipientSpki);
  const enc = sealed.subarray(0, ENC_LEN);
  let shared;
  try {
    const peer = await subtle.importKey('raw', enc, ECDH, true, []);
    const dh = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: peer }, privateKey, 256));
    shared = await kemSharedSecret(dh, enc, pkR);
    dh.fill(0);
  } catch (e) {
    throw fail(e);
  }
  const { key, baseNonce } = await keySchedule(shared, info, aead);
  shared.fill(0);
  const params = { name: 'AES-GCM', iv: baseNonce };
  if (aad.length > 0) params.additionalData = aad;
  try {
    return new Uint8Array(await subtle.decrypt(params, await aeadKey(key, 'decrypt'), sealed.subarray(ENC_LEN)));
  } catch (e) {
    throw fail(e);
  }
}

/**
 * Opens `enc ‖ ciphertext ‖ tag` with the recipient's private key. Every failure is the same
 * `PodFormatError('decrypt')`, so that a caller cannot learn which step failed.
 * @param {CryptoKey} privateKey the recipient's ECDH P-256 private key (may be non-extractable)
 * @param {Uint8Array} recipientSpki its public key (the KEM context names it, and WebCrypto cannot derive it
 *   from a non-extractable private key)
 * @param {Uint8Array} info
 * @param {Uint8Array} sealed
 * @returns {Promise<Uint8Array>}
 */
export async function hpkeOpen(privateKey, recipientSpki, info, sealed) {
  return openWith(privateKey, recipientSpki, info, new Uint8Array(0), sealed);
}

/**
 * RFC 9180 §7.1.3 DeriveKeyPair for P-256: the private scalar determined by `ikm` (used by SPEC §2.2 for the
 * receipt key; here for test vectors).
 * @param {Uint8Array} ikm
 * @returns {Promise<Uint8Array>} the 32-byte scalar
 */
export async function deriveKeyPairScalar(ikm) {
  const prk = await labeledExtract(KEM_SUITE, new Uint8Array(0), 'dkp_prk', ikm);
  for (let counter = 0; counter < 256; counter++) {
    const candidate = await labeledExpand(KEM_SUITE, prk, 'candidate', Uint8Array.of(counter), 32);
    let n = 0n;
    for (const b of candidate) n = (n << 8n) | BigInt(b);
    if (n !== 0n && n < P256_ORDER) {
      prk.fill(0);
      return candidate;
    }
  }
  throw new PodFormatError('invalid_private_key', 'DeriveKeyPair found no scalar');
}

/**
 * Internals exposed for known-answer tests only (RFC 9180 Appendix A.3, which uses AES-128-GCM: `aead` 1).
 * Never seal with a chosen ephemeral key outside a test: an ephemeral key must never be reused.
 */
export const _hpkeTesting = Object.freeze({
  kemSharedSecret,
  keySchedule,
  /** Seals with a given ephemeral key pair and AAD (RFC test vectors). */
  sealWithEphemeral: (ephemeralPrivate, enc, recipientSpki, info, aad, plaintext, aead) =>
    sealWith(ephemeralPrivate, enc, recipientSpki, info, aad, plaintext, aead),
  /** Opens with AAD and a chosen AEAD (RFC test vectors). */
  openWithAad: (privateKey, recipientSpki, info, aad, sealed, aead) =>
    openWith(privateKey, recipientSpki, info, aad, sealed, aead),
});
