// Tests of the page's API layer (app/lib/api.js) that need no pod: how document ids are shown, the trust-on-first-use
// decision, the idle timeout on a streamed answer, the timeouts and cancellation of requests, the seal size limit,
// and the words people read for attestation and timing failures.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import {
  docIdText, firstUsePin, idleReads, describeAttestation, explainError, PodClient, PodApiError, OPEN_LIMIT,
} from '../app/lib/api.js';
import { AttestationError } from '../app/lib/attest.js';
import { safeFileName } from '../app/ui/dom.js';

const utf8 = (s) => new TextEncoder().encode(s);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Expects `promise` to reject with a PodApiError of `kind` whose message matches `message`. */
async function rejectsWith(promise, kind, message) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof PodApiError, `not a PodApiError: ${e?.stack ?? e}`);
    assert.equal(e.kind, kind, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

// ---- Document ids ----------------------------------------------------------------------------------------------

test('docIdText shows printable ids as they are and escapes invisible or direction-changing characters', () => {
  assert.equal(docIdText(utf8('board-pack.pdf')), 'board-pack.pdf');
  assert.equal(docIdText(utf8('Übersicht – 2024 €')), 'Übersicht – 2024 €');
  // A right-to-left override would show "invoice\u202Efdp.exe" as "invoiceexe.pdf".
  assert.equal(docIdText(utf8('invoice\u202Efdp.exe')), 'invoice[U+202E]fdp.exe');
  const hidden = ['\u0085', '\u061c', '\u200b', '\u200c', '\u200d', '\u200e', '\u200f', '\u202a', '\u202b', '\u202c',
    '\u202d', '\u202e', '\u2060', '\u2066', '\u2067', '\u2068', '\u2069', '\ufeff'];
  for (const c of hidden) {
    const code = c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
    const shown = docIdText(utf8(`a${c}b`));
    assert.equal(shown, `a[U+${code}]b`, `U+${code}`);
    assert.ok(!shown.includes(c), `U+${code} is not shown raw`);
  }
  // A leading byte order mark is part of the id, not decoding noise: two ids that differ by it look different.
  assert.equal(docIdText(utf8('\ufeffreport')), '[U+FEFF]report');
  // Two ids that differ only by an invisible character do not look the same.
  assert.notEqual(docIdText(utf8('report')), docIdText(utf8('re\u200bport')));
  // The escaped text is a usable file name.
  assert.equal(safeFileName(docIdText(utf8('invoice\u202Efdp.exe')), 'x'), 'invoice[U+202E]fdp.exe');
});

test('docIdText falls back to hex for ids that are not UTF-8, are empty or hold control characters', () => {
  assert.equal(docIdText(Uint8Array.of(0xff, 0xfe, 0x41)), 'fffe41');
  assert.equal(docIdText(utf8('line\nbreak')), toHexString(utf8('line\nbreak')));
  assert.equal(docIdText(utf8('del\u007f')), toHexString(utf8('del\u007f')));
  assert.equal(docIdText(new Uint8Array(0)), '');
});

function toHexString(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

test('safeFileName replaces the same invisible and bidirectional characters', () => {
  for (const c of ['\u0085', '\u061c', '\u200b', '\u200d', '\u2060', '\ufeff']) {
    assert.equal(safeFileName(`a${c}b`, 'x'), 'a_b', `U+${c.codePointAt(0).toString(16)}`);
  }
});

// ---- Trust on first use ------------------------------------------------------------------------------------------

test('firstUsePin pins the presented key only when storage holds no pin', () => {
  const a = 'aa'.repeat(32);
  const b = 'bb'.repeat(32);
  assert.deepEqual(firstUsePin(undefined, a, 1000), { pin: { fingerprint: a, pinnedAt: 1000 }, write: true, mismatch: false });
  assert.deepEqual(firstUsePin(null, a, 1000), { pin: { fingerprint: a, pinnedAt: 1000 }, write: true, mismatch: false });
  // Another tab pinned the same key meanwhile: it stands, nothing is written.
  assert.deepEqual(firstUsePin({ fingerprint: a, pinnedAt: 5 }, a, 1000),
    { pin: { fingerprint: a, pinnedAt: 5 }, write: false, mismatch: false });
  // Another tab pinned a different key meanwhile: that pin stands and this pod is refused.
  assert.deepEqual(firstUsePin({ fingerprint: b, pinnedAt: 5 }, a, 1000),
    { pin: { fingerprint: b, pinnedAt: 5 }, write: false, mismatch: true });
  // Something that is not a pin is not one: the presented key is pinned over it.
  for (const junk of [{}, { fingerprint: 'xyz' }, { fingerprint: a.toUpperCase() }, 'aa', 7]) {
    assert.deepEqual(firstUsePin(junk, a, 9), { pin: { fingerprint: a, pinnedAt: 9 }, write: true, mismatch: false },
      JSON.stringify(junk));
  }
});

// ---- Streamed answers ------------------------------------------------------------------------------------------

/** A readable stream that yields `pieces` after the given delays (ms), then stalls or ends; records cancels. */
function paced(pieces, { end = true } = {}) {
  const log = { cancelled: false };
  let i = 0;
  const stream = new ReadableStream({
    async pull(controller) {
      if (i < pieces.length) {
        const [delay, bytes] = pieces[i++];
        await sleep(delay);
        controller.enqueue(bytes);
      } else if (end) {
        controller.close();
      } else {
        await new Promise(() => {}); // the pod stops sending, the connection stays open
      }
    },
    cancel() {
      log.cancelled = true;
    },
  }, { highWaterMark: 0 });
  return { reader: stream.getReader(), log };
}

async function collect(gen) {
  const out = [];
  for await (const p of gen) out.push(...p);
  return out;
}

test('idleReads passes a slow but steady answer: the idle timer restarts with every piece', { timeout: 10_000 }, async () => {
  // Six pieces 40 ms apart take 240 ms in all, longer than the 120 ms idle limit, but no gap is that long.
  const { reader } = paced([...Array(6).keys()].map((i) => [40, Uint8Array.of(i)]));
  assert.deepEqual(await collect(idleReads(reader, { idleMs: 120 })), [0, 1, 2, 3, 4, 5]);
});

test('idleReads gives up on an answer that stops arriving, says so, and closes the stream', { timeout: 10_000 }, async () => {
  const { reader, log } = paced([[0, Uint8Array.of(1)]], { end: false });
  const started = Date.now();
  await rejectsWith(collect(idleReads(reader, { idleMs: 100, what: 'The document' })), 'timeout',
    /^The document stopped arriving: nothing came from the pod for 0 s/);
  assert.ok(Date.now() - started < 2000, 'it did not wait much longer than the idle limit');
  assert.equal(log.cancelled, true, 'the stalled stream is cancelled');
  const info = explainError(new PodApiError('timeout', 'x.'));
  assert.equal(info.title, 'The pod stopped answering');
  assert.match(info.detail, /Try again/);
});

test('idleReads stops at once when cancelled, before or during a read', { timeout: 10_000 }, async () => {
  const stalled = paced([], { end: false });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 30);
  await rejectsWith(collect(idleReads(stalled.reader, { idleMs: 10_000, signal: controller.signal })), 'cancelled',
    /nothing was offered/);
  assert.equal(stalled.log.cancelled, true);

  const early = paced([[0, Uint8Array.of(1)]]);
  await rejectsWith(collect(idleReads(early.reader, { idleMs: 10_000, signal: AbortSignal.abort() })), 'cancelled');
  assert.equal(early.log.cancelled, true);
  assert.equal(explainError(new PodApiError('cancelled', 'y')).title, 'Cancelled');
});

test('idleReads reports a broken stream as unreachable, and closes the stream when its reader stops early', { timeout: 10_000 }, async () => {
  const broken = new ReadableStream({ pull(c) { c.error(new Error('connection reset')); } });
  await rejectsWith(collect(idleReads(broken.getReader(), { idleMs: 1000 })), 'unreachable', /connection reset/);

  const { reader, log } = paced([[0, Uint8Array.of(1)], [0, Uint8Array.of(2)]]);
  for await (const p of idleReads(reader, { idleMs: 1000 })) {
    assert.deepEqual([...p], [1]);
    break;
  }
  await sleep(0);
  assert.equal(log.cancelled, true);
});

// ---- Requests ----------------------------------------------------------------------------------------------------

/** A local HTTP server that answers the attestation request with headers and then nothing, or nothing at all. */
const stalls = [];
const server = createServer((req, res) => {
  stalls.push(res);
  if (req.url.startsWith('/headers-only/')) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"document": "');
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;
after(() => {
  for (const res of stalls) res.destroy();
  server.close();
});

const pcrs = new Map([[0, new Uint8Array(48)]]);

test('a pod that never answers, or stops in the middle of an answer, times out instead of locking the page', { timeout: 10_000 }, async () => {
  for (const prefix of ['', '/headers-only']) {
    const client = new PodClient({ base: base + prefix, answerTimeoutMs: 200 });
    client.configure({ expectedPcrs: pcrs });
    let seen = null;
    client.onVerification = (pod, error) => { seen = { pod, error }; };
    const started = Date.now();
    await rejectsWith(client.verify(), 'timeout', /^The pod did not answer \/pod\/attestation within 0 s/);
    assert.ok(Date.now() - started < 5000, `${prefix}: gave up in time`);
    assert.equal(client.verified, null);
    assert.equal(seen?.pod, null);
    assert.equal(seen?.error?.kind, 'timeout');
  }
});

test('a cancelled verification stops waiting at once', { timeout: 10_000 }, async () => {
  const client = new PodClient({ base, answerTimeoutMs: 60_000 });
  client.configure({ expectedPcrs: pcrs });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  await rejectsWith(client.verify({ signal: controller.signal }), 'cancelled', /nothing was offered/);
});

test('a file too large for the page to seal is refused before anything is sent', async () => {
  let sent = 0;
  const client = new PodClient({ fetch: async () => { sent += 1; throw new Error('nothing may be sent'); } });
  client.configure({ expectedPcrs: pcrs });
  const huge = { size: OPEN_LIMIT + 1, slice: () => { throw new Error('nothing may be read'); } };
  await rejectsWith(client.seal({ file: huge, roomId: 'ab'.repeat(32), docId: 'x' }), 'local',
    /seals files of up to 2 GiB.*podctl seal.*Nothing was sent/);
  assert.equal(sent, 0);
});

// ---- Words for people --------------------------------------------------------------------------------------------

test('an attestation too old or from the future tells the person to check the clock', () => {
  for (const code of ['stale', 'future']) {
    const text = describeAttestation(new AttestationError(code, 'the document is 400000 ms old'));
    assert.match(text, /^This computer's clock is off by more than 5 minutes/, code);
    assert.match(text, /check the clock and verify again/, code);
    assert.match(text, /400000 ms/, `${code}: the verifier's own account follows`);
  }
  assert.match(describeAttestation(new AttestationError('stale', 'x')), /or the attestation is old/);
});
