// Byte helpers, the one error type and the labelled hash of docs/SPEC.md §1, shared by every pod module.
//
// Everything here works on Uint8Array and uses only WebCrypto (`globalThis.crypto`), so it runs unchanged in a
// browser and in Node 20.

/** WebCrypto's SubtleCrypto, present in browsers (secure contexts) and in Node 20. */
export const subtle = globalThis.crypto?.subtle;

/**
 * Every error the pod formats raise. `code` is stable and meant for programs; `message` is for people and never
 * holds a secret.
 *
 * Codes: `malformed` (not what docs/SPEC.md says), `too_large`, `invalid_public_key`, `invalid_private_key`,
 * `unsupported`, `invalid_argument` (a caller's mistake), `decrypt` (any failure to unwrap or authenticate: one
 * code on purpose), `truncated` (a stream that ends before its last chunk or goes on after it), `chunk_length`,
 * `stream_too_long`, `bad_signature`, `membership` (a log entry refused), `audit` (`seq` says where),
 * `receipt_mismatch`, `wrong_document` (a header that is not the one expected).
 */
export class PodFormatError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{seq?: number, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'PodFormatError';
    this.code = code;
    if (details.seq !== undefined) this.seq = details.seq;
  }
}

/** Length of a SHA-256 output, of ids and of fingerprints. */
export const HASH_LEN = 32;

const encoder = new TextEncoder();

/**
 * UTF-8 bytes of a string.
 * @param {string} s
 * @returns {Uint8Array}
 */
export function utf8(s) {
  return encoder.encode(s);
}

/**
 * Concatenates byte arrays.
 * @param {...Uint8Array} parts
 * @returns {Uint8Array}
 */
export function concat(...parts) {
  return concatAll(parts);
}

/**
 * Concatenates a list of byte arrays (any length of list: no argument spreading).
 * @param {Uint8Array[]} parts
 * @returns {Uint8Array}
 */
export function concatAll(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * True when two byte arrays hold the same bytes. Not constant-time: use it on public values only (hashes, ids).
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 * @returns {boolean}
 */
export function equalBytes(a, b) {
  if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array) || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Lowercase hex of bytes.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function toHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/**
 * Bytes of a hex string (either case, even length, nothing else).
 * @param {string} text
 * @returns {Uint8Array}
 */
export function fromHex(text) {
  if (typeof text !== 'string' || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new PodFormatError('malformed', 'not a hex string');
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = new Map([...B64].map((c, i) => [c, i]));

/**
 * Standard base64 (RFC 4648 §4) with padding, as the CLI writes it.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    s += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
    s += i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=';
    s += i + 2 < bytes.length ? B64[n & 63] : '=';
  }
  return s;
}

/**
 * Decodes standard base64 strictly: padded, no whitespace, no stray bits (one encoding per value, like the
 * CLI's decoder).
 * @param {string} text
 * @returns {Uint8Array}
 */
export function fromBase64(text) {
  const bad = () => new PodFormatError('malformed', 'not canonical base64');
  if (typeof text !== 'string' || text.length % 4 !== 0) throw bad();
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    const last = i + 4 === text.length;
    let n = 0;
    for (let j = 0; j < 4; j++) {
      const c = text[i + j];
      let v;
      if (c === '=' && last && j >= 4 - pad) v = 0;
      else if ((v = B64_INDEX.get(c)) === undefined) throw bad();
      n = (n << 6) | v;
    }
    // The bits a padded group does not use must be zero, or two strings would decode to the same bytes.
    if (last && pad === 2 && (n & 0xffff) !== 0) throw bad();
    if (last && pad === 1 && (n & 0xff) !== 0) throw bad();
    out[o++] = (n >> 16) & 0xff;
    if (o < out.length) out[o++] = (n >> 8) & 0xff;
    if (o < out.length) out[o++] = n & 0xff;
  }
  return out;
}

/**
 * `n` random bytes from the platform's CSPRNG.
 * @param {number} n
 * @returns {Uint8Array}
 */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 65,536 bytes per call.
  for (let i = 0; i < n; i += 65536) globalThis.crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

/**
 * SHA-256 of the concatenation of `parts`.
 * @param {...Uint8Array} parts
 * @returns {Promise<Uint8Array>}
 */
export async function sha256(...parts) {
  return new Uint8Array(await subtle.digest('SHA-256', parts.length === 1 ? parts[0] : concat(...parts)));
}

const PREFIX = utf8('secure-pod/v1/');

/** The hash labels of docs/SPEC.md §1. */
export const HASH_LABELS = Object.freeze([
  'user-id', 'header', 'wrap', 'payload', 'request', 'membership', 'audit', 'config', 'rotation',
]);

/**
 * `SHA-256("secure-pod/v1/" ‖ label ‖ 0x00 ‖ data)`: every hash in the protocol is labelled (SPEC §1).
 * @param {string} label one of {@link HASH_LABELS}
 * @param {Uint8Array} data
 * @returns {Promise<Uint8Array>}
 */
export async function labeledHash(label, data) {
  if (!HASH_LABELS.includes(label)) throw new PodFormatError('invalid_argument', `unknown hash label ${label}`);
  return sha256(PREFIX, utf8(label), Uint8Array.of(0), data);
}

/** Alias of {@link labeledHash} with the spec's spelling. */
export const labeled_hash = labeledHash;

/**
 * `SHA-256(SPKI)`, unlabelled so that any tool can compute it (SPEC §1): the pod key fingerprint, and the
 * `recipient` of a document header.
 * @param {Uint8Array} spki DER SubjectPublicKeyInfo
 * @returns {Promise<Uint8Array>}
 */
export async function fingerprint(spki) {
  return sha256(spki);
}

/** `"secure-pod/v1/" ‖ s ‖ 0x00`, the domain prefix of signatures and labelled hashes. */
export function domainPrefix(s) {
  return concat(PREFIX, utf8(s), Uint8Array.of(0));
}

/**
 * Checks a value is a Uint8Array with a length in [min, max]; returns it.
 * @param {unknown} v
 * @param {number} min
 * @param {number} max
 * @param {string} what for the error message
 * @param {string} [code]
 * @returns {Uint8Array}
 */
export function checkBytes(v, min, max, what, code = 'malformed') {
  if (!(v instanceof Uint8Array)) throw new PodFormatError(code, `${what} must be a byte string`);
  if (v.length < min || v.length > max) {
    throw new PodFormatError(code, min === max ? `${what} must be ${min} bytes` : `${what} must be ${min}..${max} bytes`);
  }
  return v;
}

/**
 * Checks a decoded CBOR value is an unsigned integer a JavaScript number holds exactly; returns it.
 * (cbor.js gives a BigInt above 2^53 - 1; no field of the spec needs that much, so such values are refused.)
 * @param {unknown} v
 * @param {string} what
 * @returns {number}
 */
export function checkUint(v, what, code = 'malformed') {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new PodFormatError(code, `${what} must be an unsigned integer below 2^53`);
  }
  return v;
}
