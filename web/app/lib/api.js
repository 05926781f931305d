// The pod's HTTP API as the page uses it (parent-proxy/src/http.rs), with the rule podctl follows built in:
// nothing but `GET /pod/attestation` is ever sent to a pod whose attestation has not just verified.
//
// Every action (create a room, read or change its log, seal, open) starts by verifying the pod again with a fresh
// 32-byte nonce: COSE ES384 signature, chain to the pinned root, certificate validity at the document's own time
// (the fresh nonce is what proves it recent), PCRs against the published file, the nonce, and the Secure Pod
// binding (pod key SPKI, receipt key, config hash). A pod key that differs from the pinned one is refused.
// The keys an action uses come from that verification and from nowhere else.

import { verifyAttestation, podBinding, AttestationError } from './attest.js';
import {
  PodFormatError, toHex, fromHex, toBase64, fromBase64, randomBytes, equalBytes,
  readHeader, headerHash, DocumentOpener, sealToPodStream, signedRequest, verifyReceipt,
  createRoom, replayMembership, grantEntry, revokeEntry, entryHash,
  KIND_SEALED_TO_POD, KIND_RE_ENCRYPTED, PREFIX_LEN, MAX_HEADER_LEN, SEALED_CHUNK_SIZE, TAG_LEN,
} from './pod.js';

/**
 * Why an action failed, in a form the page can show. `kind` is one of:
 * - `attestation`  the pod's attestation did not verify: nothing else was sent to it
 * - `pin_mismatch` the pod verified but its key is not the pinned one: nothing else was sent
 * - `not_verified` an action was attempted before a verification succeeded (a bug in the caller)
 * - `unreachable`  the pod could not be reached (network error)
 * - `refused`      the pod answered an error: `status`, `code` and the pod's own `podMessage`
 * - `integrity`    the pod's answer does not check out (log, receipt, document): nothing was offered
 * - `local`        a local input is unusable (not a sealed document, a bad .pub, …)
 * - `timeout`      the pod stopped answering (no answer, or nothing more of one, for too long): nothing was offered
 * - `cancelled`    the person cancelled the action: nothing was offered
 */
export class PodApiError extends Error {
  /**
   * @param {string} kind
   * @param {string} message
   * @param {{status?: number, code?: string, podMessage?: string, cause?: unknown, details?: object}} [extra]
   */
  constructor(kind, message, { status, code, podMessage, cause, details } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'PodApiError';
    this.kind = kind;
    if (status !== undefined) this.status = status;
    if (code !== undefined) this.code = code;
    if (podMessage !== undefined) this.podMessage = podMessage;
    if (details !== undefined) this.details = details;
  }
}

/**
 * Largest sealed document the page opens. The upload streams from disk and the answer is decrypted as it arrives,
 * but the plaintext is kept (as Blob parts) until the receipt checks out, so the browser's memory is the limit;
 * `podctl open` streams any size to disk.
 */
export const OPEN_LIMIT = 2 * 2 ** 30;

/**
 * How long the page waits for the pod: for an answer's headers (and a small answer's body), and between two pieces
 * of a streamed answer. The proxy spools a document's answer before it sends the headers, so once they arrive the
 * pieces follow without pause; a gap this long means the pod or the connection has stalled.
 */
export const ANSWER_TIMEOUT_MS = 60_000;
export const IDLE_TIMEOUT_MS = 30_000;

/** Overwrites plaintext pieces before dropping them, so a refused copy does not linger until garbage collection. */
function wipe(parts) {
  for (const p of parts) p.fill(0);
  parts.length = 0;
}

/** Length of the attestation nonce the page sends. */
export const ATTESTATION_NONCE_LEN = 32;

/**
 * Plaintext length of a STREAM body of `sealedLen` bytes (SPEC §3.2: full chunks of 65,552 bytes, the last
 * shorter, every chunk 16 bytes of tag longer than its plaintext). Used for progress only.
 * @param {number} sealedLen
 * @returns {number}
 */
export function plaintextLength(sealedLen) {
  if (sealedLen <= 0) return 0;
  const chunks = Math.ceil(sealedLen / SEALED_CHUNK_SIZE);
  return Math.max(0, sealedLen - chunks * TAG_LEN);
}

/**
 * Characters that are invisible or change the direction of the text around them: C1 controls, the Arabic letter
 * mark (U+061C), zero-width spaces and joiners and the LRM/RLM marks (U+200B-U+200F), the bidirectional embeddings
 * and overrides (U+202A-U+202E), the word joiner and invisible operators (U+2060-U+2064), the bidirectional
 * isolates (U+2066-U+2069) and the zero-width no-break space (U+FEFF). In a document id they could make
 * "invoice\u202Efdp.exe" read as a PDF, or two different ids look the same.
 */
// eslint-disable-next-line no-control-regex
const HIDDEN_CHARS = /[\u0080-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/gu;

/**
 * A document id for display and as a file name: its UTF-8 text, with every invisible or direction-changing
 * character shown as `[U+XXXX]`; its hex when it is not UTF-8, is empty, or holds control characters.
 * @param {Uint8Array} docId
 * @returns {string}
 */
export function docIdText(docId) {
  let s;
  try {
    s = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(docId);
  } catch {
    return toHex(docId);
  }
  // eslint-disable-next-line no-control-regex
  if (s.length === 0 || /[\u0000-\u001f\u007f]/.test(s)) return toHex(docId);
  return s.replace(HIDDEN_CHARS, (c) => `[U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}]`);
}

/**
 * The longest prefix of `name` whose UTF-8 is at most `max` bytes (document ids are at most 64 bytes).
 * @param {string} name
 * @param {number} [max]
 * @returns {string}
 */
export function truncateUtf8(name, max = 64) {
  const enc = new TextEncoder();
  let out = '';
  for (const ch of name) {
    if (enc.encode(out + ch).length > max) break;
    out += ch;
  }
  return out;
}

/**
 * What a failed attestation means, for people: the failed rule in words, then the verifier's own account.
 * @param {unknown} e
 * @returns {string}
 */
export function describeAttestation(e) {
  if (e instanceof AttestationError) {
    const what = {
      cose: 'the document is not a valid COSE_Sign1 ES384 signature',
      payload: 'the document does not follow the Nitro attestation format',
      wrong_root: 'the document is not signed by a chain to the pinned root',
      chain: 'the certificate chain does not verify',
      expired: 'a certificate in the chain had expired',
      not_yet_valid: 'a certificate in the chain was not yet valid',
      timestamp: 'the document\'s time lies outside its signing certificate\'s validity',
      signature: 'the document\'s signature does not verify',
      debug_enclave: 'the enclave runs in debug mode',
      pcr_mismatch: 'the enclave\'s measurements (PCRs) do not match the published PCR file',
      nonce: 'the document does not carry the fresh nonce the page sent (a replay?)',
      stale: 'this computer\'s clock is off by more than 5 minutes, or the attestation is old — check the clock and ' +
        'verify again',
      future: 'this computer\'s clock is off by more than 5 minutes (the attestation is dated ahead of it) — check ' +
        'the clock and verify again',
      binding: 'the document does not bind a Secure Pod key',
      options: 'the verification settings are unusable',
    }[e.code] ?? 'the attestation does not verify';
    return `${what[0].toUpperCase()}${what.slice(1)}: ${e.message}`;
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * What a person should read for an error, and what to do.
 * @param {unknown} e
 * @returns {{title: string, detail: string, podMessage?: string, code?: string}}
 */
export function explainError(e) {
  if (!(e instanceof PodApiError)) {
    const detail = e instanceof Error ? e.message : String(e);
    if (e instanceof PodFormatError) return { title: 'This file cannot be used', detail, code: e.code };
    return { title: 'Something went wrong', detail };
  }
  const pod = e.podMessage;
  switch (e.kind) {
    case 'attestation':
      if (e.status === 503) {
        return {
          title: 'The data room is temporarily unavailable; try again shortly.',
          detail: 'The pod could not give an attestation, so nothing else was sent to it.', podMessage: pod,
        };
      }
      return {
        title: 'The pod could not be verified. Nothing was sent to it.',
        detail: `${e.message} Every action stays disabled until the pod verifies.`,
      };
    case 'pin_mismatch':
      return {
        title: 'The pod presented a different key than the one pinned. Nothing was sent to it.',
        detail: e.message,
      };
    case 'not_verified':
      return { title: 'Verify the pod first', detail: e.message };
    case 'unreachable':
      return { title: 'The pod could not be reached', detail: `${e.message} Check the connection and try again.` };
    case 'integrity':
      return { title: 'The pod\'s answer does not check out; nothing was offered', detail: e.message };
    case 'local':
      return { title: 'This cannot be done', detail: e.message };
    case 'timeout':
      return { title: 'The pod stopped answering', detail: `${e.message} Try again; if it happens again, the pod or the network may be overloaded.` };
    case 'cancelled':
      return { title: 'Cancelled', detail: e.message };
    default:
      break;
  }
  const code = e.code ?? '';
  const status = e.status ?? 0;
  let title;
  if (status === 503 || code === 'pod_unavailable') {
    title = 'The data room is temporarily unavailable; try again shortly.';
  } else if (code === 'not_a_member') {
    title = 'You do not have access to this data room (it may have been revoked).';
  } else if (code === 'budget_exhausted') {
    title = 'Your decryption budget is spent for now; try again later or ask the room owner to raise it.';
  } else if (code === 'retired_pod_key') {
    title = 'This document is sealed to a pod key that was retired by a key rotation and was not moved. ' +
      'Ask the operator for the rotated copy.';
  } else if (code === 'sealed_to_another_pod_key') {
    title = 'This document is sealed to a different pod key; after a key rotation, open the rotated copy.';
  } else if (code === 'wrong_pod_key') {
    title = 'The request named a different pod key than the pod holds; verify the pod again and retry.';
  } else if (code === 'unknown_room') {
    title = 'This data room is not known to the pod.';
  } else if (code === 'request_expired' || code === 'request_from_the_future') {
    title = 'The pod refused the request\'s time; check this computer\'s clock and try again.';
  } else if (code === 'replayed_request') {
    title = 'The pod has already seen this request; try again.';
  } else if (code === 'busy') {
    title = 'The pod is busy; try again shortly.';
  } else if (code === 'bad_signature') {
    title = 'The request is not signed by the key registered for you in this room.';
  } else if (code === 'wrong_document' || code === 'cannot_decrypt') {
    title = 'The pod cannot open this document for this room.';
  } else if (code === 'bad_request' && /not the key registered/.test(pod ?? '')) {
    title = 'You do not have access to this data room: your keys are not registered in it.';
  } else if (code === 'membership_refused' || code === 'membership_rollback') {
    title = 'The pod refused the membership change.';
  } else if (code === 'not_found') {
    title = 'The pod does not know this.';
  } else {
    title = `The pod refused the request (${status}${code ? ` ${code}` : ''}).`;
  }
  return { title, detail: '', podMessage: pod, code };
}

/**
 * The refusal of a pod whose key is not the pinned one.
 * @param {string} pinned hex fingerprint
 * @param {string} presented hex fingerprint
 */
function pinMismatch(pinned, presented) {
  return new PodApiError('pin_mismatch',
    `The pod verified, but its key ${presented.slice(0, 16)}… is not the pinned key ` +
    `${pinned.slice(0, 16)}…. If the operator announced a key rotation, check the announcement, then press ` +
    '"Forget the pinned key" and verify again to pin the new key. Otherwise do not use this pod.',
    { details: { pinned, presented } });
}

/**
 * Trust on first use, decided against the pin as storage holds it at that moment (another tab may have pinned a
 * key since this page loaded): a stored pin stands, and is the one the presented key must equal; only when storage
 * holds none is the presented key pinned. Pure, so that it can run inside one storage transaction.
 * @param {unknown} stored what storage holds under the pin's key
 * @param {string} presented hex fingerprint of the key the pod just proved
 * @param {number} now ms since the epoch
 * @returns {{pin: {fingerprint: string, pinnedAt: number}, write: boolean, mismatch: boolean}}
 *   `write`: store `pin` (nothing was pinned); `mismatch`: a different key is pinned, refuse the pod
 */
export function firstUsePin(stored, presented, now) {
  const valid = stored !== null && typeof stored === 'object' && typeof stored.fingerprint === 'string' &&
    /^[0-9a-f]{64}$/.test(stored.fingerprint);
  if (valid) {
    const pin = { fingerprint: stored.fingerprint, pinnedAt: Number(stored.pinnedAt) || 0 };
    return { pin, write: false, mismatch: pin.fingerprint !== presented };
  }
  return { pin: { fingerprint: presented, pinnedAt: now }, write: true, mismatch: false };
}

/**
 * Reads a stream's pieces, giving up when the next piece takes longer than `idleMs` to arrive (the timer restarts
 * with every piece) or when `signal` aborts; either cancels the stream.
 * @param {ReadableStreamDefaultReader<Uint8Array>} reader
 * @param {{idleMs: number, signal?: AbortSignal, what?: string}} o `what` names the stream in messages
 * @returns {AsyncGenerator<Uint8Array>}
 * @throws {PodApiError} `timeout`, `cancelled`, or `unreachable` when the stream fails
 */
export async function* idleReads(reader, { idleMs, signal, what = 'The answer' }) {
  let finished = false;
  try {
    for (;;) {
      const step = await readWithin(reader, idleMs, signal, what);
      if (step.done) {
        finished = true;
        return;
      }
      yield step.value;
    }
  } finally {
    // A consumer that stops early (an error, a break) must not leave the connection open.
    if (!finished) reader.cancel().catch(() => {});
  }
}

function readWithin(reader, idleMs, signal, what) {
  return new Promise((resolve, reject) => {
    let settled = false;
    let timer;
    const onAbort = () => finish(reject, cancelled());
    const finish = (fn, v) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      fn(v);
    };
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    timer = setTimeout(() => finish(reject, new PodApiError('timeout',
      `${what} stopped arriving: nothing came from the pod for ${Math.round(idleMs / 1000)} s, so the page stopped ` +
      'waiting and offered nothing.')), idleMs);
    reader.read().then((step) => finish(resolve, step), (e) => finish(reject,
      new PodApiError('unreachable', `${what} stopped arriving (${e?.message ?? e}).`, { cause: e })));
  });
}

function cancelled(cause) {
  return new PodApiError('cancelled', 'You cancelled it before it finished; nothing was offered.',
    cause === undefined ? {} : { cause });
}

/** Throws `cancelled` when the person has cancelled (checked between the steps of an action). */
function checkCancelled(signal) {
  if (signal?.aborted) throw cancelled();
}

/**
 * @typedef {object} VerifiedPod What one verification established.
 * @property {Uint8Array} podKeySpki
 * @property {string} fingerprint hex SHA-256 of the pod key SPKI
 * @property {Uint8Array} fingerprintBytes
 * @property {Uint8Array} receiptKeySpki
 * @property {Uint8Array} configHash
 * @property {number} timestamp the attestation document's time (ms)
 * @property {Map<number, Uint8Array>} pcrs
 * @property {string} rootSha256
 * @property {string} moduleId
 * @property {number} verifiedAtMs the local clock when it verified
 */

/**
 * A connection to one pod (the page's own origin by default).
 */
export class PodClient {
  /**
   * @param {{base?: string, fetch?: typeof fetch, answerTimeoutMs?: number, idleTimeoutMs?: number}} [options]
   */
  constructor({ base = '', fetch: fetchImpl, answerTimeoutMs = ANSWER_TIMEOUT_MS, idleTimeoutMs = IDLE_TIMEOUT_MS } = {}) {
    this.base = base;
    this.fetchImpl = fetchImpl ?? ((...a) => globalThis.fetch(...a));
    this.answerTimeoutMs = answerTimeoutMs;
    this.idleTimeoutMs = idleTimeoutMs;
    /** @type {VerifiedPod | null} the last successful verification, cleared by any failure */
    this.verified = null;
    this.policy = null;
    /** Called after every verification attempt: (verifiedPod | null, error | null). */
    this.onVerification = null;
    /**
     * Trust on first use. When no key is pinned, called with the fingerprint of the key the pod just proved; it
     * pins that key unless storage already holds a pin, and resolves to the fingerprint pinned afterwards. A
     * different one refuses the pod (`pin_mismatch`) and becomes this client's pin. Unset: nothing is pinned.
     * @type {((presented: string) => Promise<string>) | null}
     */
    this.pinOnFirstUse = null;
  }

  /**
   * Sets what the pod must prove. Clears any earlier verification.
   * @param {{expectedPcrs: Map<number, Uint8Array>, rootsDer?: Uint8Array[], pinnedFingerprint?: string | null}} policy
   */
  configure({ expectedPcrs, rootsDer, pinnedFingerprint = null }) {
    this.policy = { expectedPcrs, rootsDer, pinnedFingerprint };
    this.verified = null;
  }

  /** Forgets the last verification (so that nothing but attestation can be sent until the next). */
  invalidate() {
    this.verified = null;
  }

  /**
   * Sends one request and reads its answer with `read`, giving up after `timeoutMs` (headers and whatever `read`
   * reads) or when `signal` aborts.
   * @template T
   * @param {string} path
   * @param {RequestInit} init
   * @param {(r: Response) => Promise<T>} read
   * @param {{signal?: AbortSignal, timeoutMs?: number}} [o]
   * @returns {Promise<T>}
   */
  async #request(path, init, read, { signal, timeoutMs = this.answerTimeoutMs } = {}) {
    const where = path.split('?')[0];
    checkCancelled(signal);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    const onCancel = () => abort.abort();
    signal?.addEventListener('abort', onCancel, { once: true });
    const stopped = (e) => (signal?.aborted
      ? cancelled(e)
      : new PodApiError('timeout', `The pod did not answer ${where} within ${Math.round(timeoutMs / 1000)} s, so ` +
        'the page stopped waiting.', { cause: e }));
    try {
      let r;
      try {
        r = await this.fetchImpl(this.base + path, { cache: 'no-store', credentials: 'omit', ...init, signal: abort.signal });
      } catch (e) {
        if (abort.signal.aborted) throw stopped(e);
        throw new PodApiError('unreachable', `The request to ${where} failed (${e?.message ?? e}).`, { cause: e });
      }
      try {
        return await read(r);
      } catch (e) {
        if (abort.signal.aborted) throw stopped(e);
        throw e;
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onCancel);
    }
  }

  async #errorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    // The pod's words are shown only as the pod's ("The pod said: …"), bounded: an unverified or hostile answer must
    // not read as the page's own advice.
    const code = typeof body?.error === 'string' ? body.error.slice(0, 64) : undefined;
    const podMessage = typeof body?.message === 'string' ? body.message.slice(0, 300) : undefined;
    return new PodApiError('refused', `the pod answered ${response.status}${code ? ` ${code}` : ''}`,
      { status: response.status, code, podMessage });
  }

  /** Any API call but attestation: refused here unless the pod has just verified. */
  async #call(method, path, json, signal) {
    if (!this.verified) {
      throw new PodApiError('not_verified', 'The pod has not been verified; nothing was sent.');
    }
    const init = { method, headers: {} };
    if (json !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(json);
    }
    return this.#request(path, init, async (r) => {
      if (!r.ok) throw await this.#errorFrom(r);
      let text;
      try {
        text = await r.text();
      } catch (e) {
        throw new PodApiError('unreachable', `The answer to ${path} stopped arriving (${e?.message ?? e}).`, { cause: e });
      }
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new PodApiError('integrity', `the answer to ${path} is not JSON`, { cause: e });
      }
    }, { signal });
  }

  /**
   * Verifies the pod now, with a fresh nonce; every action calls this first.
   * @param {{signal?: AbortSignal}} [o] cancels the attestation request
   * @returns {Promise<VerifiedPod>}
   * @throws {PodApiError} `attestation`, `pin_mismatch`, `unreachable`, `refused`, `timeout`, `cancelled`
   */
  async verify({ signal } = {}) {
    this.verified = null;
    const policy = this.policy;
    const changed = () => new PodApiError('attestation', 'The PCR file or root changed during verification; verify again.');
    try {
      const v = await this.#verifyOnce(signal);
      if (this.policy !== policy) throw changed();
      if (!policy.pinnedFingerprint && this.pinOnFirstUse) {
        const pinned = await this.pinOnFirstUse(v.fingerprint);
        if (this.policy !== policy) throw changed();
        policy.pinnedFingerprint = pinned;
        if (pinned !== v.fingerprint) throw pinMismatch(pinned, v.fingerprint);
      }
      this.verified = v;
      this.onVerification?.(v, null);
      return v;
    } catch (e) {
      this.verified = null;
      this.onVerification?.(null, e);
      throw e;
    }
  }

  async #verifyOnce(signal) {
    if (!this.policy) throw new PodApiError('attestation', 'No PCR file is loaded: the page cannot tell which enclave image to trust.');
    const nonce = randomBytes(ATTESTATION_NONCE_LEN);
    const doc = await this.#request(`/pod/attestation?nonce=${toHex(nonce)}`, { method: 'GET' }, async (r) => {
      if (!r.ok) {
        const err = await this.#errorFrom(r);
        const why = err.status === 503 ? 'the pod is temporarily unavailable' : `the pod answered ${err.status}`;
        throw new PodApiError('attestation', `No attestation document could be fetched (${why}).`,
          { status: err.status, code: err.code, podMessage: err.podMessage });
      }
      let text;
      try {
        text = await r.text();
      } catch (e) {
        throw new PodApiError('unreachable', `The attestation answer stopped arriving (${e?.message ?? e}).`, { cause: e });
      }
      try {
        return fromBase64(JSON.parse(text).document);
      } catch (e) {
        throw new PodApiError('attestation', 'The attestation answer is not {"document": base64}.', { cause: e });
      }
    }, { signal });
    let att;
    let binding;
    try {
      att = await verifyAttestation(doc, {
        rootsDer: this.policy.rootsDer,
        expectedPcrs: this.policy.expectedPcrs,
        nonce,
        // Certificates at the document's own time (AWS leaves start seconds before it), and that time within five
        // minutes of this computer's clock: so the chain is valid now, within the same window the pod allows for
        // requests, and a certificate that expired long ago cannot vouch for a document, whatever it claims.
        now: 'document',
        clockMs: Date.now(),
        maxAgeMs: 5 * 60_000,
        maxFutureMs: 5 * 60_000,
      });
      binding = await podBinding(att);
    } catch (e) {
      throw new PodApiError('attestation', `${describeAttestation(e)}.`.replace(/\.\.$/, '.'),
        { cause: e, details: { code: e?.code } });
    }
    const pinned = this.policy.pinnedFingerprint;
    if (pinned && pinned !== binding.fingerprint) throw pinMismatch(pinned, binding.fingerprint);
    return Object.freeze({
      ...binding,
      timestamp: att.timestamp,
      pcrs: att.pcrs,
      rootSha256: att.rootSha256,
      moduleId: att.moduleId,
      verifiedAtMs: Date.now(),
    });
  }

  // ---- Rooms ---------------------------------------------------------------------------------------------------

  /**
   * Creates a room owned by `keys` (the genesis entry is signed here).
   * @param {import('./keys.js').UserKeys} keys
   * @returns {Promise<{roomId: string, room: import('./membership.js').Room}>}
   */
  async createRoom(keys) {
    await this.verify();
    const { entry, room } = await createRoom({ keys });
    const v = await this.#call('POST', '/rooms', { entry: toBase64(entry) });
    const roomId = toHex(room.roomId);
    if (v?.room_id !== roomId) {
      throw new PodApiError('integrity', 'the pod named another room id than the hash of our genesis entry');
    }
    return { roomId, room };
  }

  /**
   * Reads and verifies a room's membership log (every signature checked here).
   * @param {string} roomId hex
   * @param {{seenSeq?: number, seenHead?: string}} [seen] the head this page saw before: the log must contain it
   * @returns {Promise<{room: import('./membership.js').Room, entries: Uint8Array[]}>}
   */
  async room(roomId, seen = {}) {
    await this.verify();
    return this.#room(roomId, seen);
  }

  async #room(roomId, seen = {}, signal = undefined) {
    if (!/^[0-9a-f]{64}$/.test(roomId)) throw new PodApiError('local', 'A room id is 64 hex characters.');
    const v = await this.#call('GET', `/rooms/${roomId}/log`, undefined, signal);
    let entries;
    let room;
    try {
      entries = v.entries.map((e) => fromBase64(e));
      room = await replayMembership(entries, { roomId: fromHex(roomId) });
    } catch (e) {
      throw new PodApiError('integrity', `the room's membership log does not verify: ${e.message}`, { cause: e });
    }
    if (seen.seenSeq !== undefined && seen.seenHead) {
      const at = entries[seen.seenSeq];
      if (at === undefined || toHex(await entryHash(at)) !== seen.seenHead) {
        throw new PodApiError('integrity',
          `the room's log no longer contains the entry ${seen.seenSeq} this page saw: membership went backwards`);
      }
    }
    return { room, entries };
  }

  async #change(roomId, sign, seen = {}) {
    await this.verify();
    // The log must still contain the head this page saw: signing on top of a rolled-back log would give the
    // stale branch (say, one from before a revocation) a fresh signature.
    const { room } = await this.#room(roomId, seen);
    let entry;
    let next;
    try {
      ({ entry, room: next } = await sign(room));
    } catch (e) {
      if (e instanceof PodFormatError) throw new PodApiError('local', e.message, { cause: e });
      throw e;
    }
    const v = await this.#call('POST', `/rooms/${roomId}/entries`, { entry: toBase64(entry) });
    if (v?.seq !== next.seq) throw new PodApiError('integrity', 'the pod stored the entry at another position');
    return next;
  }

  /**
   * Grants a user (their bundle, from their .pub) access to a room; `keys` must be the owner's or an admin's.
   * `seen` is the head this page saw before (the log must still contain it).
   * @returns {Promise<import('./membership.js').Room>} the room as it now is
   */
  grant({ keys, roomId, bundle, seen }) {
    return this.#change(roomId, (room) => grantEntry({ keys, room, bundle }), seen);
  }

  /**
   * Revokes a member.
   * @returns {Promise<import('./membership.js').Room>}
   */
  revoke({ keys, roomId, userId, seen }) {
    return this.#change(roomId, (room) => revokeEntry({ keys, room, userId }), seen);
  }

  // ---- Documents -----------------------------------------------------------------------------------------------

  /**
   * Seals a file to the verified pod key for a room, in the page. Before sealing it verifies the pod and reads and
   * verifies the room's membership log (so the room exists on this pod, with the owner its id names, and its log
   * still contains the head this page saw); nothing else is sent. The sealed copy is kept in memory until it is
   * saved, so files over {@link OPEN_LIMIT} are refused before anything is sent.
   * @param {{file: Blob, roomId: string, docId: string, seen?: {seenSeq?: number, seenHead?: string},
   *   signal?: AbortSignal, onProgress?: (done: number, total: number) => void}} o
   * @returns {Promise<{blob: Blob, pod: VerifiedPod, room: import('./membership.js').Room}>}
   * @throws {PodApiError} as {@link PodClient#verify} and {@link PodClient#room}; `local` for a file too large
   */
  async seal({ file, roomId, docId, seen = {}, signal, onProgress }) {
    if (file.size > OPEN_LIMIT) {
      throw new PodApiError('local', `This file is ${Math.ceil(file.size / 2 ** 20)} MiB; the browser seals files of ` +
        `up to ${OPEN_LIMIT / 2 ** 30} GiB, because it holds the sealed copy in memory until you save it. Seal it ` +
        'with `podctl seal`, which streams any size. Nothing was sent.');
    }
    const pod = await this.verify({ signal });
    const { room } = await this.#room(roomId, seen, signal);
    checkCancelled(signal);
    let s;
    try {
      s = await sealToPodStream({
        podSpki: pod.podKeySpki, roomId: fromHex(roomId), docId, source: file, totalBytes: file.size, onProgress,
      });
    } catch (e) {
      if (e instanceof PodFormatError) throw new PodApiError('local', e.message, { cause: e });
      throw e;
    }
    const parts = [];
    for await (const p of s.pieces) {
      // Leaving the loop closes the generator, which stops reading the file.
      checkCancelled(signal);
      parts.push(p);
    }
    return { blob: new Blob(parts, { type: 'application/octet-stream' }), pod, room };
  }

  /**
   * Reads the header of a sealed document (kind 1) from the start of a file.
   * @param {Blob} file
   */
  static async readSealedHeader(file) {
    const head = new Uint8Array(await file.slice(0, PREFIX_LEN + MAX_HEADER_LEN).arrayBuffer());
    let r;
    try {
      r = readHeader(head);
    } catch (e) {
      throw new PodApiError('local', `This is not a sealed document (${e.message}).`, { cause: e });
    }
    if (r === null) throw new PodApiError('local', 'This file is too short to be a sealed document.');
    if (r.header.kind !== KIND_SEALED_TO_POD) {
      throw new PodApiError('local', 'This is a copy re-encrypted for one user, not a document sealed to the pod.');
    }
    return { header: r.header, bodyStart: r.bodyStart };
  }

  /**
   * Opens a sealed document through the pod: signed request, re-encryption for `keys`, decrypted here chunk by
   * chunk, receipt checked. The plaintext is returned only when the last chunk has authenticated and the receipt
   * names this request and this response; on any failure nothing is returned.
   *
   * Every document goes through `POST /pod/re-encrypt/stream` (a Blob body, the answer read with a reader as it
   * arrives). A browser's fetch sends the whole request body before it reads any of the answer; the proxy spools
   * its answer (to disk beyond 1 MiB, ciphertext only) so that the upload always completes, and it reads the whole
   * body before it answers a refusal, so a refusal arrives as an answer rather than as a cut connection.
   *
   * `signal` cancels it at any point; the pod has the request once the upload has started, and then logs the open
   * whether or not the answer is read. An answer that stops arriving for {@link IDLE_TIMEOUT_MS} is given up.
   * @param {{file: Blob, keys: import('./keys.js').UserKeys, signal?: AbortSignal,
   *   onPhase?: (phase: 'sending' | 'receiving' | 'checking') => void,
   *   onProgress?: (plaintextDone: number, plaintextTotal: number) => void}} o
   * @returns {Promise<{blob: Blob, size: number, docId: Uint8Array, roomId: Uint8Array,
   *   receipt: import('./audit.js').Receipt, pod: VerifiedPod}>}
   */
  async open({ file, keys, signal, onPhase, onProgress }) {
    const { header, bodyStart } = await PodClient.readSealedHeader(file);
    if (file.size > OPEN_LIMIT) {
      throw new PodApiError('local', `This document is ${Math.ceil(file.size / 2 ** 20)} MiB; the browser opens ` +
        `documents of up to ${OPEN_LIMIT / 2 ** 30} GiB. Open it with \`podctl open\`. Nothing was sent.`);
    }
    const pod = await this.verify({ signal });
    if (!equalBytes(header.recipient, pod.fingerprintBytes)) {
      throw new PodApiError('local', `This document is sealed to pod key ${toHex(header.recipient).slice(0, 16)}…, not to ` +
        `this pod's key ${pod.fingerprint.slice(0, 16)}… (after a key rotation, open the rotated copy). Nothing was sent.`);
    }
    const request = await signedRequest({
      keys, roomId: header.roomId, docId: header.docId, headerHash: await headerHash(header),
      podFingerprint: pod.fingerprintBytes,
    });
    const total = plaintextLength(file.size - bodyStart);
    if (!this.verified) throw new PodApiError('not_verified', 'The pod has not been verified; nothing was sent.');
    checkCancelled(signal);
    onPhase?.('sending');
    const sent = await this.#sendStream(file, keys, request, signal);
    const { source, receiptB64, cancel } = sent;
    onPhase?.('receiving');
    const opener = new DocumentOpener({ keys, expect: { kind: KIND_RE_ENCRYPTED, roomId: header.roomId, docId: header.docId } });
    const parts = [];
    let done = 0;
    const take = (chunks) => {
      for (const c of chunks) {
        parts.push(c);
        done += c.length;
      }
      if (chunks.length) onProgress?.(done, total);
    };
    const fail = (what, e) => new PodApiError('integrity', `${what}: ${e?.message ?? e}`, { cause: e });
    try {
      for await (const piece of source) {
        try {
          take(await opener.push(piece));
        } catch (e) {
          throw fail('the re-encrypted copy does not open', e);
        }
      }
      try {
        take(await opener.end());
      } catch (e) {
        throw fail('the re-encrypted copy is incomplete or altered', e);
      }
    } catch (e) {
      cancel();
      wipe(parts);
      throw e;
    }
    onPhase?.('checking');
    let receipt;
    try {
      if (!receiptB64) throw new Error('the answer carries no receipt');
      receipt = await verifyReceipt({
        receiptKeySpki: pod.receiptKeySpki, receipt: fromBase64(receiptB64.trim()),
        requestHash: request.requestHash, responseHeaderHash: opener.headerHash,
      });
    } catch (e) {
      wipe(parts);
      throw fail('the receipt does not check out', e);
    }
    return {
      blob: new Blob(parts, { type: 'application/octet-stream' }), size: done, docId: header.docId, roomId: header.roomId,
      headerHash: await headerHash(header),
      receiptBytes: fromBase64(receiptB64.trim()),
      receipt, pod,
    };
  }

  /** `POST /pod/re-encrypt/stream`: the answer's pieces as they arrive, and its receipt header. */
  async #sendStream(file, keys, request, signal) {
    // A Blob body, not a ReadableStream: Chromium streams request bodies only over HTTP/2, and the proxy speaks
    // HTTP/1.1. The Blob is read from disk as it is sent. The whole upload happens before the answer's headers
    // arrive, so their deadline grows with the file (a second per 64 KiB); then every piece must follow the one
    // before within the idle timeout.
    const r = await this.#request('/pod/re-encrypt/stream', {
      method: 'POST',
      headers: {
        'content-type': 'application/octet-stream',
        'x-pod-auth-token': toBase64(request.bytes),
        'x-pod-user-key': toBase64(keys.encSpki),
      },
      body: file,
    }, async (answer) => {
      if (!answer.ok) throw await this.#errorFrom(answer);
      return answer;
    }, { signal, timeoutMs: this.answerTimeoutMs + Math.ceil(file.size / 65536) * 1000 });
    const reader = r.body.getReader();
    return {
      source: idleReads(reader, { idleMs: this.idleTimeoutMs, signal, what: 'The document' }),
      receiptB64: r.headers.get('x-pod-receipt'),
      cancel: () => reader.cancel().catch(() => {}),
    };
  }
}
