// Signed requests (docs/SPEC.md §4): what a user sends to ask the pod for a document.
//
//   request        = [1, op, room_id: bstr32, doc_id: bstr(1..64), header_hash: bstr32, user_id: bstr32,
//                     nonce: bstr(16..32), issued_at_ms: uint, pod_key_fingerprint: bstr32]
//   signed_request = [request: bstr, signature: bstr64]        signature in context "request"
//   request_hash   = labeled_hash("request", signed_request)
//
// The request names the exact stored blob (its header hash) and the pod key the client verified, so a captured
// request cannot be redirected to another document or pod; the nonce and time let the pod refuse replays.

import { encode } from './cbor.js';
import { PodFormatError, labeledHash, randomBytes, checkBytes, checkUint, HASH_LEN } from './bytes.js';
import { decodeCbor, checkArray, decodeSigned, encodeSigned, sign, verifyOrThrow } from './keys.js';
import { docIdBytes, MAX_DOC_ID_LEN } from './document.js';

/** `op` of a re-encryption request. */
export const OP_RE_ENCRYPT = 1;
/** Shortest nonce accepted. */
export const MIN_NONCE_LEN = 16;
/** Longest nonce accepted. */
export const MAX_NONCE_LEN = 32;
/** Largest encoded signed request. */
export const MAX_SIGNED_REQUEST_LEN = 1024;

/**
 * @typedef {object} RequestFields
 * @property {number} op
 * @property {Uint8Array} roomId
 * @property {Uint8Array} docId
 * @property {Uint8Array} headerHash
 * @property {Uint8Array} userId
 * @property {Uint8Array} nonce
 * @property {number} issuedAtMs
 * @property {Uint8Array} podFingerprint
 */

/**
 * Makes and signs a re-encryption request.
 * @param {{keys: {signPrivate: CryptoKey, userId: Uint8Array}, roomId: Uint8Array, docId: Uint8Array | string,
 *   headerHash: Uint8Array, nonce?: Uint8Array, issuedAtMs?: number, podFingerprint: Uint8Array}} options
 *   `nonce` defaults to 16 fresh random bytes, `issuedAtMs` to now
 * @returns {Promise<{bytes: Uint8Array, requestHash: Uint8Array, fields: RequestFields}>} `bytes` is the
 *   signed request to send
 */
export async function signedRequest({ keys, roomId, docId, headerHash, nonce, issuedAtMs, podFingerprint }) {
  const arg = 'invalid_argument';
  const fields = {
    op: OP_RE_ENCRYPT,
    roomId: checkBytes(roomId, HASH_LEN, HASH_LEN, 'room id', arg),
    docId: docIdBytes(docId),
    headerHash: checkBytes(headerHash, HASH_LEN, HASH_LEN, 'header hash', arg),
    userId: checkBytes(keys?.userId, HASH_LEN, HASH_LEN, 'user id', arg),
    nonce: checkBytes(nonce ?? randomBytes(MIN_NONCE_LEN), MIN_NONCE_LEN, MAX_NONCE_LEN, 'nonce', arg),
    issuedAtMs: checkUint(issuedAtMs ?? Date.now(), 'issued_at_ms', arg),
    podFingerprint: checkBytes(podFingerprint, HASH_LEN, HASH_LEN, 'pod key fingerprint', arg),
  };
  const request = encode([1, fields.op, fields.roomId, fields.docId, fields.headerHash, fields.userId, fields.nonce,
    fields.issuedAtMs, fields.podFingerprint]);
  const bytes = encodeSigned(request, await sign(keys.signPrivate, 'request', request));
  if (bytes.length > MAX_SIGNED_REQUEST_LEN) throw new PodFormatError('too_large', 'signed request too large');
  return { bytes, requestHash: await requestHash(bytes), fields };
}

/**
 * `labeled_hash("request", signed_request)`.
 * @param {Uint8Array} signed
 * @returns {Promise<Uint8Array>}
 */
export async function requestHash(signed) {
  return labeledHash('request', signed);
}

/**
 * Parses a signed request without checking its signature (the fields say whose key to check it with).
 * @param {Uint8Array} bytes
 * @returns {{fields: RequestFields, request: Uint8Array, signature: Uint8Array, bytes: Uint8Array}}
 */
export function parseSignedRequest(bytes) {
  const { payload, signature } = decodeSigned(bytes, MAX_SIGNED_REQUEST_LEN, 'signed request');
  const [version, op, roomId, docId, hh, userId, nonce, issuedAtMs, podFingerprint] =
    checkArray(decodeCbor(payload, 'request'), 9, 'a request');
  if (version !== 1) throw new PodFormatError('malformed', 'unknown request version');
  checkUint(op, 'op');
  if (op !== OP_RE_ENCRYPT) throw new PodFormatError('malformed', 'unknown operation');
  const fields = {
    op,
    roomId: checkBytes(roomId, HASH_LEN, HASH_LEN, 'room id'),
    docId: checkBytes(docId, 1, MAX_DOC_ID_LEN, 'document id'),
    headerHash: checkBytes(hh, HASH_LEN, HASH_LEN, 'header hash'),
    userId: checkBytes(userId, HASH_LEN, HASH_LEN, 'user id'),
    nonce: checkBytes(nonce, MIN_NONCE_LEN, MAX_NONCE_LEN, 'nonce'),
    issuedAtMs: checkUint(issuedAtMs, 'issued_at_ms'),
    podFingerprint: checkBytes(podFingerprint, HASH_LEN, HASH_LEN, 'pod key fingerprint'),
  };
  return { fields, request: payload, signature, bytes };
}

/**
 * Parses a signed request and checks its signature under the user's signing key.
 * @param {Uint8Array} bytes
 * @param {Uint8Array | CryptoKey} signSpki the user's registered signing key
 * @returns {Promise<RequestFields>}
 */
export async function verifySignedRequest(bytes, signSpki) {
  const parsed = parseSignedRequest(bytes);
  await verifyOrThrow(signSpki, 'request', parsed.request, parsed.signature);
  return parsed.fields;
}
