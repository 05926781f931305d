// The membership log (docs/SPEC.md §5): a room's members as a hash-chained log of signed entries.
//
//   entry        = [1, room_id: bstr (empty in genesis, else 32), seq, prev: bstr32, action, subject: bstr,
//                   issued_at_ms, signer: bstr32]
//   signed_entry = [entry: bstr, signature: bstr64]     context "membership", by the signer
//   entry_hash   = labeled_hash("membership", signed_entry)
//   room_id      = entry_hash of the genesis entry
//
// Actions: 1 create (subject: the owner's bundle; genesis only), 2 grant (a bundle; owner or admin), 3 revoke
// (a user id; the owner, or an admin for non-admin members; never the owner), 4 add admin (a bundle; owner),
// 5 remove admin (a user id; owner). Each entry extends the head: seq + 1, prev = head, time not earlier.
// The rules mirror protocol/src/membership.rs, which the pod enforces; a client replays the log to show who is
// a member now and checks every signature itself rather than trusting the server that stored the log.

import { encode } from './cbor.js';
import { PodFormatError, equalBytes, labeledHash, toHex, checkBytes, checkUint, HASH_LEN } from './bytes.js';
import { decodeCbor, checkArray, decodeSigned, encodeSigned, sign, verify, parseBundle } from './keys.js';

/** Create the room (genesis). */
export const ACTION_CREATE_ROOM = 1;
/** Grant a user access. */
export const ACTION_GRANT = 2;
/** Revoke a user's access. */
export const ACTION_REVOKE = 3;
/** Make a user an admin (and a member). */
export const ACTION_ADD_ADMIN = 4;
/** Make an admin an ordinary member again. */
export const ACTION_REMOVE_ADMIN = 5;
/** Largest encoded signed entry. */
export const MAX_ENTRY_LEN = 4096;
/** Most members a room holds. */
export const MAX_MEMBERS = 10000;

const ZERO_HASH = new Uint8Array(HASH_LEN);

/**
 * @typedef {object} MembershipEntry A parsed signed entry (signature not yet checked).
 * @property {Uint8Array} roomId empty in the genesis entry
 * @property {number} seq
 * @property {Uint8Array} prev
 * @property {number} action
 * @property {Uint8Array} subject a bundle (actions 1, 2, 4) or a user id (3, 5)
 * @property {number} issuedAtMs
 * @property {Uint8Array} signer the signer's user id
 * @property {Uint8Array} entryBytes the signed payload
 * @property {Uint8Array} signature
 * @property {Uint8Array} bytes the signed entry as received
 */

/**
 * @typedef {object} Member
 * @property {Uint8Array} userId
 * @property {import('./keys.js').Bundle} bundle
 * @property {boolean} admin (the owner is an admin)
 */

/**
 * @typedef {object} Room A room's membership as of its log's head (structured-cloneable).
 * @property {Uint8Array} roomId
 * @property {Uint8Array} ownerId
 * @property {Map<string, Member>} members keyed by the hex user id, the owner included
 * @property {number} seq the head entry's sequence number
 * @property {Uint8Array} head the head entry's hash
 * @property {number} lastTimeMs the head entry's time
 */

/**
 * Parses a signed membership entry (the signature is checked when it is applied to a room).
 * @param {Uint8Array} bytes
 * @returns {MembershipEntry}
 */
export function parseMembershipEntry(bytes) {
  const { payload, signature } = decodeSigned(bytes, MAX_ENTRY_LEN, 'membership entry');
  const [version, roomId, seq, prev, action, subject, issuedAtMs, signer] =
    checkArray(decodeCbor(payload, 'membership entry'), 8, 'a membership entry');
  if (version !== 1) throw new PodFormatError('malformed', 'unknown membership entry version');
  checkBytes(roomId, 0, HASH_LEN, 'room id');
  if (roomId.length !== 0 && roomId.length !== HASH_LEN) throw new PodFormatError('malformed', 'room id must be 32 bytes');
  checkUint(seq, 'seq');
  checkBytes(prev, HASH_LEN, HASH_LEN, 'prev');
  checkUint(action, 'action');
  if (action < ACTION_CREATE_ROOM || action > ACTION_REMOVE_ADMIN) {
    throw new PodFormatError('malformed', 'unknown membership action');
  }
  checkBytes(subject, 0, MAX_ENTRY_LEN, 'subject');
  checkUint(issuedAtMs, 'issued_at_ms');
  checkBytes(signer, HASH_LEN, HASH_LEN, 'signer');
  return { roomId, seq, prev, action, subject, issuedAtMs, signer, entryBytes: payload, signature, bytes };
}

/**
 * `labeled_hash("membership", signed_entry)`.
 * @param {Uint8Array} signedEntry
 * @returns {Promise<Uint8Array>}
 */
export async function entryHash(signedEntry) {
  return labeledHash('membership', signedEntry);
}

const refuse = (reason) => new PodFormatError('membership', `membership entry refused: ${reason}`);

async function checkSignature(bundle, e) {
  if (!(await verify(bundle.signSpki, 'membership', e.entryBytes, e.signature))) {
    throw new PodFormatError('bad_signature', 'the membership entry\'s signature does not verify');
  }
}

/**
 * Creates a room's state from its genesis entry (checked: shape, owner-signed, signature).
 * @param {Uint8Array | MembershipEntry} signed
 * @returns {Promise<Room>}
 */
export async function genesisRoom(signed) {
  const e = signed instanceof Uint8Array ? parseMembershipEntry(signed) : signed;
  if (e.action !== ACTION_CREATE_ROOM || e.seq !== 0 || e.roomId.length !== 0 || !equalBytes(e.prev, ZERO_HASH)) {
    throw refuse('the first entry must create the room (seq 0, no room id, zero prev)');
  }
  const owner = await parseBundle(e.subject);
  if (!equalBytes(owner.userId, e.signer)) throw refuse('the room must be created by its owner');
  await checkSignature(owner, e);
  const roomId = await entryHash(e.bytes);
  return {
    roomId,
    ownerId: owner.userId,
    members: new Map([[toHex(owner.userId), { userId: owner.userId, bundle: owner, admin: true }]]),
    seq: 0,
    head: roomId,
    lastTimeMs: e.issuedAtMs,
  };
}

/**
 * Applies the next entry to a room, checking its link, its signer's authority and its signature. The room is
 * changed only if the entry is accepted.
 * @param {Room} room
 * @param {Uint8Array | MembershipEntry} signed
 * @returns {Promise<Room>} the same room object, updated
 */
export async function applyMembershipEntry(room, signed) {
  const e = signed instanceof Uint8Array ? parseMembershipEntry(signed) : signed;
  if (!equalBytes(e.roomId, room.roomId)) throw refuse('the entry belongs to another room');
  if (e.seq !== room.seq + 1 || !equalBytes(e.prev, room.head)) throw refuse('the entry does not extend the log\'s head');
  if (e.issuedAtMs < room.lastTimeMs) throw refuse('the entry is dated before the one it follows');
  const signer = room.members.get(toHex(e.signer));
  if (!signer) throw refuse('the signer is not a member of the room');
  if (!signer.admin) throw refuse('only the owner and admins may change membership');
  const signerIsOwner = equalBytes(e.signer, room.ownerId);
  await checkSignature(signer.bundle, e);

  // Work out the change first; apply it only when every check has passed.
  let change;
  switch (e.action) {
    case ACTION_CREATE_ROOM:
      throw refuse('a room is created only once');
    case ACTION_GRANT:
    case ACTION_ADD_ADMIN: {
      const admin = e.action === ACTION_ADD_ADMIN;
      if (admin && !signerIsOwner) throw refuse('only the owner may add admins');
      const bundle = await parseBundle(e.subject);
      const key = toHex(bundle.userId);
      const existing = room.members.get(key);
      if (existing && admin && !existing.admin) {
        change = () => { existing.admin = true; };
      } else if (existing) {
        throw refuse('the user is already a member');
      } else {
        if (room.members.size >= MAX_MEMBERS) throw refuse('the room is full');
        change = () => room.members.set(key, { userId: bundle.userId, bundle, admin });
      }
      break;
    }
    case ACTION_REVOKE:
    case ACTION_REMOVE_ADMIN: {
      if (e.subject.length !== HASH_LEN) throw refuse('the subject must be a user id');
      if (equalBytes(e.subject, room.ownerId)) throw refuse('the owner cannot be revoked');
      const key = toHex(e.subject);
      const member = room.members.get(key);
      if (!member) throw refuse('the user is not a member');
      if (member.admin && !signerIsOwner) throw refuse('only the owner may revoke or demote an admin');
      if (e.action === ACTION_REMOVE_ADMIN) {
        if (!member.admin) throw refuse('the user is not an admin');
        change = () => { member.admin = false; };
      } else {
        change = () => room.members.delete(key);
      }
      break;
    }
    default:
      throw new PodFormatError('malformed', 'unknown membership action');
  }
  const hash = await entryHash(e.bytes);
  change();
  room.seq = e.seq;
  room.head = hash;
  room.lastTimeMs = e.issuedAtMs;
  return room;
}

/**
 * Replays a whole log (genesis first), verifying every entry, and returns who is a member now.
 * @param {Uint8Array[]} entries signed entries, in order
 * @param {{roomId?: Uint8Array}} [options] `roomId`: the room the log must be for
 * @returns {Promise<Room>}
 */
export async function replayMembership(entries, { roomId } = {}) {
  if (!Array.isArray(entries) || entries.length === 0) throw refuse('an empty log has no room');
  const room = await genesisRoom(entries[0]);
  if (roomId !== undefined && !equalBytes(room.roomId, roomId)) throw refuse('the log is for another room');
  for (let i = 1; i < entries.length; i++) await applyMembershipEntry(room, entries[i]);
  return room;
}

/**
 * The member with this user id, if they are one now.
 * @param {Room} room
 * @param {Uint8Array} userId
 * @returns {Member | undefined}
 */
export function memberOf(room, userId) {
  return room.members.get(toHex(userId));
}

/**
 * The members for display: the owner first, then admins, then the others, each group by user id.
 * @param {Room} room
 * @returns {Array<Member & {owner: boolean}>}
 */
export function memberList(room) {
  const rank = (m) => (equalBytes(m.userId, room.ownerId) ? 0 : m.admin ? 1 : 2);
  return [...room.members.values()]
    .map((m) => ({ ...m, owner: rank(m) === 0 }))
    .sort((a, b) => rank(a) - rank(b) || (toHex(a.userId) < toHex(b.userId) ? -1 : 1));
}

async function signEntry(signPrivate, fields) {
  const entry = encode([1, fields.roomId, fields.seq, fields.prev, fields.action, fields.subject, fields.issuedAtMs,
    fields.signer]);
  const bytes = encodeSigned(entry, await sign(signPrivate, 'membership', entry));
  if (bytes.length > MAX_ENTRY_LEN) throw new PodFormatError('too_large', 'membership entry too large');
  return bytes;
}

function bundleBytes(b) {
  const bytes = b instanceof Uint8Array ? b : b?.bytes ?? b?.bundle;
  if (!(bytes instanceof Uint8Array)) throw new PodFormatError('invalid_argument', 'give a key bundle');
  return bytes;
}

/**
 * Creates a room: the genesis entry, signed by its owner.
 * @param {{keys: {bundle: Uint8Array, userId: Uint8Array, signPrivate: CryptoKey}, issuedAtMs?: number}} options
 * @returns {Promise<{entry: Uint8Array, room: Room}>} `room.roomId` is the new room's id
 */
export async function createRoom({ keys, issuedAtMs = Date.now() }) {
  const entry = await signEntry(keys.signPrivate, {
    roomId: new Uint8Array(0), seq: 0, prev: ZERO_HASH, action: ACTION_CREATE_ROOM, subject: keys.bundle,
    issuedAtMs, signer: keys.userId,
  });
  return { entry, room: await genesisRoom(entry) };
}

/**
 * Signs the next entry of a room and checks it as the pod will, against a copy of `room` (so that a change the
 * signer may not make is refused here, not by the pod).
 * @param {{keys: {userId: Uint8Array, signPrivate: CryptoKey}, room: Room, action: number, subject: Uint8Array,
 *   issuedAtMs?: number}} options `issuedAtMs` defaults to now (or the head's time, if the clock is behind it)
 * @returns {Promise<{entry: Uint8Array, room: Room}>} the signed entry, and the room as it will be
 */
export async function signMembershipChange({ keys, room, action, subject, issuedAtMs }) {
  const entry = await signEntry(keys.signPrivate, {
    roomId: room.roomId, seq: room.seq + 1, prev: room.head, action, subject,
    issuedAtMs: issuedAtMs ?? Math.max(Date.now(), room.lastTimeMs), signer: keys.userId,
  });
  return { entry, room: await applyMembershipEntry(structuredClone(room), entry) };
}

/**
 * Grants a user access (owner or admin).
 * @param {{keys: object, room: Room, bundle: Uint8Array | {bytes: Uint8Array}, issuedAtMs?: number}} options
 * @returns {Promise<{entry: Uint8Array, room: Room}>}
 */
export function grantEntry({ keys, room, bundle, issuedAtMs }) {
  return signMembershipChange({ keys, room, action: ACTION_GRANT, subject: bundleBytes(bundle), issuedAtMs });
}

/**
 * Revokes a user's access (the owner; an admin for non-admin members).
 * @param {{keys: object, room: Room, userId: Uint8Array, issuedAtMs?: number}} options
 * @returns {Promise<{entry: Uint8Array, room: Room}>}
 */
export function revokeEntry({ keys, room, userId, issuedAtMs }) {
  return signMembershipChange({ keys, room, action: ACTION_REVOKE, subject: userId, issuedAtMs });
}

/**
 * Makes a user an admin (the owner only); a non-member becomes a member too.
 * @param {{keys: object, room: Room, bundle: Uint8Array | {bytes: Uint8Array}, issuedAtMs?: number}} options
 * @returns {Promise<{entry: Uint8Array, room: Room}>}
 */
export function addAdminEntry({ keys, room, bundle, issuedAtMs }) {
  return signMembershipChange({ keys, room, action: ACTION_ADD_ADMIN, subject: bundleBytes(bundle), issuedAtMs });
}

/**
 * Makes an admin an ordinary member again (the owner only).
 * @param {{keys: object, room: Room, userId: Uint8Array, issuedAtMs?: number}} options
 * @returns {Promise<{entry: Uint8Array, room: Room}>}
 */
export function removeAdminEntry({ keys, room, userId, issuedAtMs }) {
  return signMembershipChange({ keys, room, action: ACTION_REMOVE_ADMIN, subject: userId, issuedAtMs });
}
