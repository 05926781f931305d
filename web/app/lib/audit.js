// The audit log, its checkpoints and receipts (docs/SPEC.md §6), all signed by the pod's receipt key (whose
// SPKI the attestation document's user_data carries).
//
//   entry        = [1, seq, prev: bstr32, time_ms, user_id, room_id, doc_id, decision, reason: text(≤256),
//                   membership_head: bstr32, request_hash: bstr32]
//   signed_entry = [entry: bstr, signature]       context "audit"; entry_hash = labeled_hash("audit", signed_entry)
//   checkpoint   = [[1, seq, head: bstr32, time_ms]: bstr, signature]                        context "checkpoint"
//   receipt      = [[1, request_hash, response_header_hash, audit_seq, audit_entry_hash]: bstr, signature]
//                                                                                             context "receipt"
//
// A verifier checks every signature, that seq runs 0, 1, 2, … and that every prev is the previous entry's hash
// (the first is 32 zero bytes): that detects deleted, inserted, altered and reordered entries. A truncated tail
// still chains, so it shows only against a checkpoint or receipt naming an entry the log no longer has.

import { PodFormatError, equalBytes, labeledHash, checkBytes, checkUint, HASH_LEN } from './bytes.js';
import { decodeCbor, checkArray, decodeSigned, importVerifyKey, verifyOrThrow } from './keys.js';

/** Largest encoded signed audit entry. */
export const MAX_AUDIT_ENTRY_LEN = 2048;
/** Largest encoded signed checkpoint or receipt. */
export const MAX_SIGNED_SMALL_LEN = 256;
/** Longest reason text, in UTF-8 bytes. */
export const MAX_REASON_LEN = 256;
/** Decisions: the document was released. */
export const DECISION_ALLOW = 1;
/** Decisions: the request was refused. */
export const DECISION_DENY = 2;
/** Decisions: a security alert (a budget exhausted). */
export const DECISION_ALERT = 3;

const hash32 = (v, what) => checkBytes(v, HASH_LEN, HASH_LEN, what);
const keyOf = async (k) => (k instanceof Uint8Array ? importVerifyKey(k) : k);

/**
 * @typedef {object} AuditEntry
 * @property {number} seq
 * @property {Uint8Array} prev
 * @property {number} timeMs
 * @property {Uint8Array} userId
 * @property {Uint8Array} roomId
 * @property {Uint8Array} docId
 * @property {number} decision 1 allow, 2 deny, 3 alert
 * @property {string} reason
 * @property {Uint8Array} membershipHead
 * @property {Uint8Array} requestHash
 * @property {Uint8Array} hash `labeled_hash("audit", signed_entry)`
 * @property {Uint8Array} bytes the signed entry
 */

/**
 * Parses a signed audit entry and checks its signature under the receipt key.
 * @param {Uint8Array} bytes
 * @param {Uint8Array | CryptoKey} receiptKey the receipt key's SPKI, or the imported key
 * @returns {Promise<AuditEntry>}
 */
export async function parseAuditEntry(bytes, receiptKey) {
  const { payload, signature } = decodeSigned(bytes, MAX_AUDIT_ENTRY_LEN, 'audit entry');
  await verifyOrThrow(await keyOf(receiptKey), 'audit', payload, signature);
  const [version, seq, prev, timeMs, userId, roomId, docId, decision, reason, membershipHead, requestHash] =
    checkArray(decodeCbor(payload, 'audit entry'), 11, 'an audit entry');
  if (version !== 1) throw new PodFormatError('malformed', 'unknown audit entry version');
  checkUint(decision, 'decision');
  if (decision < DECISION_ALLOW || decision > DECISION_ALERT) throw new PodFormatError('malformed', 'unknown decision');
  if (typeof reason !== 'string') throw new PodFormatError('malformed', 'reason must be text');
  if (new TextEncoder().encode(reason).length > MAX_REASON_LEN) throw new PodFormatError('malformed', 'reason too long');
  return {
    seq: checkUint(seq, 'seq'),
    prev: hash32(prev, 'prev'),
    timeMs: checkUint(timeMs, 'time_ms'),
    userId: hash32(userId, 'user id'),
    roomId: hash32(roomId, 'room id'),
    docId: checkBytes(docId, 0, MAX_AUDIT_ENTRY_LEN, 'document id'),
    decision,
    reason,
    membershipHead: hash32(membershipHead, 'membership head'),
    requestHash: hash32(requestHash, 'request hash'),
    hash: await labeledHash('audit', bytes),
    bytes,
  };
}

/**
 * Parses a signed checkpoint and checks its signature.
 * @param {Uint8Array} bytes
 * @param {Uint8Array | CryptoKey} receiptKey
 * @returns {Promise<{seq: number, head: Uint8Array, timeMs: number}>}
 */
export async function parseCheckpoint(bytes, receiptKey) {
  const { payload, signature } = decodeSigned(bytes, MAX_SIGNED_SMALL_LEN, 'checkpoint');
  await verifyOrThrow(await keyOf(receiptKey), 'checkpoint', payload, signature);
  const [version, seq, head, timeMs] = checkArray(decodeCbor(payload, 'checkpoint'), 4, 'a checkpoint');
  if (version !== 1) throw new PodFormatError('malformed', 'unknown checkpoint version');
  return { seq: checkUint(seq, 'seq'), head: hash32(head, 'head'), timeMs: checkUint(timeMs, 'time_ms') };
}

/**
 * @typedef {object} Receipt
 * @property {Uint8Array} requestHash
 * @property {Uint8Array} responseHeaderHash
 * @property {number} auditSeq
 * @property {Uint8Array} auditEntryHash
 */

/**
 * Parses a signed receipt and checks its signature.
 * @param {Uint8Array} bytes
 * @param {Uint8Array | CryptoKey} receiptKey
 * @returns {Promise<Receipt>}
 */
export async function parseReceipt(bytes, receiptKey) {
  const { payload, signature } = decodeSigned(bytes, MAX_SIGNED_SMALL_LEN, 'receipt');
  await verifyOrThrow(await keyOf(receiptKey), 'receipt', payload, signature);
  const [version, requestHash, responseHeaderHash, auditSeq, auditEntryHash] =
    checkArray(decodeCbor(payload, 'receipt'), 5, 'a receipt');
  if (version !== 1) throw new PodFormatError('malformed', 'unknown receipt version');
  return {
    requestHash: hash32(requestHash, 'request hash'),
    responseHeaderHash: hash32(responseHeaderHash, 'response header hash'),
    auditSeq: checkUint(auditSeq, 'audit seq'),
    auditEntryHash: hash32(auditEntryHash, 'audit entry hash'),
  };
}

/**
 * Verifies the receipt the pod returns with a document: signed by the attested receipt key, naming this request
 * and this response's header. Without it a client cannot show that the release was logged.
 * @param {{receiptKeySpki: Uint8Array, receipt: Uint8Array, requestHash: Uint8Array, responseHeaderHash: Uint8Array}} options
 * @returns {Promise<Receipt>}
 */
export async function verifyReceipt({ receiptKeySpki, receipt, requestHash, responseHeaderHash }) {
  const r = await parseReceipt(receipt, receiptKeySpki);
  if (!equalBytes(r.requestHash, requestHash) || !equalBytes(r.responseHeaderHash, responseHeaderHash)) {
    throw new PodFormatError('receipt_mismatch', 'the receipt does not name this request and this response');
  }
  return r;
}

/**
 * Verifies a whole audit log from its first entry: every signature, consecutive sequence numbers, every link.
 * Each checkpoint and receipt (bytes, verified here, or already parsed) must name an entry of the log with that
 * exact hash, so a log cut short before one of them, or altered before it, fails.
 * @param {{entries: Uint8Array[], receiptKeySpki: Uint8Array, checkpoints?: Array<Uint8Array | {seq: number, head: Uint8Array}>,
 *   receipts?: Array<Uint8Array | Receipt>}} options
 * @returns {Promise<{count: number, head: Uint8Array, entries: AuditEntry[]}>} `head` is the last entry's hash
 *   (32 zero bytes for an empty log)
 * @throws {PodFormatError} code `audit`, with `seq` where verification failed
 */
export async function verifyAuditLog({ entries, receiptKeySpki, checkpoints = [], receipts = [] }) {
  const key = await importVerifyKey(receiptKeySpki);
  const parsed = [];
  let prev = new Uint8Array(HASH_LEN);
  for (let seq = 0; seq < entries.length; seq++) {
    const bad = (reason, cause) => new PodFormatError('audit', `audit entry ${seq}: ${reason}`, { seq, cause });
    let e;
    try {
      e = await parseAuditEntry(entries[seq], key);
    } catch (err) {
      throw bad('signature or format invalid', err);
    }
    if (e.seq !== seq) throw bad('sequence number out of order (an entry was deleted, inserted or moved)');
    if (!equalBytes(e.prev, prev)) throw bad('does not link to the previous entry');
    prev = e.hash;
    parsed.push(e);
  }
  const check = (seq, hash, what) => {
    const e = parsed[seq];
    if (e === undefined) {
      throw new PodFormatError('audit', `audit entry ${seq}: log ends before a ${what}'s entry (truncated)`, { seq });
    }
    if (!equalBytes(e.hash, hash)) throw new PodFormatError('audit', `audit entry ${seq}: differs from a signed ${what}`, { seq });
  };
  for (const c of checkpoints) {
    const cp = c instanceof Uint8Array ? await parseCheckpoint(c, key) : c;
    check(cp.seq, cp.head, 'checkpoint');
  }
  for (const r of receipts) {
    const rc = r instanceof Uint8Array ? await parseReceipt(r, key) : r;
    check(rc.auditSeq, rc.auditEntryHash, 'receipt');
  }
  return { count: parsed.length, head: prev, entries: parsed };
}
