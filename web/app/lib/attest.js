// In-page verification of AWS Nitro Enclaves attestation documents, with WebCrypto.
//
// A page must check the pod's attestation document before it seals anything to the pod key, and it cannot
// delegate that check to the server it is checking. This module is that check, in plain JavaScript over
// `crypto.subtle`, so it runs unchanged in browsers and in Node 20. It mirrors the Rust verifier
// (attestation-verifier/src), and is strict in the same places:
//
// 1. Shape. At most 32 KiB of CBOR: an optional tag 18, then a four-element COSE_Sign1 array of definite length,
//    nothing after it. The protected header decodes to exactly {1: -35} (ES384), the unprotected header is empty,
//    the payload is an embedded byte string, the signature 96 bytes (r ‖ s).
// 2. Payload schema. AWS's fields, each at most once, none unknown, every size bounded (LIMITS below). `null`
//    stands for an absent optional field (real hardware writes it) and makes a required field missing. Maps and
//    arrays may use indefinite lengths: real documents do.
// 3. Chain. cabundle[0] equals a pinned root byte for byte (the document's own copy of a root is never trusted
//    on its own account); then leaf ← cabundle[N] ← … ← cabundle[1] ← root, each link ECDSA P-384 with
//    SHA-384, issuer equal to the parent's subject, every certificate (root included) valid at the verification
//    time, CA certificates with basicConstraints cA, keyUsage keyCertSign and pathLenConstraint respected, the leaf
//    not a CA, no unknown critical extension. The document's own timestamp must lie inside the leaf's validity.
// 4. Signature. The COSE signature over the Sig_structure built from the *original* protected-header and
//    payload bytes, never a re-encoding. High-S signatures are accepted: real documents have them.
// 5. Policy. Debug mode (PCR0..2 all zero) refused unless allowed; expected PCRs; nonce; optional freshness,
//    public_key and user_data.
//
// Only when all of that holds does the caller get a result; any failure throws an AttestationError whose `code`
// says which stage refused the document and whose message says what to do about it. Messages never repeat
// attacker-chosen bytes beyond small numbers, so they are safe to show and to log.

import { decode, encode, CborError, Tagged } from './cbor.js';
import { toHex, fromHex } from './bytes.js';
import {
  DerError,
  OID,
  parseCertificate,
  ecdsaDerToRaw,
  basicConstraints,
  keyUsage,
  subjectPublicKeyInfo,
  readOne,
  TAG,
  pemToDer as pemToDerRaw,
} from './der.js';

/**
 * Size limits, checked before anything is used; the same as attestation-verifier/src/limits.rs, which explains
 * them (the schema's 1024-byte bounds on the caller-supplied fields, although real hardware writes at most 512).
 */
export const LIMITS = Object.freeze({
  MAX_DOCUMENT_LEN: 32 * 1024,
  COSE_SIGNATURE_LEN: 96,
  MAX_MODULE_ID_LEN: 255,
  MAX_CERTIFICATE_LEN: 1024,
  MAX_CABUNDLE: 8,
  MAX_PCRS: 32,
  MAX_PUBLIC_KEY_LEN: 1024,
  MAX_USER_DATA_LEN: 1024,
  MAX_NONCE_LEN: 1024,
  MAX_CLOCK_SKEW_MS: 60_000,
  MAX_PCR_FILE_LEN: 64 * 1024,
});

/** The AWS Nitro Enclaves root certificate (G1), as AWS publishes it. */
export const AWS_NITRO_ROOT_G1_PEM = `-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
`;

/** SHA-256 of the DER of AWS_NITRO_ROOT_G1_PEM, as AWS documents it. */
export const AWS_NITRO_ROOT_G1_SHA256 = '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b';

/**
 * Why a document (or the options given to check it) was refused.
 *
 * `code` is one of:
 * - `'options'`       the caller's options are unusable (no WebCrypto, bad pinned root, no expected PCRs, …)
 * - `'pcr_file'`      a PCR file given to parsePcrFile is malformed
 * - `'cose'`          not a COSE_Sign1 ES384 document (bad CBOR, tag, headers, signature length, too large)
 * - `'payload'`       the payload breaks AWS's schema (unknown, repeated, missing or oversize field, wrong type)
 * - `'wrong_root'`    the document's root certificate is not a pinned root
 * - `'chain'`         a certificate is malformed, uses another algorithm, breaks a constraint or a signature
 * - `'expired'`       a certificate's validity ended before the verification time
 * - `'not_yet_valid'` a certificate's validity starts after the verification time
 * - `'timestamp'`     the document's own timestamp lies outside its signing certificate's validity
 * - `'signature'`     the COSE signature does not verify under the leaf certificate's key
 * - `'debug_enclave'` PCR0..2 are zero: a debug-mode enclave, whose memory its host can read
 * - `'pcr_mismatch'`  an expected PCR differs from the document's, or the document lacks it (see `index`)
 * - `'nonce'`         the expected nonce is absent or different
 * - `'stale'`/`'future'` the document is older than `maxAgeMs`, or from further ahead than the clock skew allows
 * - `'public_key'`/`'user_data'` an expected binding is absent or different
 * - `'binding'`       (podBinding) the document does not carry a Secure Pod key binding
 *
 * `position` names the certificate for chain errors ('leaf', 'cabundle[i]'); `index` the PCR for PCR errors.
 */
export class AttestationError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{position?: string, index?: number, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'AttestationError';
    this.code = code;
    if (details.position !== undefined) this.position = details.position;
    if (details.index !== undefined) this.index = details.index;
  }
}

/**
 * Decodes a PEM certificate to DER; refuses any label other than CERTIFICATE and more or fewer than one block.
 * @param {string} pem
 * @returns {Uint8Array}
 */
export function pemToDer(pem) {
  try {
    return pemToDerRaw(pem, 'CERTIFICATE');
  } catch (e) {
    if (e instanceof DerError) throw new AttestationError('options', `not a PEM certificate: ${e.message}`);
    throw e;
  }
}

// ---- Small helpers ---------------------------------------------------------------------------------------------

export { toHex };

/** Bytes of a hex string (either case, surrounding whitespace ignored); null if it is not hex. */
function hexOrNull(text) {
  try {
    return fromHex(text.trim());
  } catch {
    return null;
  }
}

/** Equality whose time does not depend on where the first difference is (lengths are not secret). */
function ctEqual(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

function iso(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `${ms} ms` : d.toISOString();
}

function getSubtle() {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new AttestationError(
      'options',
      'WebCrypto (crypto.subtle) is unavailable: serve the page over HTTPS or from localhost',
    );
  }
  return subtle;
}

async function sha256(subtle, bytes) {
  return new Uint8Array(await subtle.digest('SHA-256', bytes));
}

/**
 * cbor.js's decode, with every failure as a CborError: its TextDecoder is `fatal`, so a text string that is not
 * UTF-8 escapes as a TypeError, which must still read as "malformed CBOR" and not as a bug.
 */
function cborDecode(bytes, options) {
  try {
    return decode(bytes, options);
  } catch (e) {
    if (e instanceof TypeError) throw new CborError('text string is not valid UTF-8');
    throw e;
  }
}

// ---- Options ---------------------------------------------------------------------------------------------------

function pcrValue(index, value, code) {
  const bytes = typeof value === 'string' ? hexOrNull(value) : value instanceof Uint8Array ? value : null;
  if (!bytes) throw new AttestationError(code, `PCR${index} must be a hex string or a Uint8Array`);
  if (bytes.length !== 32 && bytes.length !== 48 && bytes.length !== 64) {
    throw new AttestationError(code, `PCR${index} must be 32, 48 or 64 bytes, got ${bytes.length}`);
  }
  return Uint8Array.from(bytes);
}

function pcrIndex(key, code) {
  const m = /^(?:PCR)?(0|[1-9][0-9]{0,2})$/.exec(String(key));
  const index = m ? Number(m[1]) : NaN;
  if (!(index >= 0 && index <= 31)) {
    throw new AttestationError(code, `PCR index ${String(key).slice(0, 16)} is out of range 0..31`);
  }
  return index;
}

/** Normalises expected PCRs (Map or object, hex or bytes) to a Map<number, Uint8Array> in index order. */
function normalisePcrs(expected) {
  if (typeof expected !== 'object' || Array.isArray(expected)) {
    throw new AttestationError('options', 'expectedPcrs must be a Map or an object of PCR index to value');
  }
  const entries = expected instanceof Map ? [...expected.entries()] : Object.entries(expected);
  const out = new Map();
  for (const [key, value] of entries) {
    const index = pcrIndex(key, 'options');
    if (out.has(index)) throw new AttestationError('options', `PCR${index} is given twice`);
    out.set(index, pcrValue(index, value, 'options'));
  }
  return new Map([...out.entries()].sort((a, b) => a[0] - b[0]));
}

function optionalBytes(value, name) {
  if (value === undefined || value === null) return null;
  if (!(value instanceof Uint8Array)) throw new AttestationError('options', `${name} must be a Uint8Array or null`);
  return Uint8Array.from(value);
}

function checkRoot(der, i) {
  if (!(der instanceof Uint8Array)) throw new AttestationError('options', `rootsDer[${i}] must be a Uint8Array`);
  if (der.length > LIMITS.MAX_CERTIFICATE_LEN) {
    throw new AttestationError('options', `pinned root ${i} is larger than a Nitro certificate can be`);
  }
  let cert;
  try {
    cert = parseCertificate(der);
  } catch (e) {
    const why = `pinned root ${i} is not an X.509 v3 DER certificate (${e.message})`;
    throw new AttestationError('options', why, { cause: e });
  }
  if (cert.spki.algorithm !== OID.EC_PUBLIC_KEY || cert.spki.curve !== OID.SECP384R1) {
    throw new AttestationError('options', `pinned root ${i}: its key is not a P-384 key`);
  }
  return Uint8Array.from(der);
}

function verificationTime(now) {
  if (now === undefined) return Date.now();
  if (now === 'document') return 'document';
  const ms = now instanceof Date ? now.getTime() : now;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new AttestationError('options', "now must be a Date, milliseconds since the epoch, or 'document'");
  }
  return Math.floor(ms);
}

// ---- COSE_Sign1 ------------------------------------------------------------------------------------------------

const COSE_SIGN1_TAG = 18;
const COSE_HEADER_ALG = 1;
const COSE_ALG_ES384 = -35;

function parseCose(doc) {
  let top;
  try {
    // Indefinite lengths are allowed here only because the Rust verifier accepts an empty indefinite-length
    // unprotected map; an indefinite outer array is refused below.
    top = cborDecode(doc, { allowIndefinite: true });
  } catch (e) {
    if (e instanceof CborError) {
      const why = `the attestation document is not well-formed CBOR (${e.message})`;
      throw new AttestationError('cose', why, { cause: e });
    }
    throw e;
  }
  let arrayAt = 0;
  if (top instanceof Tagged) {
    if (top.tag !== COSE_SIGN1_TAG) {
      throw new AttestationError('cose', `unexpected CBOR tag ${String(top.tag)} (only COSE_Sign1 tag 18 is accepted)`);
    }
    top = top.value;
    arrayAt = 1; // tag 18 is the single byte 0xd2 (cbor.js refuses non-shortest heads)
  }
  const notCose = (why) => new AttestationError('cose', `not a COSE_Sign1 attestation document: ${why}`);
  if (!Array.isArray(top)) throw notCose('the outer item is not an array');
  if (doc[arrayAt] === 0x9f) throw notCose('the array has an indefinite length');
  if (top.length !== 4) throw notCose('the array does not have four elements');
  const [protectedBytes, unprotected, payload, signature] = top;
  if (!(protectedBytes instanceof Uint8Array)) throw notCose('the protected header is not a byte string');
  checkProtectedHeader(protectedBytes);
  if (!(unprotected instanceof Map) || unprotected.size !== 0) {
    throw new AttestationError('cose', 'the COSE unprotected header must be an empty map');
  }
  if (!(payload instanceof Uint8Array)) throw notCose('the payload is not an embedded byte string');
  if (!(signature instanceof Uint8Array)) throw notCose('the signature is not a byte string');
  if (signature.length !== LIMITS.COSE_SIGNATURE_LEN) {
    throw new AttestationError('cose', `the COSE signature must be 96 bytes (P-384 r||s), got ${signature.length}`);
  }
  return { protectedBytes, payload, signature };
}

function checkProtectedHeader(bytes) {
  let header;
  try {
    header = cborDecode(bytes, { allowIndefinite: true });
  } catch {
    header = null;
  }
  if (!(header instanceof Map) || header.size !== 1 || header.get(COSE_HEADER_ALG) !== COSE_ALG_ES384) {
    throw new AttestationError('cose', 'the COSE protected header must be exactly {1: -35} (alg ES384)');
  }
}

/** The COSE Sig_structure for COSE_Sign1 (RFC 9052 §4.4), from the original bytes. */
function sigStructure(protectedBytes, payload) {
  return encode(['Signature1', protectedBytes, new Uint8Array(0), payload]);
}

// ---- Payload ---------------------------------------------------------------------------------------------------

/** AWS's payload fields, in schema order. */
const FIELDS = [
  'module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle', 'public_key', 'user_data', 'nonce',
];
const REQUIRED = FIELDS.slice(0, 6);

function payloadError(message) {
  return new AttestationError('payload', `the attestation payload is invalid: ${message}`);
}

function checkSize(field, len, min, max) {
  if (len < min || len > max) throw payloadError(`field \`${field}\` has size ${len}, outside ${min}..${max}`);
}

function bytesField(field, value, min, max) {
  if (!(value instanceof Uint8Array)) throw payloadError(`field \`${field}\` is not a byte string`);
  checkSize(field, value.length, min, max);
  return value;
}

function parsePayload(bytes) {
  let map;
  try {
    map = cborDecode(bytes, { allowIndefinite: true });
  } catch (e) {
    if (!(e instanceof CborError)) throw e;
    const dup = /^duplicate map key (.*)$/.exec(e.message);
    if (dup && FIELDS.includes(dup[1])) throw payloadError(`field \`${dup[1]}\` appears more than once`);
    if (dup) throw payloadError('a map key (a field or a PCR index) appears more than once');
    throw payloadError(`malformed CBOR (${e.message})`);
  }
  if (!(map instanceof Map)) throw payloadError('it is not a map');
  // A map holds each key once (cbor.js refuses duplicates), so nine known keys bound its size.
  const out = { publicKey: null, userData: null, nonce: null };
  for (const [key, value] of map) {
    if (typeof key !== 'string' || !FIELDS.includes(key)) {
      throw payloadError('it has a field outside the attestation document schema');
    }
    // `null` for a required field means it is absent: it is then reported as missing below.
    if (value === null) continue;
    switch (key) {
      case 'module_id':
        if (typeof value !== 'string') throw payloadError('field `module_id` is not a text string');
        checkSize(key, new TextEncoder().encode(value).length, 1, LIMITS.MAX_MODULE_ID_LEN);
        out.moduleId = value;
        break;
      case 'digest':
        if (typeof value !== 'string') throw payloadError('field `digest` is not a text string');
        out.digest = value;
        break;
      case 'timestamp':
        if (typeof value === 'bigint') throw payloadError('field `timestamp` is out of range');
        if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
          throw payloadError('field `timestamp` is not an unsigned integer');
        }
        out.timestamp = value;
        break;
      case 'pcrs':
        out.pcrs = parsePcrs(value);
        break;
      case 'certificate':
        out.certificate = bytesField(key, value, 1, LIMITS.MAX_CERTIFICATE_LEN);
        break;
      case 'cabundle':
        if (!Array.isArray(value)) throw payloadError('field `cabundle` is not an array');
        checkSize('cabundle', value.length, 1, LIMITS.MAX_CABUNDLE);
        out.cabundle = value.map((c) => bytesField('cabundle', c, 1, LIMITS.MAX_CERTIFICATE_LEN));
        break;
      case 'public_key':
        out.publicKey = bytesField(key, value, 1, LIMITS.MAX_PUBLIC_KEY_LEN);
        break;
      case 'user_data':
        out.userData = bytesField(key, value, 0, LIMITS.MAX_USER_DATA_LEN);
        break;
      default:
        out.nonce = bytesField(key, value, 0, LIMITS.MAX_NONCE_LEN);
    }
  }
  const have = {
    module_id: out.moduleId,
    digest: out.digest,
    timestamp: out.timestamp,
    pcrs: out.pcrs,
    certificate: out.certificate,
    cabundle: out.cabundle,
  };
  for (const field of REQUIRED) {
    if (have[field] === undefined) throw payloadError(`required field \`${field}\` is missing or null`);
    if (field === 'digest' && out.digest !== 'SHA384') throw payloadError('field `digest` must be "SHA384"');
  }
  return out;
}

function parsePcrs(value) {
  if (!(value instanceof Map)) throw payloadError('field `pcrs` is not a map');
  checkSize('pcrs', value.size, 1, LIMITS.MAX_PCRS);
  const entries = [];
  for (const [index, pcr] of value) {
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= LIMITS.MAX_PCRS) {
      const shown = typeof index === 'number' || typeof index === 'bigint' ? String(index) : '?';
      throw payloadError(`PCR index ${shown} is out of range 0..31`);
    }
    if (!(pcr instanceof Uint8Array)) throw payloadError(`PCR${index} is not a byte string`);
    if (pcr.length !== 32 && pcr.length !== 48 && pcr.length !== 64) {
      throw payloadError(`PCR${index} has ${pcr.length} bytes (32, 48 or 64 expected)`);
    }
    entries.push([index, pcr]);
  }
  return new Map(entries.sort((a, b) => a[0] - b[0]));
}

// ---- Certificate chain -----------------------------------------------------------------------------------------

/** Extensions this verifier understands, and so may accept as critical (as chain.rs). */
const KNOWN_CRITICAL = [OID.BASIC_CONSTRAINTS, OID.KEY_USAGE];

function positionName(position) {
  if (position === 'leaf') return 'the leaf certificate';
  if (position === 'cabundle[0]') return 'cabundle[0] (the root)';
  return position;
}

function chainError(position, message) {
  return new AttestationError('chain', `${positionName(position)} ${message}`, { position });
}

function parseAt(der, position) {
  try {
    return parseCertificate(der);
  } catch (e) {
    if (!(e instanceof DerError)) throw e;
    const why = `${positionName(position)} is not a valid X.509 v3 certificate: ${e.message}`;
    throw new AttestationError('chain', why, { position, cause: e });
  }
}

function checkValidity(cert, position, at) {
  if (at >= cert.notBefore && at <= cert.notAfter) return;
  if (at > cert.notAfter) {
    const hint = position === 'leaf'
      ? 'Nitro signing certificates live three hours: fetch a fresh attestation document'
      : 'fetch a fresh attestation document, and check this computer\'s clock';
    throw new AttestationError(
      'expired',
      `${positionName(position)} expired at ${iso(cert.notAfter)}, before the verification time ${iso(at)}; ${hint}`,
      { position },
    );
  }
  throw new AttestationError(
    'not_yet_valid',
    `${positionName(position)} is valid only from ${iso(cert.notBefore)}, after the verification time ${iso(at)}; ` +
      'check this computer\'s clock',
    { position },
  );
}

function extensionsOf(cert, position) {
  const seen = new Set();
  let bc = null;
  let ku = null;
  for (const ext of cert.extensions) {
    if (seen.has(ext.oid)) throw chainError(position, 'violates a certificate constraint: an extension appears twice');
    seen.add(ext.oid);
    if (ext.critical && !KNOWN_CRITICAL.includes(ext.oid)) {
      throw chainError(position, 'violates a certificate constraint: unknown critical extension');
    }
    try {
      if (ext.oid === OID.BASIC_CONSTRAINTS) bc = basicConstraints(ext.value);
      else if (ext.oid === OID.KEY_USAGE) ku = keyUsage(ext.value);
    } catch (e) {
      if (!(e instanceof DerError)) throw e;
      const name = ext.oid === OID.BASIC_CONSTRAINTS ? 'basicConstraints' : 'keyUsage';
      throw chainError(position, `violates a certificate constraint: malformed ${name}`);
    }
  }
  return { bc, ku };
}

async function importP384(subtle, cert, position) {
  const { spki } = cert;
  const unsupported = (why) => chainError(position, `uses an unsupported algorithm: ${why}`);
  if (spki.algorithm !== OID.EC_PUBLIC_KEY) throw unsupported('public key is not an EC key');
  if (spki.curve !== OID.SECP384R1) throw unsupported('public key is not on P-384');
  if (spki.unusedBits !== 0) throw unsupported('public key bit string is not whole bytes');
  // Only the uncompressed form: it is what every Nitro certificate carries, and what every browser imports.
  if (spki.publicKey.length !== 97 || spki.publicKey[0] !== 0x04) {
    throw chainError(position, 'is not a valid X.509 v3 certificate: public key is not an uncompressed P-384 point');
  }
  try {
    return await subtle.importKey('spki', spki.tlv, { name: 'ECDSA', namedCurve: 'P-384' }, false, ['verify']);
  } catch (e) {
    const why = `${positionName(position)} is not a valid X.509 v3 certificate: public key is not a valid P-384 point`;
    throw new AttestationError('chain', why, { position, cause: e });
  }
}

async function checkCertSignature(subtle, cert, position, issuerKey) {
  const outer = cert.signatureAlgorithm;
  if (outer.oid !== OID.ECDSA_WITH_SHA384) {
    throw chainError(position, 'uses an unsupported algorithm: signature is not ecdsa-with-SHA384');
  }
  if (!ctEqual(outer.tlv, cert.tbsSignatureAlgorithm.tlv)) {
    throw chainError(position, 'is not a valid X.509 v3 certificate: inner and outer signature algorithms differ');
  }
  if (outer.parameters !== null) {
    throw chainError(position, 'is not a valid X.509 v3 certificate: ecdsa-with-SHA384 must not carry parameters');
  }
  const bad = () => chainError(position, 'has a signature that does not verify under its issuer\'s key');
  if (cert.signatureUnusedBits !== 0) throw bad();
  let raw;
  try {
    raw = ecdsaDerToRaw(cert.signature, 48);
  } catch (e) {
    if (e instanceof DerError) throw bad();
    throw e;
  }
  const ok = await subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, issuerKey, raw, cert.tbs);
  if (!ok) throw bad();
}

/**
 * Verifies leaf ← cabundle[N] ← … ← cabundle[1] ← cabundle[0] = a pinned root, at time `at`; returns the
 * parsed leaf, its CryptoKey and the matching root's DER. Mirrors verify_chain in chain.rs, check for check and
 * in the same order.
 */
async function verifyChain(subtle, leafDer, cabundle, roots, at) {
  const rootDer = cabundle[0];
  // Compare against every pinned root (no early exit), so timing does not say which one was close.
  let matched = null;
  for (const r of roots) if (ctEqual(rootDer, r) && matched === null) matched = r;
  if (matched === null) {
    throw new AttestationError(
      'wrong_root',
      'the document\'s root certificate is not a pinned root: the document was not made by the expected hardware ' +
        '(an AWS document checked against the local mock root, or the reverse) or it has been tampered with',
      { position: 'cabundle[0]' },
    );
  }
  // chain[0] is the root, chain[1..N] the intermediates in issuing order, then the leaf.
  const chain = cabundle.map((der, i) => ({ position: `cabundle[${i}]`, cert: parseAt(der, `cabundle[${i}]`) }));
  chain.push({ position: 'leaf', cert: parseAt(leafDer, 'leaf') });

  for (const { cert, position } of chain) checkValidity(cert, position, at);

  const intermediates = cabundle.length - 1;
  let issuerKey = null;
  for (let depth = 0; depth < chain.length; depth++) {
    const { cert, position } = chain[depth];
    const { bc, ku } = extensionsOf(cert, position);
    const constraint = (why) => chainError(position, `violates a certificate constraint: ${why}`);
    if (depth === chain.length - 1) {
      if (bc && bc.ca) throw constraint('the leaf is a CA certificate');
      if (ku && !ku.digitalSignature) throw constraint('the leaf\'s keyUsage lacks digitalSignature');
    } else {
      if (!bc) throw constraint('a CA certificate lacks basicConstraints');
      if (!bc.ca) throw constraint('basicConstraints cA is false on a CA certificate');
      if (!ku) throw constraint('a CA certificate lacks keyUsage');
      if (!ku.keyCertSign) throw constraint('a CA certificate\'s keyUsage lacks keyCertSign');
      // Intermediate CAs below this one (the leaf does not count).
      const below = Math.max(0, intermediates - depth);
      if (bc.pathLen !== null && below > bc.pathLen) throw constraint('pathLenConstraint exceeded');
    }
    const key = await importP384(subtle, cert, position);
    if (depth > 0) {
      // The root is pinned, so its self-signature proves nothing and is not checked (as in chain.rs).
      if (!ctEqual(cert.issuer, chain[depth - 1].cert.subject)) {
        const why = `${positionName(position)} was not issued by the certificate above it (issuer/subject mismatch)`;
        throw new AttestationError('chain', why, { position });
      }
      await checkCertSignature(subtle, cert, position, issuerKey);
    }
    issuerKey = key;
  }
  return { leaf: chain[chain.length - 1].cert, leafKey: issuerKey, rootDer: matched };
}

// ---- Policy ----------------------------------------------------------------------------------------------------

/**
 * True for a debug-mode enclave: PCR0, PCR1 and PCR2 present and all zero. (PCR3 and PCR4 are still set in debug
 * mode, so "every PCR zero" would miss it.)
 * @param {Map<number, Uint8Array>} pcrs
 */
export function isDebug(pcrs) {
  return [0, 1, 2].every((i) => pcrs.has(i) && pcrs.get(i).every((b) => b === 0));
}

function checkBound(expected, got, code, name) {
  if (expected === null) return;
  if (got === null) throw new AttestationError(code, `a ${name} was expected but the document has none`);
  if (!ctEqual(expected, got)) {
    throw new AttestationError(code, `the document's ${name} differs from the expected ${name}`);
  }
}

// ---- The verifier ----------------------------------------------------------------------------------------------

/**
 * What a verified document says. Only verifyAttestation makes one, so holding one means every check passed.
 * @typedef {object} VerifiedAttestation
 * @property {string} moduleId                enclave module id (instance and enclave ids on AWS)
 * @property {number} timestamp               when the NSM made the document, ms since the Unix epoch
 * @property {string} digest                  always 'SHA384'
 * @property {Map<number, Uint8Array>} pcrs   every PCR in the document, in index order
 * @property {Uint8Array} certificate         the leaf (signing) certificate, DER
 * @property {Uint8Array[]} cabundle          the document's CA bundle, root first
 * @property {Uint8Array|null} publicKey      the key the enclave bound, if any
 * @property {Uint8Array|null} userData       the user data the enclave bound, if any
 * @property {Uint8Array|null} nonce          the nonce the document carries, if any
 * @property {boolean} debug                  debug-mode enclave (only possible with allowDebug)
 * @property {string} rootSha256              hex SHA-256 of the pinned root the chain ended in
 * @property {number} verifiedAt              the time certificates were checked at, ms since the Unix epoch
 */

/**
 * Verifies an AWS Nitro attestation document (raw COSE_Sign1 CBOR bytes).
 *
 * @param {Uint8Array|ArrayBuffer} docBytes
 * @param {object} [options]
 * @param {Uint8Array[]} [options.rootsDer]  pinned root certificates (DER); default: the AWS Nitro root G1 only.
 *   For local mode pass the mock root (pemToDer of mock-root.pem) instead.
 * @param {Map<number, Uint8Array|string>|Object<string, string|Uint8Array>} [options.expectedPcrs]  PCRs the
 *   enclave image must show: a Map index → bytes or hex, an object {0: hex} / {PCR0: hex}, or parsePcrFile's
 *   result. Required (and non-empty) unless insecureAnyPcrs.
 * @param {boolean} [options.insecureAnyPcrs]  accept any enclave image: proves only that *some* enclave on the
 *   pinned root's hardware signed the document. For inspection, never for trust.
 * @param {Uint8Array|null} [options.nonce]  the nonce the document must carry, exactly.
 * @param {Date|number|'document'} [options.now]  the time certificates must be valid at: a Date or ms since the
 *   epoch; default the current clock. `'document'` checks them at the document's own timestamp instead, which
 *   proves the document was valid when made but not that it is recent: use it only together with a fresh nonce.
 * @param {number} [options.maxAgeMs]  refuse documents older than this (and more than `maxFutureMs` in the
 *   future), relative to `now`, or to `clockMs` when certificates are checked at the document's time.
 * @param {number} [options.clockMs]  with now: 'document', the local clock the document's age is measured against:
 *   certificates are valid at the document's time, and that time must be recent, so together they are valid now.
 * @param {number} [options.maxFutureMs]  how far ahead of the clock a document may be (default 60 s).
 * @param {boolean} [options.allowDebug]  accept a debug-mode enclave (its memory is open to its host). Never in
 *   production.
 * @param {Uint8Array|null} [options.publicKey]  the public_key the document must bind, if known in advance.
 * @param {Uint8Array|null} [options.userData]  the user_data the document must carry, if known in advance.
 * @returns {Promise<Readonly<VerifiedAttestation>>}
 * @throws {AttestationError}
 */
export async function verifyAttestation(docBytes, options = {}) {
  options ??= {};
  const subtle = getSubtle();
  // Copy the input and every expectation first: verification awaits WebCrypto, and a caller changing its buffers
  // meanwhile must not be able to make what was checked differ from what is returned.
  const input = docBytes instanceof ArrayBuffer ? new Uint8Array(docBytes) : docBytes;
  if (!(input instanceof Uint8Array)) {
    throw new AttestationError('options', 'the attestation document must be a Uint8Array');
  }
  if (input.length > LIMITS.MAX_DOCUMENT_LEN) {
    const max = LIMITS.MAX_DOCUMENT_LEN;
    const why = `the attestation document is ${input.length} bytes, more than the ${max}-byte limit`;
    throw new AttestationError('cose', why);
  }
  const doc = new Uint8Array(input);

  const rootList = options.rootsDer ?? [pemToDer(AWS_NITRO_ROOT_G1_PEM)];
  if (!Array.isArray(rootList) || rootList.length === 0) {
    throw new AttestationError('options', 'rootsDer must list at least one pinned root certificate (DER)');
  }
  const roots = rootList.map(checkRoot);
  let expectedPcrs = null;
  if (options.insecureAnyPcrs) {
    if (options.expectedPcrs !== undefined) {
      throw new AttestationError('options', 'give expectedPcrs or insecureAnyPcrs, not both');
    }
  } else {
    if (options.expectedPcrs == null) {
      throw new AttestationError(
        'options',
        'no expected PCRs: pass the PCR file published with the enclave image (see parsePcrFile)',
      );
    }
    expectedPcrs = normalisePcrs(options.expectedPcrs);
    if (expectedPcrs.size === 0) {
      throw new AttestationError(
        'options',
        'the expected PCRs are empty: a verifier that pins no image accepts every enclave, an attacker\'s included',
      );
    }
    if (!expectedPcrs.has(0) && !expectedPcrs.has(8)) {
      // PCR1..4 alone are shared by any image built or run the same way; only PCR0 or the signer's PCR8 pins code.
      throw new AttestationError(
        'options',
        'the expected PCRs pin no image: the PCR file must give PCR0 (the image) or PCR8 (the image\'s signer)',
      );
    }
  }
  const expectedNonce = optionalBytes(options.nonce, 'nonce');
  const expectedPublicKey = optionalBytes(options.publicKey, 'publicKey');
  const expectedUserData = optionalBytes(options.userData, 'userData');
  const now = verificationTime(options.now);
  const maxAgeMs = options.maxAgeMs ?? null;
  if (maxAgeMs !== null && !(typeof maxAgeMs === 'number' && maxAgeMs >= 0)) {
    throw new AttestationError('options', 'maxAgeMs must be a non-negative number');
  }
  const clockMs = options.clockMs ?? null;
  if (clockMs !== null && !Number.isSafeInteger(clockMs)) {
    throw new AttestationError('options', 'clockMs must be milliseconds since the epoch');
  }
  if (maxAgeMs !== null && now === 'document' && clockMs === null) {
    throw new AttestationError('options', "maxAgeMs with now: 'document' needs clockMs, the clock to measure the age by");
  }
  const maxFutureMs = options.maxFutureMs ?? LIMITS.MAX_CLOCK_SKEW_MS;

  const cose = parseCose(doc);
  const p = parsePayload(cose.payload);
  const at = now === 'document' ? p.timestamp : now;

  const { leaf, leafKey, rootDer } = await verifyChain(subtle, p.certificate, p.cabundle, roots, at);
  if (p.timestamp < leaf.notBefore || p.timestamp > leaf.notAfter) {
    throw new AttestationError(
      'timestamp',
      `the document's timestamp ${iso(p.timestamp)} lies outside its signing certificate's validity ` +
        `(${iso(leaf.notBefore)} to ${iso(leaf.notAfter)})`,
    );
  }

  const toBeSigned = sigStructure(cose.protectedBytes, cose.payload);
  const signed = await subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, leafKey, cose.signature, toBeSigned);
  if (!signed) {
    throw new AttestationError(
      'signature',
      'the attestation document\'s COSE signature does not verify: it was altered after the enclave\'s hardware ' +
        'signed it',
    );
  }

  // Policy, in the order of policy.rs.
  const debug = isDebug(p.pcrs);
  if (debug && !options.allowDebug) {
    throw new AttestationError(
      'debug_enclave',
      'the enclave runs in debug mode (PCR0, PCR1 and PCR2 are zero): its memory is open to the host, ' +
        'so it protects nothing',
    );
  }
  if (expectedPcrs) {
    for (const [index, want] of expectedPcrs) {
      const got = p.pcrs.get(index);
      if (got === undefined) {
        throw new AttestationError('pcr_mismatch', `PCR${index} is expected but absent from the document`, { index });
      }
      if (!ctEqual(got, want)) {
        throw new AttestationError(
          'pcr_mismatch',
          `PCR${index} does not match the expected value: the enclave runs another image than the one published`,
          { index },
        );
      }
    }
  }
  if (expectedNonce !== null) {
    if (p.nonce === null) {
      throw new AttestationError('nonce', 'the document carries no nonce, but one was sent: it may be a replay');
    }
    if (!ctEqual(expectedNonce, p.nonce)) {
      throw new AttestationError('nonce', 'the document\'s nonce differs from the one sent: it may be a replay');
    }
  }
  if (maxAgeMs !== null) {
    const ref = now === 'document' ? clockMs : at;
    if (p.timestamp > ref) {
      const ahead = p.timestamp - ref;
      if (ahead > maxFutureMs) {
        const why = `the document's timestamp is ${ahead} ms in the future; check this computer's clock`;
        throw new AttestationError('future', why);
      }
    } else if (ref - p.timestamp > maxAgeMs) {
      const why = `the document is ${ref - p.timestamp} ms old by this computer's clock, more than the ${maxAgeMs} ms ` +
        'allowed; fetch a fresh one, and check the clock';
      throw new AttestationError('stale', why);
    }
  }
  checkBound(expectedPublicKey, p.publicKey, 'public_key', 'public_key');
  checkBound(expectedUserData, p.userData, 'user_data', 'user_data');

  return Object.freeze({
    moduleId: p.moduleId,
    timestamp: p.timestamp,
    digest: p.digest,
    pcrs: p.pcrs,
    certificate: p.certificate,
    cabundle: p.cabundle,
    publicKey: p.publicKey,
    userData: p.userData,
    nonce: p.nonce,
    debug,
    rootSha256: toHex(await sha256(subtle, rootDer)),
    verifiedAt: at,
  });
}

// ---- PCR files -------------------------------------------------------------------------------------------------

/**
 * Reads a PCR file, as `attest-verify --pcrs` does (ExpectedPcrs::from_json in policy.rs): a JSON object
 * `{"PCR0": "<hex>", ...}` as eif/build.sh and `pod-enclave mock-pcrs` write it, or nitro-cli's
 * `{"Measurements": {"HashAlgorithm": "...", "PCR0": ...}}`. Any other key is an error, so that a typo cannot
 * silently drop a PCR from the policy.
 * @param {string} text
 * @returns {Map<number, Uint8Array>} expected PCRs in index order, for verifyAttestation's expectedPcrs
 * @throws {AttestationError} code 'pcr_file'
 */
export function parsePcrFile(text) {
  const bad = (why) => new AttestationError('pcr_file', `invalid PCR file: ${why}`);
  if (typeof text !== 'string') throw bad('it must be given as text');
  if (text.length > LIMITS.MAX_PCR_FILE_LEN) throw bad('it is larger than 64 KiB');
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw bad(`it is not JSON (${e.message})`);
  }
  const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(value)) throw bad('it is not a JSON object');
  let object = value;
  if (Object.hasOwn(value, 'Measurements')) {
    if (Object.keys(value).length !== 1) throw bad('it has keys beside "Measurements"');
    object = value.Measurements;
    if (!isObject(object)) throw bad('"Measurements" is not an object');
  }
  const out = new Map();
  for (const [key, v] of Object.entries(object)) {
    if (key === 'HashAlgorithm') continue;
    // Canonical decimal only: "PCR00", "PCR+1" or "pcr0" are refused, as in policy.rs.
    const m = /^PCR(0|[1-9][0-9]{0,2})$/.exec(key);
    if (!m || Number(m[1]) > 255) throw bad(`unexpected key ${JSON.stringify(key.slice(0, 32))}`);
    const index = Number(m[1]);
    if (index > 31) throw bad(`PCR index ${index} is out of range 0..=31`);
    if (typeof v !== 'string') throw bad(`${key} is not a string`);
    const bytes = hexOrNull(v);
    if (!bytes) throw bad(`${key} is not a hex string`);
    if (bytes.length !== 32 && bytes.length !== 48 && bytes.length !== 64) {
      throw bad(`${key} must be 32, 48 or 64 bytes, got ${bytes.length}`);
    }
    out.set(index, bytes);
  }
  return new Map([...out.entries()].sort((a, b) => a[0] - b[0]));
}

// ---- Secure Pod binding ----------------------------------------------------------------------------------------

function checkP256Spki(spki, name) {
  try {
    const info = subjectPublicKeyInfo(readOne(spki, TAG.SEQUENCE, name), name);
    if (info.algorithm === OID.EC_PUBLIC_KEY && info.curve === OID.PRIME256V1 && info.unusedBits === 0 &&
      info.publicKey.length === 65 && info.publicKey[0] === 0x04) return;
  } catch (e) {
    if (!(e instanceof DerError)) throw e;
  }
  throw new AttestationError('binding', `the ${name} bound in the attestation is not a P-256 SubjectPublicKeyInfo`);
}

/**
 * The Secure Pod keys a verified document binds (docs/SPEC.md §2.2): the pod key's SPKI in `public_key`, and
 * `[receipt_key_spki: bstr, config_hash: bstr32]` (deterministic CBOR) in `user_data`.
 *
 * @param {VerifiedAttestation} result  what verifyAttestation returned (never an unverified document)
 * @returns {Promise<{podKeySpki: Uint8Array, fingerprint: string, fingerprintBytes: Uint8Array,
 *   receiptKeySpki: Uint8Array, configHash: Uint8Array}>}  `fingerprint` is hex SHA-256(podKeySpki), the pod key
 *   fingerprint requests name.
 * @throws {AttestationError} code 'binding' when the document does not carry a Secure Pod binding
 */
export async function podBinding(result) {
  const subtle = getSubtle();
  if (!result || !(result.pcrs instanceof Map) || typeof result.rootSha256 !== 'string') {
    throw new AttestationError('options', 'podBinding needs the result of verifyAttestation');
  }
  if (!(result.publicKey instanceof Uint8Array)) {
    const why = 'the attestation binds no public_key: it does not come from a Secure Pod enclave';
    throw new AttestationError('binding', why);
  }
  if (!(result.userData instanceof Uint8Array)) {
    const why = 'the attestation carries no user_data: it does not come from a Secure Pod enclave';
    throw new AttestationError('binding', why);
  }
  let data;
  try {
    data = cborDecode(result.userData);
  } catch (e) {
    if (!(e instanceof CborError)) throw e;
    data = null;
  }
  const shaped = Array.isArray(data) && data.length === 2 && data[0] instanceof Uint8Array &&
    data[1] instanceof Uint8Array && data[0].length <= 1024 && data[1].length === 32;
  if (!shaped) {
    throw new AttestationError(
      'binding',
      'the attestation\'s user_data is not [receipt_key_spki, config_hash]: not a Secure Pod enclave of this version',
    );
  }
  const podKeySpki = Uint8Array.from(result.publicKey);
  checkP256Spki(podKeySpki, 'pod key');
  checkP256Spki(data[0], 'receipt key');
  const fingerprintBytes = await sha256(subtle, podKeySpki);
  return Object.freeze({
    podKeySpki,
    fingerprint: toHex(fingerprintBytes),
    fingerprintBytes,
    receiptKeySpki: data[0],
    configHash: data[1],
  });
}
