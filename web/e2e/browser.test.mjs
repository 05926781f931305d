// The browser client end to end: a real local pod (`pod-proxy local`), the page it serves at /app/, headless
// Chromium driven by playwright-core, and the CLI (`podctl`) on the same pod.
//
//   cd web && npm ci && node --test e2e/
//
// Environment: POD_BIN_DIR (default: the repository's target/debug; build with `cargo build --workspace --bins`),
// CHROMIUM (default /usr/bin/chromium). Screenshots of the main screens go to a temporary directory, or to
// docs/screenshots/ with POD_SCREENSHOTS=1 (so that a test run does not rewrite committed files).
//
// What it shows, with separate browser contexts (separate storage) for the owner and the member:
//  1. both pages verify the pod from the PCR file and mock root loaded through the page's own inputs;
//  2. the owner creates a room; the member makes RSA-OAEP-4096 keys and exports the .pub; the owner grants the
//     member and a `podctl keygen` user by pasting their .pub text;
//  3. the member's page seals for a room only once it has read and verified the room's log, and then shows the
//     room's owner (the room selector stays disabled while that read runs); a document sealed in the owner's page
//     (6 MiB) opens with `podctl open` as the CLI user, byte for byte;
//     documents sealed with `podctl seal` (3 MiB and 40 MiB, streamed: the browser sends everything before it reads)
//     open in the member's page, byte for byte, with progress;
//     when storage refuses an opened document's receipt, the document is still offered, and so is the receipt as a
//     file that `podctl audit verify` accepts; an open whose answer never comes can be cancelled;
//  4. after the owner revokes the member in the page, the member's page shows the refusal and offers nothing,
//     while the CLI user still opens;
//  5. a page with a wrong PCR file (PCR0 changed) is refused at verification: nothing but GET /pod/attestation
//     reaches the pod from it, and every action stays disabled;
//  6. a page whose pinned pod key differs from the pod's refuses the pod until the user forgets the pin, and a pin
//     another tab stored meanwhile wins over trust on first use.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, mkdir, readFile, writeFile, rm, access, constants } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const run = promisify(execFile);
const here = (rel) => fileURLToPath(new URL(rel, import.meta.url));
const BIN = process.env.POD_BIN_DIR || here('../../target/debug');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.POD_SCREENSHOTS === '1'
  ? here('../../docs/screenshots')
  : mkdtempSync(join(tmpdir(), 'pod-screenshots-'));
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--ignore-certificate-errors'];
const STEP = 30_000; // the longest any single wait may take

/** Everything the steps share. */
const S = {
  dir: '', proxy: null, proxyExited: null, proxyLog: [], env: null, url: '', browser: null, roomId: '',
  owner: null, member: null, memberId: '', carolId: '', failed: false,
};

function podctl(args) {
  return run(join(BIN, 'podctl'), args, { cwd: S.dir, env: { ...process.env, ...S.env }, maxBuffer: 1 << 24 });
}

/** Starts `pod-proxy local` and waits for the environment line it prints. */
async function startPod() {
  const stateDir = join(S.dir, 'pod-data');
  const child = spawn(join(BIN, 'pod-proxy'), ['local', '--listen', '127.0.0.1:0', '--state-dir', stateDir],
    { cwd: S.dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  S.proxy = child;
  S.proxyExited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const keep = (d) => {
    S.proxyLog.push(d.toString());
    if (S.proxyLog.length > 400) S.proxyLog.shift();
  };
  child.stderr.on('data', keep);
  let out = '';
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pod-proxy local printed no POD_URL within 90 s:\n${S.proxyLog.join('')}`)), 90_000);
    child.stdout.on('data', (d) => {
      keep(d);
      out += d.toString();
      const m = /^export (POD_URL=.*)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`pod-proxy local exited (${code}) before it was ready:\n${S.proxyLog.join('')}`));
    });
  });
  S.env = Object.fromEntries(line.trim().split(/\s+/).map((kv) => kv.split('=')));
  S.env.POD_PIN = join(S.dir, 'pod-pin.json');
  S.url = S.env.POD_URL;
  for (const k of ['POD_URL', 'POD_CACERT', 'POD_ROOT', 'POD_PCRS']) assert.ok(S.env[k], `${k} in ${line}`);
}

async function stopPod() {
  const child = S.proxy;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const stopped = await Promise.race([S.proxyExited, new Promise((r) => setTimeout(() => r(null), 15_000))]);
  if (!stopped) {
    // It did not stop: end its process group (it and the enclave and KMS it started), by our child's id.
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await S.proxyExited;
  }
}

/** A fresh browser context (its own storage), recording every request it makes to the pod. */
async function newUser(name) {
  const context = await S.browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 }, acceptDownloads: true,
  });
  const requests = [];
  context.on('request', (r) => requests.push({ method: r.method(), url: r.url() }));
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Anything the CSP blocks (an inline style or script, a connection elsewhere) is a bug in the page.
  page.on('console', (m) => { if (/Content.Security.Policy/i.test(m.text())) errors.push(m.text()); });
  page.on('dialog', (d) => d.accept());
  return { name, context, page, requests, errors };
}

async function loadPage(u) {
  await u.page.goto(`${S.url}/app/`);
  await u.page.waitForSelector('body[data-ready="true"]');
}

/** Loads the PCR file and the mock root through the page's own inputs and verifies. */
async function verifyThroughInputs(u, pcrFile) {
  const { page } = u;
  if (!(await page.$eval('#pod-settings', (d) => d.open))) await page.click('#pod-settings summary');
  await page.setInputFiles('#pcr-file', pcrFile);
  await page.waitForSelector('#pcr-summary.ok, #pcr-summary.bad');
  await page.check('#root-custom');
  await page.setInputFiles('#root-file', S.env.POD_ROOT);
  await page.waitForSelector('#root-summary.ok');
  await page.click('#verify-btn');
  await page.waitForSelector('body[data-pod="verified"], body[data-pod="failed"]');
  return page.evaluate(() => document.body.dataset.pod);
}

/** Clicks an action button and waits for its panel to finish; returns 'done' or 'failed'. */
async function act(page, button, panel) {
  await page.click(button);
  await page.waitForSelector(`#${panel}[data-state="done"], #${panel}[data-state="failed"]`);
  return page.evaluate((id) => document.getElementById(id).dataset.state, panel);
}

async function text(page, selector) {
  return (await page.textContent(selector))?.trim() ?? '';
}

async function download(page, selector, to) {
  const [d] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  await d.saveAs(to);
  return { path: to, name: d.suggestedFilename() };
}

async function shot(page, name, scrollTo) {
  if (scrollTo) await page.locator(scrollTo).scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(SHOTS, name) });
}

/** Watches a status region, keeping every text it shows. */
async function recordStatuses(page, id) {
  await page.evaluate((i) => {
    const e = document.getElementById(i);
    window.__seen = [];
    new MutationObserver(() => window.__seen.push(e.textContent)).observe(e, { childList: true, characterData: true, subtree: true });
  }, id);
}

async function openInPage(u, file) {
  await u.page.setInputFiles('#open-file', file);
  await recordStatuses(u.page, 'open-status');
  const state = await act(u.page, '#open-btn', 'open-panel');
  return { state, seen: await u.page.evaluate(() => window.__seen) };
}

/** Writes a value into the page's IndexedDB store, as another tab of the page would. */
async function idbPut(page, key, value) {
  await page.evaluate(([k, v]) => new Promise((resolve, reject) => {
    const req = indexedDB.open('secure-pod', 1);
    req.onsuccess = () => {
      const db = req.result;
      const tx = db.transaction('kv', 'readwrite');
      tx.objectStore('kv').put(v, k);
      tx.oncomplete = () => { db.close(); resolve(); };
      tx.onerror = () => reject(tx.error);
    };
    req.onerror = () => reject(req.error);
  }), [key, value]);
}

/** Holds the page's requests matching `glob` until `release()`; `arrived` resolves when the first one does. */
async function holdRequests(page, glob) {
  let arrive;
  let free;
  const arrived = new Promise((r) => { arrive = r; });
  const freed = new Promise((r) => { free = r; });
  const held = [];
  await page.route(glob, async (route) => {
    held.push(route);
    arrive();
    await freed;
  });
  return {
    arrived,
    /** Lets the held requests go on (`continue`) or fail (`abort`), and stops holding new ones. */
    async release(how = 'continue') {
      free();
      for (const r of held) await (how === 'continue' ? r.continue() : r.abort()).catch(() => {});
      await page.unroute(glob);
    },
  };
}

/** Runs a step; once one has failed the rest are skipped (they depend on it). */
function step(t, name, fn) {
  return t.test(name, async (st) => {
    if (S.failed) {
      st.skip('an earlier step failed');
      return;
    }
    try {
      await fn(st);
    } catch (e) {
      S.failed = true;
      throw e;
    }
  });
}

before(async () => {
  for (const b of ['pod-proxy', 'podctl', 'pod-enclave', 'kms-local']) {
    await access(join(BIN, b), constants.X_OK).catch(() => {
      throw new Error(`${join(BIN, b)} is missing: run \`cargo build --workspace --bins\` (or set POD_BIN_DIR)`);
    });
  }
  await access(CHROMIUM, constants.X_OK).catch(() => {
    throw new Error(`no Chromium at ${CHROMIUM}: install it (apt-get install chromium) or set CHROMIUM`);
  });
  S.dir = await mkdtemp(join(tmpdir(), 'pod-web-e2e-'));
  await mkdir(SHOTS, { recursive: true });
  await startPod();
  S.browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
});

after(async () => {
  await S.browser?.close().catch(() => {});
  await stopPod();
  if (S.dir) await rm(S.dir, { recursive: true, force: true });
});

test('the data room in the browser, against a real local pod', { timeout: 240_000 }, async (t) => {
  const started = Date.now();
  const f = (name) => join(S.dir, name);
  // Documents: random bytes, so any corruption shows.
  const files = { owner: ['board-pack.bin', 6 * 2 ** 20 + 4321], cli: ['term-sheet.bin', 3 * 2 ** 20 + 77], big: ['data-tape.bin', 40 * 2 ** 20 + 5] };
  for (const [name, size] of Object.values(files)) await writeFile(f(name), randomBytes(size));

  await step(t, 'owner and member pages verify the pod from the PCR file and root they load', async () => {
    S.owner = await newUser('owner');
    S.member = await newUser('member');
    for (const u of [S.owner, S.member]) {
      await loadPage(u);
      assert.equal(await u.page.evaluate(() => document.body.dataset.pod), 'unverified');
      assert.equal(await u.page.isDisabled('#open-btn'), true, 'open is disabled before verification');
      const state = await verifyThroughInputs(u, S.env.POD_PCRS);
      assert.equal(state, 'verified', `${u.name}: ${await text(u.page, '#pod-error')}`);
      assert.match(await text(u.page, '#pod-badge'), /Pod verified/);
    }
    const pcrs = JSON.parse(await readFile(S.env.POD_PCRS, 'utf8'));
    const facts = await text(S.owner.page, '#pod-facts');
    assert.ok(facts.includes(pcrs.PCR0.slice(0, 24)), `PCR0 prefix shown: ${facts}`);
    const { stdout } = await podctl(['attest']);
    const cliKey = /pod key\s+([0-9a-f]{64})/.exec(stdout)?.[1];
    assert.equal(await S.owner.page.getAttribute('#pod-facts', 'data-fingerprint'), cliKey, 'the page and podctl see the same pod key');
  });

  await step(t, 'keys: the owner makes P-256 keys, the member RSA-OAEP-4096 keys and exports the .pub', async () => {
    const { page } = S.owner;
    await act(page, '#keygen-btn', 'keys-panel');
    assert.match(await text(page, '#my-user-id'), /^[0-9a-f]{64}$/);
    await shot(page, 'verified.png');

    const m = S.member.page;
    await m.selectOption('#keygen-alg', 'rsa');
    assert.equal(await act(m, '#keygen-btn', 'keys-panel'), 'done', await text(m, '#keys-error'));
    S.memberId = await text(m, '#my-user-id');
    assert.equal(await text(m, '#my-enc-alg'), 'RSA-OAEP-4096');
    const pub = await m.inputValue('#my-pub');
    assert.match(pub, /^secure-pod-user\/v1 [A-Za-z0-9+/=]+\n# user id [0-9a-f]{64}\n$/);
    assert.ok(pub.includes(S.memberId));
    // The downloaded .pub is the same text.
    const d = await download(m, '#download-pub-btn', f('member.pub'));
    assert.equal(await readFile(d.path, 'utf8'), pub);
    // The CLI user.
    const { stdout } = await podctl(['keygen', '--out', 'carol']);
    S.carolId = /user id ([0-9a-f]{64})/.exec(stdout)?.[1];
    assert.ok(S.carolId, stdout);
  });

  await step(t, 'the owner creates a room and grants the member and the CLI user by pasting their .pub', async () => {
    const { page } = S.owner;
    await page.fill('#room-name', 'Project Falcon');
    assert.equal(await act(page, '#create-room-btn', 'rooms-panel'), 'done', await text(page, '#room-error'));
    S.roomId = await text(page, '#room-id');
    assert.match(S.roomId, /^[0-9a-f]{64}$/);
    assert.equal(await text(page, '#room-role'), 'owner');

    for (const pub of [await readFile(f('member.pub'), 'utf8'), await readFile(f('carol.pub'), 'utf8')]) {
      await page.fill('#grant-pub', pub);
      await page.waitForSelector('#grant-preview.ok');
      assert.equal(await act(page, '#grant-btn', 'rooms-panel'), 'done', await text(page, '#room-error'));
    }
    const rows = await page.$$eval('[data-testid="member-row"]', (rs) => rs.map((r) => [r.dataset.userId, r.dataset.role]));
    const ownerId = await text(page, '#my-user-id');
    assert.deepEqual(new Map(rows), new Map([[ownerId, 'owner'], [S.memberId, 'member'], [S.carolId, 'member']]));
    // The CLI sees the same room.
    const { stdout } = await podctl(['room', 'show', '--room', S.roomId]);
    assert.match(stdout, new RegExp(`^owner\\s+${ownerId}$`, 'm'), stdout);
    assert.match(stdout, /^members\s+3$/m, stdout);
    await shot(page, 'room.png', '#rooms-panel');
  });

  await step(t, 'the member\'s page seals for a room only after verifying its log, and shows the room\'s owner', async () => {
    const { page } = S.member;
    await page.click('#add-room-details summary');
    await page.fill('#add-room-id', S.roomId);
    assert.equal(await act(page, '#add-room-btn', 'rooms-panel'), 'done', await text(page, '#room-error'));
    await page.setInputFiles('#seal-file', f(files.cli[0]));
    // Not yet read: sealing is refused, and the panel says what to do.
    assert.equal(await page.isDisabled('#seal-btn'), true, 'seal is disabled before the room\'s log is verified');
    assert.match(await page.getAttribute('#seal-btn', 'title'), /Show members/);
    assert.match(await text(page, '#seal-room-owner'), /owner not verified yet: press “Show members”/);
    // The log's read is held: meanwhile the room selector is disabled, so no other room can take its answer.
    const held = await holdRequests(page, `**/rooms/${S.roomId}/log`);
    await page.click('#refresh-room-btn');
    await held.arrived;
    assert.equal(await page.isDisabled('#room-select'), true, 'the room selector is disabled while the log is read');
    await held.release();
    await page.waitForSelector('#rooms-panel[data-state="done"], #rooms-panel[data-state="failed"]');
    assert.equal(await page.isEnabled('#room-select'), true);
    assert.equal(await text(page, '#room-role'), 'member', await text(page, '#room-error'));
    const ownerId = await text(S.owner.page, '#my-user-id');
    assert.equal(await page.getAttribute('#seal-room-owner', 'data-owner'), ownerId, 'the owner from the verified log');
    assert.equal(await page.isEnabled('#seal-btn'), true, 'seal is enabled once the log is verified');
  });

  await step(t, 'a document sealed in the owner\'s page opens with podctl as the CLI user', async () => {
    const { page } = S.owner;
    const [name, size] = files.owner;
    assert.match(await text(page, '#seal-room-owner'), /owner [0-9a-f]{16}… \(you\)/);
    await page.setInputFiles('#seal-file', f(name));
    await recordStatuses(page, 'seal-status');
    assert.equal(await act(page, '#seal-btn', 'seal-panel'), 'done', await text(page, '#seal-error'));
    const seen = await page.evaluate(() => window.__seen);
    assert.ok(seen.some((s) => /^Sealing… .* of 6\.0 MiB$/.test(s)), `progress shown: ${seen.join(' | ')}`);
    assert.equal(await page.evaluate(() => document.getElementById('seal-progress').value), 1);
    const d = await download(page, '#seal-download', f(`${name}.spd`));
    assert.equal(d.name, `${name}.spd`);
    await podctl(['open', '--key', 'carol.key', '--in', d.path, '--out', f('carol-copy.bin')]);
    const [a, b] = [await readFile(f(name)), await readFile(f('carol-copy.bin'))];
    assert.equal(b.length, size);
    assert.ok(a.equals(b), 'identical plaintext');
  });

  await step(t, 'documents sealed with podctl open in the member\'s page (3 MiB and 40 MiB, streamed)', async () => {
    const m = S.member;
    for (const [name, size] of [files.cli, files.big]) {
      await podctl(['seal', '--room', S.roomId, '--in', f(name), '--out', f(`${name}.spd`)]);
      const { state, seen } = await openInPage(m, f(`${name}.spd`));
      assert.equal(state, 'done', await text(m.page, '#open-error'));
      assert.ok(seen.some((s) => /^Receiving and decrypting “.*”… [\d.]+ [KM]iB of [\d.]+ MiB$/.test(s)), `progress shown: ${seen.join(' | ')}`);
      assert.match(await text(m.page, '#open-status'), /receipt/);
      if (name === files.cli[0]) await shot(m.page, 'open-done.png', '#open-panel');
      const d = await download(m.page, '#open-download', f(`member-${name}`));
      assert.equal(d.name, name, 'saved under the document id');
      const [a, b] = [await readFile(f(name)), await readFile(d.path)];
      assert.equal(b.length, size);
      assert.ok(a.equals(b), `identical plaintext (${name})`);
    }
  });

  await step(t, 'the receipts the member\'s page kept check out against the audit log with podctl', async () => {
    const m = S.member;
    await m.page.click('[data-testid="export-receipts"]');
    const saved = await download(m.page, '[data-testid="receipts-download"]', f('pod-receipts.json'));
    const kept = JSON.parse(await readFile(saved.path, 'utf8'));
    assert.equal(kept.format, 'secure-pod-receipts/v1');
    const lists = Object.values(kept.receipts);
    assert.equal(lists.length, 1, 'one pod key');
    assert.ok(lists[0].length >= 2, `receipts of the member's opens: ${lists[0].length}`);
    const { stdout } = await podctl(['audit', 'verify', '--receipts', saved.path]);
    assert.match(stdout, new RegExp(`${lists[0].length} kept receipts checked`));
    // A receipt that is not the pod's is refused (podctl exits non-zero).
    const forged = { format: kept.format, receipts: { [Object.keys(kept.receipts)[0]]: [Buffer.alloc(120, 7).toString('base64')] } };
    await writeFile(f('forged-receipts.json'), JSON.stringify(forged));
    await assert.rejects(podctl(['audit', 'verify', '--receipts', f('forged-receipts.json')]),
      (e) => /a kept receipt is not signed by this pod/.test(String(e.stderr)));
  });

  await step(t, 'when storage refuses a receipt, the document is still offered, and the receipt as a file', async () => {
    const m = S.member;
    // This browser's storage refuses to keep receipts (a full disk, a quota).
    await m.page.evaluate(() => {
      const put = IDBObjectStore.prototype.put;
      window.__put = put;
      IDBObjectStore.prototype.put = function refuse(value, key) {
        if (key === 'receipts') throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
        return put.call(this, value, key);
      };
    });
    try {
      const [name] = files.cli;
      const { state } = await openInPage(m, f(`${name}.spd`));
      assert.equal(state, 'done', await text(m.page, '#open-error'));
      const warning = await text(m.page, '#open-error');
      assert.match(warning, /The document is open, but its receipt could not be kept in this browser/);
      assert.match(warning, /quota/);
      const doc = await download(m.page, '#open-download', f(`stored-nothing-${name}`));
      assert.ok((await readFile(doc.path)).equals(await readFile(f(name))), 'the document is offered, intact');
      const receipt = await download(m.page, '#open-receipt-download', f('one-receipt.json'));
      assert.match(receipt.name, /^pod-receipt-\d+\.json$/);
      const { stdout } = await podctl(['audit', 'verify', '--receipts', receipt.path]);
      assert.match(stdout, /1 kept receipts checked/);
    } finally {
      await m.page.evaluate(() => { IDBObjectStore.prototype.put = window.__put; });
    }
  });

  await step(t, 'a copy or receipt altered on the way is refused and nothing is offered', async () => {
    // The parent is untrusted: here it flips one byte of the copy's last chunk, then swaps in the (validly signed)
    // receipt of an earlier request. The page must refuse both and offer nothing.
    const m = S.member;
    await writeFile(f('memo.txt'), randomBytes(200_000));
    await podctl(['seal', '--room', S.roomId, '--in', f('memo.txt'), '--out', f('memo.spd')]);
    const receipts = [];
    const watch = async (r) => {
      if (new URL(r.url()).pathname === '/pod/re-encrypt/stream' && r.status() === 200) receipts.push(await r.headerValue('x-pod-receipt'));
    };
    m.page.on('response', watch);
    const { state } = await openInPage(m, f('memo.spd'));
    assert.equal(state, 'done', await text(m.page, '#open-error'));
    m.page.off('response', watch);
    assert.equal(receipts.length, 1);

    const tamper = async (how) => {
      await m.page.route('**/pod/re-encrypt/stream', async (route) => {
        const response = await route.fetch();
        const body = Buffer.from(await response.body());
        const headers = { ...response.headers() };
        if (how === 'body') body[body.length - 5] ^= 1;
        if (how === 'receipt') headers['x-pod-receipt'] = receipts[0];
        await route.fulfill({ status: response.status(), headers, body });
      });
      try {
        return await openInPage(m, f('memo.spd'));
      } finally {
        await m.page.unroute('**/pod/re-encrypt/stream');
      }
    };
    for (const [how, why] of [['body', /incomplete or altered|does not open/], ['receipt', /receipt does not check out/]]) {
      const { state: s2 } = await tamper(how);
      assert.equal(s2, 'failed', `altered ${how} refused`);
      const err = await text(m.page, '#open-error');
      assert.match(err, /does not check out; nothing was offered/, err);
      assert.match(err, why, err);
      assert.equal(await m.page.isHidden('#open-download'), true, 'nothing is offered');
    }
  });

  await step(t, 'an open whose answer does not come can be cancelled, and nothing is offered', async () => {
    const m = S.member;
    const held = await holdRequests(m.page, '**/pod/re-encrypt/stream');
    try {
      await m.page.setInputFiles('#open-file', f('memo.spd'));
      await m.page.click('#open-btn');
      await held.arrived;
      assert.equal(await m.page.isVisible('#open-cancel-btn'), true, 'a Cancel button while it runs');
      await m.page.click('#open-cancel-btn');
      await m.page.waitForSelector('#open-panel[data-state="done"], #open-panel[data-state="failed"]');
    } finally {
      await held.release('abort');
    }
    assert.equal(await m.page.evaluate(() => document.getElementById('open-panel').dataset.state), 'failed');
    const err = await text(m.page, '#open-error');
    assert.match(err, /^Cancelled/, err);
    assert.match(err, /nothing was offered\. The pod had the request already, so its audit log may record this open/, err);
    assert.equal(await m.page.isHidden('#open-download'), true, 'nothing is offered');
    assert.equal(await m.page.isHidden('#open-cancel-btn'), true);
    assert.equal(await m.page.isEnabled('#open-btn'), true, 'the page is usable again');
  });

  await step(t, 'after the owner revokes the member in the page, the member\'s page is refused', async (st) => {
    const { page } = S.owner;
    assert.equal(await act(page, `[data-testid="revoke"][data-user-id="${S.memberId}"]`, 'rooms-panel'), 'done',
      await text(page, '#room-error'));
    assert.equal(await page.$(`[data-testid="member-row"][data-user-id="${S.memberId}"]`), null, 'the member is gone');
    assert.match(await text(page, '#room-status'), /Revoked/);

    const m = S.member;
    // The 40 MiB document: the browser sends all of it before it reads the answer, and the refusal still arrives
    // as the pod's answer (the proxy reads the body before it answers).
    const { state } = await openInPage(m, f(`${files.big[0]}.spd`));
    assert.equal(state, 'failed');
    assert.match(await text(m.page, '#open-error'), /You do not have access to this data room \(it may have been revoked\)/);
    assert.equal(await m.page.getAttribute('#open-error', 'data-code'), 'not_a_member');
    assert.match(await text(m.page, '#open-error'), /The pod said:/);
    assert.equal(await m.page.isHidden('#open-download'), true, 'nothing is offered');
    await shot(m.page, 'revoked.png', '#open-panel');
    // The CLI user still reads.
    await podctl(['open', '--key', 'carol.key', '--in', f(`${files.cli[0]}.spd`), '--out', f('carol-again.bin')]);
    assert.ok((await readFile(f('carol-again.bin'))).equals(await readFile(f(files.cli[0]))));
  });

  await step(t, 'a page with a wrong PCR file is refused and sends nothing but the attestation request', async () => {
    const pcrs = JSON.parse(await readFile(S.env.POD_PCRS, 'utf8'));
    const flip = pcrs.PCR0[0] === '0' ? '1' : '0';
    await writeFile(f('wrong-pcrs.json'), JSON.stringify({ ...pcrs, PCR0: flip + pcrs.PCR0.slice(1) }));
    const u = await newUser('stranger');
    const { page } = u;
    await loadPage(u);
    // Keys and a room id are local: with them the only thing keeping actions disabled is the pod. The keys are an
    // existing RSA-OAEP-4096 private key (PKCS#8 PEM), imported through the page.
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 4096 });
    await page.click('#keys-none details summary');
    await page.fill('#rsa-text', privateKey.export({ type: 'pkcs8', format: 'pem' }));
    assert.equal(await act(page, '#rsa-import-btn', 'keys-panel'), 'done', await text(page, '#keys-error'));
    assert.equal(await text(page, '#my-enc-alg'), 'RSA-OAEP-4096');
    assert.equal(await page.inputValue('#rsa-text'), '', 'the PEM is not left in the page');
    await page.click('#add-room-details summary');
    await page.fill('#add-room-id', S.roomId);
    await act(page, '#add-room-btn', 'rooms-panel');
    await page.setInputFiles('#seal-file', f(files.cli[0]));
    await page.setInputFiles('#open-file', f(`${files.cli[0]}.spd`));

    assert.equal(await verifyThroughInputs(u, f('wrong-pcrs.json')), 'failed');
    const err = await text(page, '#pod-error');
    assert.match(err, /could not be verified\. Nothing was sent to it/);
    assert.match(err, /PCR0 does not match/);
    assert.match(await text(page, '#pod-badge'), /NOT verified/);
    for (const b of ['#seal-btn', '#open-btn', '#create-room-btn', '#grant-btn', '#refresh-room-btn']) {
      assert.equal(await page.isDisabled(b), true, `${b} is disabled`);
    }
    assert.equal(await page.getAttribute('#open-btn', 'title'), 'Verify the pod first');
    // Even a script click on the disabled buttons sends nothing.
    await page.evaluate(() => { for (const id of ['seal-btn', 'open-btn', 'refresh-room-btn']) document.getElementById(id).click(); });
    await page.waitForTimeout(500);
    await page.click('#pod-settings summary'); // fold the settings, as a person reading the verdict might
    await shot(page, 'wrong-pcrs.png');

    const toPod = u.requests.filter((r) => r.url.startsWith(S.url));
    const api = toPod.filter((r) => !(r.method === 'GET' && new URL(r.url).pathname.startsWith('/app/')));
    assert.ok(api.length >= 1, 'the page asked for an attestation');
    for (const r of api) {
      assert.equal(`${r.method} ${new URL(r.url).pathname}`, 'GET /pod/attestation', `only attestation reached the pod: ${r.method} ${r.url}`);
    }
    assert.deepEqual(u.errors, [], 'no script or CSP errors in the page');
    await u.context.close();
  });

  await step(t, 'a pinned pod key that differs is refused until the user forgets the pin', async () => {
    const { page } = S.owner;
    const real = await page.getAttribute('#pod-facts', 'data-fingerprint');
    await idbPut(page, 'pin', { fingerprint: 'ab'.repeat(32), pinnedAt: 0 });
    const before = S.owner.requests.length;
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    await page.waitForSelector('body[data-pod="failed"]');
    assert.match(await text(page, '#pod-error'), /different key than the one pinned\. Nothing was sent/);
    assert.match(await text(page, '#pod-error'), /Forget the pinned key/);
    assert.equal(await page.isDisabled('#seal-btn'), true);
    const api = S.owner.requests.slice(before).filter((r) => r.url.startsWith(S.url) && !new URL(r.url).pathname.startsWith('/app/'));
    assert.deepEqual(api.map((r) => new URL(r.url).pathname), ['/pod/attestation']);
    // The user forgets the pin; before this page verifies again, another tab pins a different key. That pin
    // stands: this page does not pin over it, and refuses the pod.
    await page.click('#repin-btn');
    await page.waitForFunction(() => /forgotten/.test(document.getElementById('pod-status').textContent));
    await idbPut(page, 'pin', { fingerprint: 'cd'.repeat(32), pinnedAt: 1 });
    await page.click('#verify-btn');
    await page.waitForSelector('body[data-pod="failed"]');
    assert.match(await text(page, '#pod-error'), /different key than the one pinned\. Nothing was sent/);
    assert.match(await text(page, '#pod-error'), /pinned key cdcdcdcd/);
    assert.equal(await page.isVisible('#repin-btn'), true);
    // Forgotten again, the next verification pins the pod's key.
    await page.click('#repin-btn');
    await page.waitForFunction(() => /forgotten/.test(document.getElementById('pod-status').textContent));
    await page.click('#verify-btn');
    await page.waitForSelector('body[data-pod="verified"]');
    assert.equal(await page.getAttribute('#pod-facts', 'data-fingerprint'), real);
    assert.match(await text(page, '#pod-facts'), /pinned now \(first verification\)/);
  });

  for (const u of [S.owner, S.member]) assert.deepEqual(u?.errors ?? [], [], `no script errors in the ${u?.name} page`);
  t.diagnostic(`end-to-end run took ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
