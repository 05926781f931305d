// User keys (docs/SPEC.md §2.1) and signatures (§1) on WebCrypto.
//
// A user holds two private keys, both NON-EXTRACTABLE CryptoKeys: an encryption key (ECDH P-256 for HPKE, the
// default, or RSA-OAEP-4096 with SHA-256 for users whose keys come from existing PKI) and an ECDSA P-256 signing
// key. The object `generateUserKeys` returns holds only CryptoKeys, Uint8Arrays and numbers, so it can be put in
// IndexedDB as it is (CryptoKeys are structured-cloneable and stay non-extractable there).

import { decode, encode, CborError } from './cbor.js';
import {
  PodFormatError, subtle, concat, equalBytes, labeledHash, domainPrefix, toBase64, fromBase64, toHex, fromHex,
  randomBytes, checkBytes, checkUint,
} from './bytes.js';

/** `enc_alg` code of RSA-OAEP-4096 (SHA-256, MGF1-SHA-256). */
export const ENC_RSA_OAEP_4096 = 1;
/** `enc_alg` code of HPKE P-256 (the default). */
export const ENC_HPKE_P256 = 2;
/** Length of a raw `r ‖ s` P-256 signature. */
export const SIGNATURE_LEN = 64;
/** Largest SPKI a bundle may hold (an RSA-4096 SPKI is 550 bytes). */
export const MAX_SPKI_LEN = 1024;
/** RSA encryption keys must have exactly this many bits. */
export const RSA_BITS = 4096;
/** The signature contexts of SPEC §1; a signature made in one never verifies in another. */
export const SIGNATURE_CONTEXTS = Object.freeze(['request', 'membership', 'audit', 'checkpoint', 'receipt']);

/** DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1); the 65-byte point follows. */
export const SPKI_P256_PREFIX = fromHex('3059301306072a8648ce3d020106082a8648ce3d030107034200');
/** Length of a P-256 SPKI as WebCrypto exports it. */
export const SPKI_P256_LEN = SPKI_P256_PREFIX.length + 65;

const ECDSA = { name: 'ECDSA', namedCurve: 'P-256' };
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' };
const ECDH = { name: 'ECDH', namedCurve: 'P-256' };
const RSA_OAEP = { name: 'RSA-OAEP', hash: 'SHA-256' };

/**
 * Decodes CBOR, turning the decoder's errors into `PodFormatError('malformed')`.
 * @param {Uint8Array} bytes
 * @param {string} what
 * @returns {unknown}
 */
export function decodeCbor(bytes, what) {
  try {
    return decode(bytes);
  } catch (e) {
    // Decoding is pure, so any failure is the input's. (cbor.js lets TextDecoder's TypeError for invalid UTF-8
    // escape instead of a CborError; it is caught here too.)
    if (e instanceof CborError || e instanceof TypeError || e instanceof RangeError) {
      throw new PodFormatError('malformed', `${what}: ${e.message}`);
    }
    throw e;
  }
}

/**
 * Checks that a decoded value is an array of `n` elements; returns it.
 * @param {unknown} v
 * @param {number} n
 * @param {string} what
 * @returns {unknown[]}
 */
export function checkArray(v, n, what) {
  if (!Array.isArray(v) || v.length !== n) throw new PodFormatError('malformed', `${what} must be a ${n}-element array`);
  return v;
}

// ---- Signatures (SPEC §1) ------------------------------------------------------------------------------------

function checkContext(context) {
  if (!SIGNATURE_CONTEXTS.includes(context)) {
    throw new PodFormatError('invalid_argument', `unknown signature context ${context}`);
  }
}

/**
 * Checks that `spki` is a P-256 SPKI exactly as WebCrypto writes it (prefix and uncompressed point), which is
 * also the only form the Rust side accepts.
 * @param {Uint8Array} spki
 */
export function checkP256Spki(spki) {
  if (!(spki instanceof Uint8Array) || spki.length !== SPKI_P256_LEN ||
      !equalBytes(spki.subarray(0, SPKI_P256_PREFIX.length), SPKI_P256_PREFIX) ||
      spki[SPKI_P256_PREFIX.length] !== 0x04) {
    throw new PodFormatError('invalid_public_key', 'not a P-256 SubjectPublicKeyInfo');
  }
}

/**
 * Imports an ECDSA P-256 verification key from its SPKI. WebCrypto refuses points that are not on the curve.
 * @param {Uint8Array} spki
 * @returns {Promise<CryptoKey>}
 */
export async function importVerifyKey(spki) {
  checkP256Spki(spki);
  try {
    return await subtle.importKey('spki', spki, ECDSA, true, ['verify']);
  } catch (e) {
    throw new PodFormatError('invalid_public_key', 'the signing key is not a valid P-256 point', { cause: e });
  }
}

/**
 * Signs `message` in `context`: ECDSA P-256/SHA-256 over `"secure-pod/v1/" ‖ context ‖ 0x00 ‖ message`, raw
 * `r ‖ s` (what WebCrypto produces).
 * @param {CryptoKey} privateKey an ECDSA P-256 private key
 * @param {string} context one of {@link SIGNATURE_CONTEXTS}
 * @param {Uint8Array} message
 * @returns {Promise<Uint8Array>} 64 bytes
 */
export async function sign(privateKey, context, message) {
  checkContext(context);
  return new Uint8Array(await subtle.sign(ECDSA_SHA256, privateKey, concat(domainPrefix(context), message)));
}

/**
 * Checks a raw `r ‖ s` signature made in `context`. A signature of the wrong length is `false`; a key that is
 * not a P-256 SPKI throws `invalid_public_key`.
 * @param {Uint8Array | CryptoKey} key the signer's SPKI, or a key from {@link importVerifyKey}
 * @param {string} context one of {@link SIGNATURE_CONTEXTS}
 * @param {Uint8Array} message
 * @param {Uint8Array} signature
 * @returns {Promise<boolean>}
 */
export async function verify(key, context, message, signature) {
  checkContext(context);
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_LEN) return false;
  const k = key instanceof Uint8Array ? await importVerifyKey(key) : key;
  return subtle.verify(ECDSA_SHA256, k, signature, concat(domainPrefix(context), message));
}

/**
 * {@link verify}, throwing `PodFormatError('bad_signature')` when the signature does not verify.
 * @param {Uint8Array | CryptoKey} key
 * @param {string} context
 * @param {Uint8Array} message
 * @param {Uint8Array} signature
 * @returns {Promise<void>}
 */
export async function verifyOrThrow(key, context, message, signature) {
  if (!(await verify(key, context, message, signature))) {
    throw new PodFormatError('bad_signature', `the ${context} signature does not verify`);
  }
}

/**
 * Encodes `[payload: bstr, signature: bstr64]`, the shape of every signed structure.
 * @param {Uint8Array} payload
 * @param {Uint8Array} signature
 * @returns {Uint8Array}
 */
export function encodeSigned(payload, signature) {
  return encode([payload, signature]);
}

/**
 * Splits `[payload: bstr, signature: bstr64]` of at most `max` bytes (the signature is not checked here).
 * @param {Uint8Array} bytes
 * @param {number} max
 * @param {string} what
 * @returns {{payload: Uint8Array, signature: Uint8Array}}
 */
export function decodeSigned(bytes, max, what) {
  if (!(bytes instanceof Uint8Array)) throw new PodFormatError('invalid_argument', `${what} must be a Uint8Array`);
  if (bytes.length > max) throw new PodFormatError('too_large', `${what} is larger than ${max} bytes`);
  const [payload, signature] = checkArray(decodeCbor(bytes, what), 2, `${what} ([payload, signature])`);
  checkBytes(payload, 0, max, `${what} payload`);
  checkBytes(signature, SIGNATURE_LEN, SIGNATURE_LEN, `${what} signature`);
  return { payload, signature };
}

/**
 * Signs `payload` in `context` and encodes `[payload, signature]`.
 * @param {CryptoKey} privateKey
 * @param {string} context
 * @param {Uint8Array} payload
 * @returns {Promise<Uint8Array>}
 */
export async function signStructure(privateKey, context, payload) {
  return encodeSigned(payload, await sign(privateKey, context, payload));
}

// ---- Bundles (SPEC §2.1) -------------------------------------------------------------------------------------

/**
 * @typedef {object} Bundle A validated user key bundle.
 * @property {Uint8Array} bytes the encoded bundle `[1, enc_alg, enc_spki, sign_spki]`
 * @property {number} encAlg 1 (RSA-OAEP-4096) or 2 (HPKE P-256)
 * @property {Uint8Array} encSpki
 * @property {Uint8Array} signSpki
 * @property {Uint8Array} userId `labeled_hash("user-id", bytes)`
 */

/**
 * Imports a user's encryption public key for wrapping, checking it per SPEC §2.1 (a P-256 point on the curve in
 * WebCrypto's SPKI form, or an RSA key of exactly 4096 bits).
 * @param {number} encAlg
 * @param {Uint8Array} spki
 * @returns {Promise<CryptoKey>} an ECDH public key, or an RSA-OAEP (SHA-256) public key with usage `encrypt`
 */
export async function importEncryptionKey(encAlg, spki) {
  if (encAlg === ENC_HPKE_P256) {
    checkP256Spki(spki);
    try {
      return await subtle.importKey('spki', spki, ECDH, true, []);
    } catch (e) {
      throw new PodFormatError('invalid_public_key', 'the encryption key is not a valid P-256 point', { cause: e });
    }
  }
  if (encAlg === ENC_RSA_OAEP_4096) {
    let key;
    try {
      key = await subtle.importKey('spki', spki, RSA_OAEP, true, ['encrypt']);
    } catch (e) {
      throw new PodFormatError('invalid_public_key', 'the encryption key is not an RSA public key', { cause: e });
    }
    if (key.algorithm.modulusLength !== RSA_BITS) {
      throw new PodFormatError('invalid_public_key', `RSA keys must have exactly ${RSA_BITS} bits`);
    }
    return key;
  }
  throw new PodFormatError('malformed', 'unknown encryption algorithm');
}

/**
 * Encodes a bundle `[1, enc_alg, enc_spki, sign_spki]` deterministically.
 * @param {number} encAlg
 * @param {Uint8Array} encSpki
 * @param {Uint8Array} signSpki
 * @returns {Uint8Array}
 */
export function encodeBundle(encAlg, encSpki, signSpki) {
  return encode([1, encAlg, encSpki, signSpki]);
}

/**
 * Parses and validates a key bundle per SPEC §2.1: a four-element array of version 1, a known algorithm, SPKIs
 * of at most 1024 bytes that are valid keys (P-256 on the curve; RSA exactly 4096 bits), and deterministic
 * encoding (re-encoding gives the same bytes, so a user has exactly one id).
 * @param {Uint8Array} bytes
 * @returns {Promise<Bundle>}
 */
export async function parseBundle(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new PodFormatError('invalid_argument', 'a bundle must be a Uint8Array');
  // Two SPKIs of 1024 bytes and a few heads: anything larger cannot be a bundle.
  if (bytes.length > 2 * MAX_SPKI_LEN + 16) throw new PodFormatError('too_large', 'key bundle too large');
  const [version, encAlg, encSpki, signSpki] = checkArray(decodeCbor(bytes, 'key bundle'), 4, 'a key bundle');
  if (version !== 1) throw new PodFormatError('malformed', 'unknown key bundle version');
  checkUint(encAlg, 'enc_alg');
  if (encAlg !== ENC_RSA_OAEP_4096 && encAlg !== ENC_HPKE_P256) {
    throw new PodFormatError('malformed', 'unknown encryption algorithm');
  }
  checkBytes(encSpki, 1, Infinity, 'enc_spki');
  checkBytes(signSpki, 1, Infinity, 'sign_spki');
  if (encSpki.length > MAX_SPKI_LEN || signSpki.length > MAX_SPKI_LEN) throw new PodFormatError('too_large', 'key too large');
  await importEncryptionKey(encAlg, encSpki);
  await importVerifyKey(signSpki);
  if (!equalBytes(encodeBundle(encAlg, encSpki, signSpki), bytes)) {
    throw new PodFormatError('malformed', 'key bundle is not in deterministic encoding');
  }
  return { bytes, encAlg, encSpki, signSpki, userId: await labeledHash('user-id', bytes) };
}

/**
 * The user id of a bundle, `labeled_hash("user-id", bundle)` (the bundle is not validated).
 * @param {Uint8Array} bundle
 * @returns {Promise<Uint8Array>}
 */
export async function userIdOf(bundle) {
  return labeledHash('user-id', bundle);
}

// ---- The CLI's .pub text (client/src/keyfile.rs) -------------------------------------------------------------

/** The first word of a `.pub` file. */
export const PUB_PREFIX = 'secure-pod-user/v1 ';

/**
 * The `.pub` text the CLI writes: `secure-pod-user/v1 <base64 bundle>\n# user id <hex>\n`.
 * @param {Uint8Array} bundle the encoded bundle
 * @returns {Promise<string>}
 */
export async function publicText(bundle) {
  return `${PUB_PREFIX}${toBase64(bundle)}\n# user id ${toHex(await userIdOf(bundle))}\n`;
}

/**
 * Parses `.pub` text: the first line starting with `secure-pod-user/v1 ` holds the base64 bundle, which is
 * validated ({@link parseBundle}). A `# user id <hex>` line, when present, must name the bundle's id (the CLI
 * does not check it; a mismatch means a mixed-up or edited file, so it is refused here).
 * @param {string} text
 * @returns {Promise<Bundle>}
 */
export async function parsePublic(text) {
  if (typeof text !== 'string' || text.length > 8192) {
    throw new PodFormatError('malformed', 'not a Secure Pod public key (.pub) file');
  }
  const lines = text.split('\n').map((l) => l.trim());
  const line = lines.find((l) => l.startsWith(PUB_PREFIX));
  if (line === undefined) throw new PodFormatError('malformed', 'not a Secure Pod public key (.pub) file');
  const bundle = await parseBundle(fromBase64(line.slice(PUB_PREFIX.length).trim()));
  const comment = lines.find((l) => l.startsWith('# user id '));
  if (comment !== undefined && comment.slice('# user id '.length).trim().toLowerCase() !== toHex(bundle.userId)) {
    throw new PodFormatError('malformed', 'the .pub file names a user id that is not its bundle\'s');
  }
  return bundle;
}

// ---- Generating and importing a user's keys ------------------------------------------------------------------

/**
 * @typedef {object} UserKeys A user's keys as the browser keeps them (structured-cloneable: IndexedDB-ready).
 * @property {number} version 1
 * @property {number} encAlg 1 (RSA-OAEP-4096) or 2 (HPKE P-256)
 * @property {CryptoKey} encPrivate non-extractable: ECDH P-256 (`deriveBits`) or RSA-OAEP SHA-256 (`decrypt`)
 * @property {CryptoKey} signPrivate non-extractable ECDSA P-256 (`sign`)
 * @property {Uint8Array} encSpki
 * @property {Uint8Array} signSpki
 * @property {Uint8Array} bundle `[1, enc_alg, enc_spki, sign_spki]`
 * @property {Uint8Array} userId
 */

async function finishKeys(encAlg, encPrivate, encSpki, signPair) {
  const signSpki = new Uint8Array(await subtle.exportKey('spki', signPair.publicKey));
  const bundle = encodeBundle(encAlg, encSpki, signSpki);
  // Validate what was made exactly as a pod will (a key of the wrong size must never be registered).
  const parsed = await parseBundle(bundle);
  return {
    version: 1, encAlg, encPrivate, signPrivate: signPair.privateKey, encSpki, signSpki, bundle, userId: parsed.userId,
  };
}

/**
 * Makes a new user's keys. Private keys are non-extractable; only the public halves leave WebCrypto.
 * @param {{encAlg?: 'p256' | 'rsa'}} [options] `p256` (default: HPKE, ~0.1 ms per document to open) or `rsa`
 *   (RSA-OAEP-4096, ~8 ms per document, and slow to generate)
 * @returns {Promise<UserKeys>}
 */
export async function generateUserKeys({ encAlg = 'p256' } = {}) {
  const signPair = await subtle.generateKey(ECDSA, false, ['sign', 'verify']);
  if (encAlg === 'p256') {
    const enc = await subtle.generateKey(ECDH, false, ['deriveBits']);
    const encSpki = new Uint8Array(await subtle.exportKey('spki', enc.publicKey));
    return finishKeys(ENC_HPKE_P256, enc.privateKey, encSpki, signPair);
  }
  if (encAlg === 'rsa') {
    const enc = await subtle.generateKey(
      { ...RSA_OAEP, modulusLength: RSA_BITS, publicExponent: Uint8Array.of(1, 0, 1) }, false, ['encrypt', 'decrypt']);
    const encSpki = new Uint8Array(await subtle.exportKey('spki', enc.publicKey));
    return finishKeys(ENC_RSA_OAEP_4096, enc.privateKey, encSpki, signPair);
  }
  throw new PodFormatError('invalid_argument', 'encAlg must be "p256" or "rsa"');
}

// A minimal DER reader, only for taking the public fields out of an RSA private key (below).
function derRead(bytes, pos, tag) {
  const bad = () => new PodFormatError('invalid_private_key', 'not a DER RSA private key');
  if (pos + 2 > bytes.length || bytes[pos] !== tag) throw bad();
  let len = bytes[pos + 1];
  let start = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || start + n > bytes.length) throw bad();
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + bytes[start + i];
    start += n;
  }
  if (len > bytes.length - start) throw bad();
  return { start, end: start + len, tlv: bytes.subarray(pos, start + len) };
}

function derLength(n) {
  if (n < 0x80) return Uint8Array.of(n);
  if (n < 0x100) return Uint8Array.of(0x81, n);
  return Uint8Array.of(0x82, n >> 8, n & 0xff);
}

function derTlv(tag, ...content) {
  const body = concat(...content);
  return concat(Uint8Array.of(tag), derLength(body.length), body);
}

const OID_RSA_ENCRYPTION = fromHex('06092a864886f70d010101');
const ALG_RSA_ENCRYPTION = derTlv(0x30, OID_RSA_ENCRYPTION, Uint8Array.of(0x05, 0x00));

/**
 * The SPKI of the RSA private key in `pkcs8`, built from its modulus and public exponent (the first fields of
 * RSAPrivateKey). Only public fields are read.
 */
function rsaSpkiFromPkcs8(pkcs8) {
  const outer = derRead(pkcs8, 0, 0x30);
  if (outer.end !== pkcs8.length) throw new PodFormatError('invalid_private_key', 'trailing bytes after the key');
  const version = derRead(pkcs8, outer.start, 0x02);
  const alg = derRead(pkcs8, version.end, 0x30);
  const oid = derRead(pkcs8, alg.start, 0x06);
  if (!equalBytes(oid.tlv, OID_RSA_ENCRYPTION)) {
    throw new PodFormatError('unsupported', 'not an RSA key (rsaEncryption) in PKCS#8');
  }
  const octets = derRead(pkcs8, alg.end, 0x04);
  const rsa = derRead(pkcs8, octets.start, 0x30);
  const rsaVersion = derRead(pkcs8, rsa.start, 0x02);
  const n = derRead(pkcs8, rsaVersion.end, 0x02);
  const e = derRead(pkcs8, n.end, 0x02);
  const rsaPublicKey = derTlv(0x30, n.tlv, e.tlv);
  return derTlv(0x30, ALG_RSA_ENCRYPTION, derTlv(0x03, Uint8Array.of(0), rsaPublicKey));
}

function pemToDer(text) {
  const m = /-----BEGIN ([A-Z ]+)-----([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) throw new PodFormatError('invalid_private_key', 'no PEM block found');
  if (m[1] === 'ENCRYPTED PRIVATE KEY') {
    throw new PodFormatError('unsupported', 'encrypted PKCS#8 keys are not supported: decrypt the key first');
  }
  if (m[1] !== 'PRIVATE KEY' && m[1] !== 'RSA PRIVATE KEY') {
    throw new PodFormatError('unsupported', `unsupported PEM block ${m[1]}`);
  }
  return { der: fromBase64(m[2].replace(/\s+/g, '')), pkcs1: m[1] === 'RSA PRIVATE KEY' };
}

/**
 * Makes a user's keys from an existing RSA-OAEP-4096 private key (PKCS#8 DER, or PEM `PRIVATE KEY` / PKCS#1
 * `RSA PRIVATE KEY`) and a fresh ECDSA P-256 signing key.
 *
 * The private key is imported NON-EXTRACTABLE, so WebCrypto cannot give its public half back. Rather than
 * importing it a second time as extractable (which would put every private field into JavaScript strings that
 * cannot be wiped), the SPKI is built from the modulus and exponent read out of the key's DER, imported (which
 * validates it) and re-exported, so its bytes are exactly WebCrypto's encoding. One OAEP round trip then proves
 * the two halves belong together. Bytes decoded here from PEM are zeroed after import; DER passed in by the
 * caller is left to the caller.
 * @param {Uint8Array | string} pkcs8PemOrDer
 * @returns {Promise<UserKeys>}
 */
export async function importRsaKeyBundle(pkcs8PemOrDer) {
  let der;
  let owned = false;
  if (typeof pkcs8PemOrDer === 'string') {
    const pem = pemToDer(pkcs8PemOrDer);
    owned = true;
    // PKCS#1 RSAPrivateKey: wrap it as PKCS#8 PrivateKeyInfo, which is what WebCrypto imports.
    der = pem.pkcs1 ? derTlv(0x30, Uint8Array.of(2, 1, 0), ALG_RSA_ENCRYPTION, derTlv(0x04, pem.der)) : pem.der;
    if (pem.pkcs1) pem.der.fill(0);
  } else if (pkcs8PemOrDer instanceof Uint8Array) {
    der = pkcs8PemOrDer;
  } else {
    throw new PodFormatError('invalid_argument', 'give the private key as PEM text or PKCS#8 DER bytes');
  }
  try {
    let encPublic;
    try {
      encPublic = await subtle.importKey('spki', rsaSpkiFromPkcs8(der), RSA_OAEP, true, ['encrypt']);
    } catch (e) {
      if (e instanceof PodFormatError) throw e;
      throw new PodFormatError('invalid_private_key', 'the RSA key\'s public fields are invalid', { cause: e });
    }
    let encPrivate;
    try {
      encPrivate = await subtle.importKey('pkcs8', der, RSA_OAEP, false, ['decrypt']);
    } catch (e) {
      throw new PodFormatError('invalid_private_key', 'not an RSA private key WebCrypto accepts', { cause: e });
    }
    if (encPublic.algorithm.modulusLength !== RSA_BITS || encPrivate.algorithm.modulusLength !== RSA_BITS) {
      throw new PodFormatError('invalid_private_key', `the RSA key must have exactly ${RSA_BITS} bits`);
    }
    const probe = randomBytes(32);
    const label = Uint8Array.of(0x70, 0x72, 0x6f, 0x62, 0x65);
    const back = new Uint8Array(await subtle.decrypt({ name: 'RSA-OAEP', label }, encPrivate,
      await subtle.encrypt({ name: 'RSA-OAEP', label }, encPublic, probe)).catch(() => new ArrayBuffer(0)));
    if (!equalBytes(back, probe)) throw new PodFormatError('invalid_private_key', 'the RSA key is inconsistent');
    const encSpki = new Uint8Array(await subtle.exportKey('spki', encPublic));
    const signPair = await subtle.generateKey(ECDSA, false, ['sign', 'verify']);
    return await finishKeys(ENC_RSA_OAEP_4096, encPrivate, encSpki, signPair);
  } finally {
    if (owned) der.fill(0);
  }
}

/**
 * PKCS#8 for a P-256 private scalar without the optional public key (RFC 5915 ECPrivateKey inside
 * PrivateKeyInfo). WebCrypto implementations compute the public point on import.
 * @param {Uint8Array} scalar 32 bytes
 * @returns {Uint8Array}
 */
export function p256ScalarToPkcs8(scalar) {
  checkBytes(scalar, 32, 32, 'a P-256 scalar', 'invalid_private_key');
  const ecPrivateKey = derTlv(0x30, Uint8Array.of(2, 1, 1), derTlv(0x04, scalar),
    fromHex('a00a06082a8648ce3d030107'));
  return derTlv(0x30, Uint8Array.of(2, 1, 0), fromHex('301306072a8648ce3d020106082a8648ce3d030107'),
    derTlv(0x04, ecPrivateKey));
}

/**
 * Imports a P-256 private scalar for `ECDH` or `ECDSA`, returning the non-extractable private key and its SPKI.
 * The key is imported once extractable only to read its public point (the scalar is already in memory as the
 * caller's input), then again non-extractable for use. Node computes the public point from a PKCS#8 key that
 * omits it; so do Chromium and Safari.
 * @param {Uint8Array} scalar
 * @param {'ECDH' | 'ECDSA'} name
 * @returns {Promise<{privateKey: CryptoKey, spki: Uint8Array}>}
 */
export async function importP256Scalar(scalar, name) {
  const pkcs8 = p256ScalarToPkcs8(scalar);
  const usages = name === 'ECDH' ? ['deriveBits'] : ['sign'];
  try {
    const probe = await subtle.importKey('pkcs8', pkcs8, { name, namedCurve: 'P-256' }, true, usages);
    const jwk = await subtle.exportKey('jwk', probe);
    const point = concat(Uint8Array.of(4), base64urlDecode(jwk.x), base64urlDecode(jwk.y));
    const privateKey = await subtle.importKey('pkcs8', pkcs8, { name, namedCurve: 'P-256' }, false, usages);
    return { privateKey, spki: concat(SPKI_P256_PREFIX, point) };
  } catch (e) {
    throw new PodFormatError('invalid_private_key', 'not a valid P-256 private scalar', { cause: e });
  } finally {
    pkcs8.fill(0);
  }
}

function base64urlDecode(s) {
  let t = s.replace(/-/g, '+').replace(/_/g, '/');
  while (t.length % 4) t += '=';
  return fromBase64(t);
}

/**
 * Imports a CLI key file (`NAME.key` from `podctl keygen`: JSON with the two P-256 scalars) as {@link UserKeys}
 * with non-extractable private keys. Its bundle is byte for byte the one in the matching `.pub`.
 * @param {string} text
 * @returns {Promise<UserKeys>}
 */
export async function importCliKey(text) {
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    throw new PodFormatError('malformed', 'not a key file');
  }
  if (v?.format !== 'secure-pod-key/v1' || typeof v.signing_scalar !== 'string' ||
      typeof v.decryption_scalar !== 'string') {
    throw new PodFormatError('malformed', 'not a secure-pod-key/v1 key file');
  }
  const signScalar = fromHex(v.signing_scalar);
  const decScalar = fromHex(v.decryption_scalar);
  try {
    const signing = await importP256Scalar(signScalar, 'ECDSA');
    const decryption = await importP256Scalar(decScalar, 'ECDH');
    const bundle = encodeBundle(ENC_HPKE_P256, decryption.spki, signing.spki);
    const parsed = await parseBundle(bundle);
    if (typeof v.user_id === 'string' && v.user_id.toLowerCase() !== toHex(parsed.userId)) {
      throw new PodFormatError('malformed', 'the key file names a user id that is not its keys\'');
    }
    return {
      version: 1, encAlg: ENC_HPKE_P256, encPrivate: decryption.privateKey, signPrivate: signing.privateKey,
      encSpki: decryption.spki, signSpki: signing.spki, bundle, userId: parsed.userId,
    };
  } finally {
    signScalar.fill(0);
    decScalar.fill(0);
  }
}
