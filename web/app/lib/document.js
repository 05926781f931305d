// Documents (docs/SPEC.md §3.3): stored documents, sealed to the pod (kind 1), and delivered documents,
// re-encrypted for one user (kind 2), share one layout:
//
//   document    = "SPD1" ‖ u32be(len(header)) ‖ header ‖ STREAM(payload_key, plaintext)
//   header      = [kind, room_id: bstr32, doc_id: bstr(1..64), recipient: bstr32, wrap_alg, wrapped_key: bstr]
//   header_core = [kind, room_id, doc_id, recipient, wrap_alg]
//   info        = labeled_hash("wrap", header_core)
//   wrapped_key = HPKE(recipient, info, file_key) | RSA-OAEP-SHA256(recipient, label = info, file_key)
//   payload_key = HKDF-SHA256(salt = labeled_hash("payload", [kind, room_id, doc_id]), ikm = file_key,
//                             info = "secure-pod/v1/payload", L = 32)
//
// The room and document ids are bound twice (the wrap's info and the payload key). The payload key does not
// depend on the recipient or wrapped key so that a pod key rotation can rewrap a stored document and keep its
// body; the header hash still covers every header byte.

import { encode } from './cbor.js';
import {
  PodFormatError, subtle, concat, utf8, equalBytes, labeledHash, fingerprint, randomBytes, checkBytes, checkUint,
  HASH_LEN,
} from './bytes.js';
import { decodeCbor, checkArray, importEncryptionKey, ENC_HPKE_P256, ENC_RSA_OAEP_4096 } from './keys.js';
import { hpkeSeal, hpkeOpen } from './hpke.js';
import { ChunkSealer, ChunkOpener, pieces, sealedLength, collect } from './stream.js';

/** The first four bytes of every document. */
export const MAGIC = utf8('SPD1');
/** Bytes before the header: magic and length. */
export const PREFIX_LEN = 8;
/** Largest header (an RSA-4096 wrapped key is 512 bytes). */
export const MAX_HEADER_LEN = 2048;
/** Largest document id. */
export const MAX_DOC_ID_LEN = 64;
/** Length of a file key. */
export const FILE_KEY_LEN = 32;
/** `kind` of a document sealed to the pod. */
export const KIND_SEALED_TO_POD = 1;
/** `kind` of a copy re-encrypted for one user. */
export const KIND_RE_ENCRYPTED = 2;

/**
 * @typedef {object} Header A parsed document header.
 * @property {number} kind 1 (sealed to the pod) or 2 (re-encrypted for a user)
 * @property {Uint8Array} roomId 32 bytes
 * @property {Uint8Array} docId 1..64 bytes
 * @property {Uint8Array} recipient fingerprint (SHA-256 of the SPKI) of the key the file key is wrapped to
 * @property {number} wrapAlg 1 (RSA-OAEP-4096) or 2 (HPKE P-256)
 * @property {Uint8Array} wrappedKey
 * @property {Uint8Array} bytes the encoded header, exactly as received
 */

/**
 * Document ids as bytes: a string is taken as UTF-8 (the CLI's default id is the file name).
 * @param {Uint8Array | string} docId
 * @returns {Uint8Array}
 */
export function docIdBytes(docId) {
  const b = typeof docId === 'string' ? utf8(docId) : docId;
  return checkBytes(b, 1, MAX_DOC_ID_LEN, 'document id', 'invalid_argument');
}

/**
 * Parses a header (the bytes between the prefix and the body).
 * @param {Uint8Array} bytes
 * @returns {Header}
 */
export function parseHeader(bytes) {
  if (bytes.length > MAX_HEADER_LEN) throw new PodFormatError('too_large', 'document header too large');
  const [kind, roomId, docId, recipient, wrapAlg, wrappedKey] =
    checkArray(decodeCbor(bytes, 'document header'), 6, 'a document header');
  checkUint(kind, 'kind');
  if (kind !== KIND_SEALED_TO_POD && kind !== KIND_RE_ENCRYPTED) throw new PodFormatError('malformed', 'unknown document kind');
  checkBytes(roomId, HASH_LEN, HASH_LEN, 'room id');
  checkBytes(docId, 1, MAX_DOC_ID_LEN, 'document id');
  checkBytes(recipient, HASH_LEN, HASH_LEN, 'recipient');
  checkUint(wrapAlg, 'wrap_alg');
  if (wrapAlg !== ENC_HPKE_P256 && wrapAlg !== ENC_RSA_OAEP_4096) {
    throw new PodFormatError('malformed', 'unknown wrapping algorithm');
  }
  checkBytes(wrappedKey, 0, MAX_HEADER_LEN, 'wrapped key');
  return { kind, roomId, docId, recipient, wrapAlg, wrappedKey, bytes };
}

/**
 * Reads the prefix and header from the start of `buf`.
 * @param {Uint8Array} buf the document's first bytes (any number of them)
 * @returns {{header: Header, bodyStart: number} | null} null when more bytes are needed
 */
export function readHeader(buf) {
  if (buf.length < PREFIX_LEN) {
    // Refuse a wrong magic as soon as it shows, rather than waiting for eight bytes.
    const n = Math.min(buf.length, 4);
    if (!equalBytes(buf.subarray(0, n), MAGIC.subarray(0, n))) {
      throw new PodFormatError('malformed', 'not a Secure Pod document (bad magic)');
    }
    return null;
  }
  if (!equalBytes(buf.subarray(0, 4), MAGIC)) throw new PodFormatError('malformed', 'not a Secure Pod document (bad magic)');
  const len = new DataView(buf.buffer, buf.byteOffset + 4, 4).getUint32(0);
  if (len > MAX_HEADER_LEN) throw new PodFormatError('too_large', 'document header too large');
  if (buf.length < PREFIX_LEN + len) return null;
  return { header: parseHeader(buf.slice(PREFIX_LEN, PREFIX_LEN + len)), bodyStart: PREFIX_LEN + len };
}

/**
 * `labeled_hash("header", header)`: what signed requests and receipts name.
 * @param {Header | Uint8Array} header a parsed header or its bytes
 * @returns {Promise<Uint8Array>}
 */
export async function headerHash(header) {
  return labeledHash('header', header instanceof Uint8Array ? header : header.bytes);
}

/**
 * `labeled_hash("wrap", header_core)`: the HPKE info / OAEP label of a header's wrapped key.
 * @param {{kind: number, roomId: Uint8Array, docId: Uint8Array, recipient: Uint8Array, wrapAlg: number}} h
 * @returns {Promise<Uint8Array>}
 */
export async function wrapInfo(h) {
  return labeledHash('wrap', encode([h.kind, h.roomId, h.docId, h.recipient, h.wrapAlg]));
}

/**
 * The payload (STREAM) key of a document, as a non-extractable AES-256-GCM key.
 * @param {{kind: number, roomId: Uint8Array, docId: Uint8Array}} h
 * @param {Uint8Array} fileKey 32 bytes
 * @param {'encrypt' | 'decrypt'} usage
 * @returns {Promise<CryptoKey>}
 */
export async function payloadKey(h, fileKey, usage) {
  const salt = await labeledHash('payload', encode([h.kind, h.roomId, h.docId]));
  const ikm = await subtle.importKey('raw', fileKey, 'HKDF', false, ['deriveKey']);
  return subtle.deriveKey({ name: 'HKDF', hash: 'SHA-256', salt, info: utf8('secure-pod/v1/payload') }, ikm,
    { name: 'AES-GCM', length: 256 }, false, [usage]);
}

/**
 * Starts a document for a recipient: a fresh file key, wrapped; the prefixed header; the body's sealer. The
 * file key leaves this function only wrapped (its bytes are zeroed).
 * @param {{kind: number, roomId: Uint8Array, docId: Uint8Array | string,
 *   recipient: {encAlg: number, spki: Uint8Array}}} options
 * @returns {Promise<{header: Header, prefix: Uint8Array, sealer: ChunkSealer}>}
 */
export async function beginDocument({ kind, roomId, docId, recipient }) {
  if (kind !== KIND_SEALED_TO_POD && kind !== KIND_RE_ENCRYPTED) {
    throw new PodFormatError('invalid_argument', 'kind must be 1 or 2');
  }
  checkBytes(roomId, HASH_LEN, HASH_LEN, 'room id', 'invalid_argument');
  const doc = docIdBytes(docId);
  const wrapAlg = recipient?.encAlg;
  const publicKey = await importEncryptionKey(wrapAlg, recipient?.spki);
  const recipientFpr = await fingerprint(recipient.spki);
  const info = await wrapInfo({ kind, roomId, docId: doc, recipient: recipientFpr, wrapAlg });
  const fileKey = randomBytes(FILE_KEY_LEN);
  try {
    const wrappedKey = wrapAlg === ENC_HPKE_P256
      ? await hpkeSeal(recipient.spki, info, fileKey)
      : new Uint8Array(await subtle.encrypt({ name: 'RSA-OAEP', label: info }, publicKey, fileKey));
    const bytes = encode([kind, roomId, doc, recipientFpr, wrapAlg, wrappedKey]);
    const header = parseHeader(bytes);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, bytes.length);
    const sealer = new ChunkSealer(await payloadKey(header, fileKey, 'encrypt'));
    return { header, prefix: concat(MAGIC, len, bytes), sealer };
  } finally {
    fileKey.fill(0);
  }
}

function sourceSize(source) {
  if (source instanceof Uint8Array || source instanceof ArrayBuffer) return source.byteLength;
  if (typeof Blob !== 'undefined' && source instanceof Blob) return source.size;
  return undefined;
}

/**
 * Seals a document from a source of any size, chunk by chunk with bounded memory.
 * @param {{kind: number, roomId: Uint8Array, docId: Uint8Array | string, recipient: {encAlg: number, spki: Uint8Array},
 *   source: Parameters<typeof pieces>[0], totalBytes?: number,
 *   onProgress?: (plaintextBytesDone: number, totalBytes: number | undefined) => void}} options
 * @returns {Promise<{header: Header, headerHash: Uint8Array, length: number | undefined,
 *   pieces: AsyncGenerator<Uint8Array>}>} `pieces` yields the prefixed header then each sealed chunk; `length`
 *   is the document's size when the plaintext's is known (from `totalBytes`, a Uint8Array or a Blob)
 */
export async function sealDocumentStream({ kind, roomId, docId, recipient, source, totalBytes, onProgress }) {
  const { header, prefix, sealer } = await beginDocument({ kind, roomId, docId, recipient });
  const total = totalBytes ?? sourceSize(source);
  async function* run() {
    yield prefix;
    for await (const p of pieces(source)) {
      yield* await sealer.push(p);
      onProgress?.(sealer.bytesIn, total);
    }
    yield await sealer.end();
    if (total !== undefined && sealer.bytesIn !== total) {
      throw new PodFormatError('invalid_argument', `the source gave ${sealer.bytesIn} bytes, not ${total}`);
    }
    onProgress?.(sealer.bytesIn, total);
  }
  return {
    header,
    headerHash: await headerHash(header),
    length: total === undefined ? undefined : prefix.length + sealedLength(total),
    pieces: run(),
  };
}

/**
 * Seals a whole document in memory.
 * @param {{kind: number, roomId: Uint8Array, docId: Uint8Array | string, recipient: {encAlg: number, spki: Uint8Array},
 *   plaintext: Uint8Array | Blob, onProgress?: (done: number, total: number | undefined) => void}} options
 * @returns {Promise<Uint8Array>}
 */
export async function sealDocument({ plaintext, ...rest }) {
  const s = await sealDocumentStream({ ...rest, source: plaintext });
  return collect(s.pieces, s.length);
}

/**
 * Seals a document to the pod (kind 1) for a room, in memory. The caller must have verified `podSpki` through
 * the pod's attestation.
 * @param {{podSpki: Uint8Array, roomId: Uint8Array, docId: Uint8Array | string, plaintext?: Uint8Array | Blob,
 *   source?: Parameters<typeof pieces>[0], onProgress?: (done: number, total: number | undefined) => void}} options
 *   `plaintext`, or any `source` {@link pieces} takes (the result is in memory either way; for bounded memory
 *   use {@link sealToPodStream})
 * @returns {Promise<Uint8Array>} the document
 */
export async function sealToPod({ podSpki, roomId, docId, plaintext, source, onProgress }) {
  return sealDocument({
    kind: KIND_SEALED_TO_POD, roomId, docId, recipient: { encAlg: ENC_HPKE_P256, spki: podSpki },
    plaintext: plaintext ?? source, onProgress,
  });
}

/**
 * Seals a document to the pod (kind 1) from a source of any size (a File, a ReadableStream, ...), with bounded
 * memory; see {@link sealDocumentStream} for what it returns.
 * @param {{podSpki: Uint8Array, roomId: Uint8Array, docId: Uint8Array | string, source: Parameters<typeof pieces>[0],
 *   totalBytes?: number, onProgress?: (done: number, total: number | undefined) => void}} options
 */
export async function sealToPodStream({ podSpki, roomId, docId, source, totalBytes, onProgress }) {
  return sealDocumentStream({
    kind: KIND_SEALED_TO_POD, roomId, docId, recipient: { encAlg: ENC_HPKE_P256, spki: podSpki }, source, totalBytes,
    onProgress,
  });
}

/**
 * @typedef {object} UnwrapKeys What opening a document needs (a UserKeys object from keys.js is one).
 * @property {number} encAlg
 * @property {CryptoKey} encPrivate
 * @property {Uint8Array} encSpki
 */

/**
 * Unwraps a header's file key and returns the body's opener. Every failure (a header for another recipient or
 * algorithm, a wrapped key that does not open, a file key of the wrong length) is `PodFormatError('decrypt')`.
 * @param {Header} header
 * @param {UnwrapKeys} keys
 * @returns {Promise<ChunkOpener>}
 */
export async function unwrapDocument(header, keys) {
  const fail = (cause) => new PodFormatError('decrypt', 'decryption failed', { cause });
  if (header.wrapAlg !== keys.encAlg || !equalBytes(header.recipient, await fingerprint(keys.encSpki))) throw fail();
  const info = await wrapInfo(header);
  let fileKey;
  try {
    fileKey = header.wrapAlg === ENC_HPKE_P256
      ? await hpkeOpen(keys.encPrivate, keys.encSpki, info, header.wrappedKey)
      : new Uint8Array(await subtle.decrypt({ name: 'RSA-OAEP', label: info }, keys.encPrivate, header.wrappedKey));
  } catch (e) {
    throw fail(e);
  }
  try {
    if (fileKey.length !== FILE_KEY_LEN) throw fail();
    return new ChunkOpener(await payloadKey(header, fileKey, 'decrypt'));
  } finally {
    fileKey.fill(0);
  }
}

/**
 * @typedef {object} Expectation What the caller asked for; a header naming anything else is refused with
 *   `wrong_document` before its key is unwrapped. Every field is optional.
 * @property {number} [kind]
 * @property {Uint8Array} [roomId]
 * @property {Uint8Array | string} [docId]
 * @property {Uint8Array} [headerHash]
 */

async function checkExpectation(header, expect) {
  const wrong = (what) => new PodFormatError('wrong_document', `the document's ${what} is not the one expected`);
  if (expect.kind !== undefined && header.kind !== expect.kind) throw wrong('kind');
  if (expect.roomId !== undefined && !equalBytes(header.roomId, expect.roomId)) throw wrong('room');
  if (expect.docId !== undefined && !equalBytes(header.docId, docIdBytes(expect.docId))) throw wrong('id');
  if (expect.headerHash !== undefined && !equalBytes(await headerHash(header), expect.headerHash)) throw wrong('header');
}

/**
 * Opens a document incrementally: push pieces of any size, get plaintext chunks as they authenticate. The
 * plaintext is complete only when {@link DocumentOpener#end} succeeds.
 */
export class DocumentOpener {
  /**
   * @param {{keys: UnwrapKeys, expect?: Expectation}} options
   */
  constructor({ keys, expect = {} }) {
    this.keys = keys;
    this.expect = expect;
    /** @type {Header | null} the header, once read */
    this.header = null;
    /** @type {Uint8Array | null} its hash, once read */
    this.headerHash = null;
    this.head = new Uint8Array(0);
    this.body = null;
  }

  /**
   * Takes the next piece of the document.
   * @param {Uint8Array} piece
   * @returns {Promise<Uint8Array[]>} plaintext chunks authenticated so far (possibly none)
   */
  async push(piece) {
    if (this.body) return this.body.push(piece);
    // Until the header is complete at most PREFIX_LEN + MAX_HEADER_LEN bytes are held (readHeader refuses a
    // longer announced header), plus the piece that completes it.
    this.head = concat(this.head, piece);
    const r = readHeader(this.head);
    if (r === null) return [];
    await checkExpectation(r.header, this.expect);
    const body = await unwrapDocument(r.header, this.keys);
    this.header = r.header;
    this.headerHash = await headerHash(r.header);
    this.body = body;
    const rest = this.head.subarray(r.bodyStart);
    this.head = new Uint8Array(0);
    return body.push(rest);
  }

  /**
   * Ends the input; fails if the document is truncated or has bytes after its last chunk.
   * @returns {Promise<Uint8Array[]>} the last plaintext chunk
   */
  async end() {
    if (!this.body) throw new PodFormatError('truncated', 'the document ends inside its header');
    return [await this.body.end()];
  }
}

/**
 * Opens a document from a source of any size, yielding plaintext chunks as they authenticate (bounded memory).
 * The generator throws at the end on truncation: consume it to the end before trusting the output as whole.
 * @param {{keys: UnwrapKeys, source: Parameters<typeof pieces>[0], expect?: Expectation,
 *   onHeader?: (header: Header, headerHash: Uint8Array) => void | Promise<void>,
 *   onProgress?: (documentBytesDone: number) => void}} options
 * @returns {AsyncGenerator<Uint8Array>}
 */
export async function* openDocumentStream({ keys, source, expect, onHeader, onProgress }) {
  const o = new DocumentOpener({ keys, expect });
  let done = 0;
  let announced = false;
  for await (const p of pieces(source)) {
    const out = await o.push(p);
    if (o.header && !announced) {
      announced = true;
      await onHeader?.(o.header, o.headerHash);
    }
    yield* out;
    done += p.length;
    onProgress?.(done);
  }
  yield* await o.end();
}

/**
 * Opens a whole document held in memory.
 * @param {{keys: UnwrapKeys, document: Uint8Array, expect?: Expectation}} options
 * @returns {Promise<{header: Header, headerHash: Uint8Array, plaintext: Uint8Array}>}
 */
export async function openDocument({ keys, document, expect }) {
  let header = null;
  let hash = null;
  const plaintext = await collect(openDocumentStream({
    keys, source: document, expect, onHeader: (h, x) => { header = h; hash = x; },
  }), document.length);
  return { header, headerHash: hash, plaintext };
}
