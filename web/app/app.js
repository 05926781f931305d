// The Secure Pod data room page: verify the pod, hold my keys, manage rooms, seal and open documents.
//
// Plain ES modules, no framework and no build step. Every action that talks to the pod goes through PodClient
// (lib/api.js), which verifies the pod's attestation again first and refuses to send anything else to a pod that
// has not just verified. Panels carry `data-state` (idle | busy | done | failed) for people's styles and for the
// end-to-end test; <body data-pod> is unverified | verifying | verified | failed.

import { PodClient, PodApiError, explainError, docIdText, truncateUtf8, firstUsePin } from './lib/api.js';
import { parsePcrFile, pemToDer, AWS_NITRO_ROOT_G1_SHA256 } from './lib/attest.js';
import {
  toHex, fromHex, toBase64, fingerprint, generateUserKeys, importRsaKeyBundle, publicText, parsePublic, memberList,
  ENC_HPKE_P256, ENC_RSA_OAEP_4096,
} from './lib/pod.js';
import {
  $, el, show, hide, setStatus, setError, offerDownload, formatBytes, short, readText, safeFileName,
} from './ui/dom.js';
import * as store from './ui/store.js';

const client = new PodClient();

const state = {
  /** @type {Map<number, Uint8Array> | null} */ pcrs: null,
  rootMode: 'aws',
  /** @type {Uint8Array[] | undefined} */ rootsDer: undefined,
  rootOk: true,
  rootLabel: '',
  /** @type {{fingerprint: string, pinnedAt: number} | null} */ pin: null,
  /** @type {import('./lib/api.js').VerifiedPod | null} */ pod: null,
  /** @type {import('./lib/pod.js').UserKeys | null} */ keys: null,
  /** @type {Array<{id: string, name: string, addedAt: number, seenSeq?: number, seenHead?: string}>} */ rooms: [],
  currentRoomId: '',
  /** @type {import('./lib/pod.js').Room | null} the last verified read of a room's log (maybe not the current room) */
  room: null,
  busy: false,
  /** @type {AbortController | null} cancels the running seal or open */
  cancel: null,
  /** Set by the pinning of the last verification: whether it pinned the key now, and a storage failure to show. */
  pinnedNow: false,
  /** @type {{title: string, detail: string} | null} */ pinError: null,
};

// ---- Controls ----------------------------------------------------------------------------------------------------

function policyReady() {
  return state.pcrs !== null && state.rootOk;
}

/** The current room as this page last read and verified its log, or null (never another room's). */
function currentRoom() {
  const r = state.room;
  return r && state.currentRoomId && toHex(r.roomId) === state.currentRoomId ? r : null;
}

/** Enables exactly the actions that can run now. */
function refreshControls() {
  $('verify-btn').disabled = state.busy || !policyReady();
  for (const b of document.querySelectorAll('.needs-pod, .needs-keys, .needs-room')) {
    let why = '';
    if (b.classList.contains('needs-pod') && !state.pod) why = 'Verify the pod first';
    else if (b.classList.contains('needs-keys') && !state.keys) why = 'Create or import your keys first';
    else if (b.classList.contains('needs-room') && !state.currentRoomId) why = 'Create or choose a room first';
    else if (b.classList.contains('needs-room-verified') && !currentRoom()) {
      why = 'Press “Show members” first: the page seals only for a room whose log it has read and verified';
    }
    b.disabled = state.busy || why !== '';
    if (why) b.title = why;
    else b.removeAttribute('title');
  }
  // The room selector too: a room chosen while an action runs would show that action's result under its id.
  for (const id of ['keygen-btn', 'rsa-import-btn', 'delete-keys-btn', 'add-room-btn', 'repin-btn', 'room-select']) {
    $(id).disabled = state.busy;
  }
  show($('repin-btn'), state.pin !== null);
}

function setPanelState(panelId, s) {
  $(panelId).dataset.state = s;
}

/**
 * Runs one action at a time; its errors go to the panel's alert region, explained.
 * @param {{panel: string, status: string, error: string}} where element ids
 * @param {() => Promise<void>} fn
 */
async function act(where, fn) {
  if (state.busy) return;
  state.busy = true;
  setPanelState(where.panel, 'busy');
  setError($(where.error), null);
  refreshControls();
  try {
    await fn();
    setPanelState(where.panel, 'done');
  } catch (e) {
    console.error(e);
    setStatus($(where.status), '');
    for (const p of $(where.panel).querySelectorAll('progress')) hide(p);
    setError($(where.error), explainError(e));
    setPanelState(where.panel, 'failed');
  } finally {
    state.busy = false;
    refreshControls();
  }
}

// ---- Pod verification --------------------------------------------------------------------------------------------

function setBadge(kind, text) {
  const b = $('pod-badge');
  b.className = `badge badge-${kind}`;
  b.textContent = text;
}

function podUnverified(reason) {
  state.pod = null;
  client.invalidate();
  document.body.dataset.pod = 'unverified';
  setBadge('neutral', 'Pod not verified');
  setStatus($('pod-status'), reason);
  setError($('pod-error'), null);
  hide($('pod-facts'));
  refreshControls();
}

function renderSettingsSummary() {
  const pcr = state.pcrs
    ? `${state.pcrs.size} PCRs${state.pcrs.has(0) ? ` (PCR0 ${toHex(state.pcrs.get(0)).slice(0, 8)}…)` : ''}`
    : 'no PCR file';
  const root = state.rootMode === 'aws' ? 'AWS Nitro root' : state.rootOk ? `custom root ${state.rootLabel}` : 'no valid root';
  $('settings-summary').textContent = `${pcr} · ${root}`;
  $('settings-summary').className = policyReady() ? 'muted small' : 'bad small';
}

function configureClient() {
  renderSettingsSummary();
  if (!policyReady()) {
    podUnverified(state.pcrs ? 'Load a valid attestation root to verify the pod.'
      : 'Load the pod\'s published PCR file to verify it.');
    return false;
  }
  client.configure({ expectedPcrs: state.pcrs, rootsDer: state.rootsDer, pinnedFingerprint: state.pin?.fingerprint ?? null });
  podUnverified('Ready to verify the pod.');
  return true;
}

async function onVerification(pod, error) {
  if (!pod) {
    state.pod = null;
    state.pinnedNow = false;
    state.pinError = null;
    document.body.dataset.pod = 'failed';
    const info = explainError(error);
    setBadge('bad', error?.kind === 'pin_mismatch' ? 'Pod key changed — refused' : 'Pod NOT verified');
    setStatus($('pod-status'), '');
    setError($('pod-error'), info);
    hide($('pod-facts'));
    setPanelState('pod-panel', 'failed');
    refreshControls();
    return;
  }
  const pinnedNow = state.pinnedNow;
  const pinError = state.pinError;
  state.pinnedNow = false;
  state.pinError = null;
  state.pod = pod;
  document.body.dataset.pod = 'verified';
  setBadge('ok', `Pod verified · key ${pod.fingerprint.slice(0, 8)}`);
  setError($('pod-error'), pinError);
  setStatus($('pod-status'), 'Pod verified: attestation signed by the pinned root, PCRs match the published file, nonce fresh.', 'ok');
  await renderPodFacts(pod, pinnedNow);
  // What was proven is on show; the settings it was proven against fold away (the summary line names them).
  $('pod-settings').open = false;
  refreshControls();
}
client.onVerification = (pod, error) => { onVerification(pod, error).catch((e) => console.error(e)); };

/**
 * Trust on first use, when this page has no pin: pins the key the pod proved unless storage holds a pin by now
 * (another tab of this page may have pinned a key since this one loaded), in one storage transaction. The client
 * refuses the pod when the pin that stands is another key's.
 * @param {string} presented the fingerprint of the key the pod just proved
 * @returns {Promise<string>} the fingerprint pinned
 */
async function pinOnFirstUse(presented) {
  let decision;
  try {
    decision = await store.update('pin', (stored) => {
      const d = firstUsePin(stored, presented, Date.now());
      return { write: d.write, value: d.pin, result: d };
    });
  } catch (e) {
    // A pin kept only in memory would be forgotten at the next load, and the next key trusted silently: say so.
    decision = firstUsePin(null, presented, Date.now());
    state.pinError = {
      title: 'The pod verified, but its key could not be pinned in this browser',
      detail: `Storage refused it (${e?.message ?? e}); the page will not remember this pod's key after a reload.`,
    };
  }
  state.pin = decision.pin;
  state.pinnedNow = decision.write;
  return decision.pin.fingerprint;
}
client.pinOnFirstUse = pinOnFirstUse;

async function renderPodFacts(pod, pinnedNow) {
  const dl = $('pod-facts');
  const receiptFpr = toHex(await fingerprint(pod.receiptKeySpki));
  const pcr0 = pod.pcrs.get(0);
  // The document's time is within 5 minutes of this computer's clock, or it would not have verified.
  const rows = [
    ['Document time', `${new Date(pod.timestamp).toLocaleString()}`, 'within 5 minutes of this computer\'s clock'],
    ['PCR0', pcr0 ? short(toHex(pcr0), 24) : '—', `${pod.pcrs.size} PCRs in the document; every one in the PCR file matches`],
    ['Pod key', short(pod.fingerprint, 24), pinnedNow ? 'pinned now (first verification)' : 'the pinned key'],
    ['Receipt key', short(receiptFpr, 24), ''],
    ['Config hash', short(toHex(pod.configHash), 24), ''],
    ['Root', pod.rootSha256 === AWS_NITRO_ROOT_G1_SHA256 ? 'AWS Nitro Enclaves root G1' : `custom root ${short(pod.rootSha256, 16)}`, ''],
  ];
  dl.replaceChildren();
  for (const [k, v, note] of rows) {
    dl.append(el('dt', {}, k), el('dd', {}, el('code', { title: k === 'Pod key' ? pod.fingerprint : null }, v),
      note ? el('span', { class: 'muted small' }, ` ${note}`) : null));
  }
  dl.dataset.fingerprint = pod.fingerprint;
  show(dl);
}

async function verifyNow() {
  if (!policyReady() || state.busy) return;
  state.busy = true;
  document.body.dataset.pod = 'verifying';
  setPanelState('pod-panel', 'busy');
  setBadge('neutral', 'Verifying the pod…');
  setStatus($('pod-status'), 'Fetching a fresh attestation document and verifying it…', 'busy');
  setError($('pod-error'), null);
  refreshControls();
  try {
    await client.verify();
    setPanelState('pod-panel', 'done');
  } catch {
    // onVerification has shown it.
    setPanelState('pod-panel', 'failed');
  } finally {
    state.busy = false;
    refreshControls();
  }
}

async function applyPcrText(text, save) {
  const summary = $('pcr-summary');
  if (!text.trim()) {
    state.pcrs = null;
    summary.textContent = 'No PCR file loaded.';
    summary.className = 'muted small';
  } else {
    try {
      const pcrs = parsePcrFile(text);
      if (pcrs.size === 0) throw new Error('it lists no PCR');
      state.pcrs = pcrs;
      summary.textContent = `${pcrs.size} PCRs: ${[...pcrs.keys()].map((i) => `PCR${i}`).join(', ')}` +
        (pcrs.has(0) ? ` · PCR0 ${toHex(pcrs.get(0)).slice(0, 12)}…` : '');
      summary.className = 'ok small';
      if (save) await store.set('pcrs', { text });
    } catch (e) {
      state.pcrs = null;
      summary.textContent = e.message;
      summary.className = 'bad small';
    }
  }
  configureClient();
}

async function applyRoot(mode, pem, save) {
  state.rootMode = mode;
  $('root-aws').checked = mode === 'aws';
  $('root-custom').checked = mode === 'custom';
  show($('root-custom-box'), mode === 'custom');
  const summary = $('root-summary');
  if (mode === 'aws') {
    state.rootsDer = undefined;
    state.rootOk = true;
  } else {
    try {
      if (!pem.trim()) throw new Error('Paste or load the root certificate (PEM).');
      const der = pemToDer(pem);
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', der));
      state.rootsDer = [der];
      state.rootOk = true;
      state.rootLabel = `${toHex(digest).slice(0, 8)}…`;
      summary.textContent = `Certificate, SHA-256 ${toHex(digest).slice(0, 16)}…`;
      summary.className = 'ok small';
    } catch (e) {
      state.rootsDer = undefined;
      state.rootOk = false;
      summary.textContent = e.message;
      summary.className = 'bad small';
    }
  }
  if (save) await store.set('root', { mode, pem });
  configureClient();
}

async function forgetPin() {
  const ok = window.confirm('Forget the pinned pod key? The next successful verification pins whatever key the pod ' +
    'presents then. Do this only after the operator has announced a key rotation and you have checked it.');
  if (!ok) return;
  await store.del('pin');
  state.pin = null;
  configureClient();
  setStatus($('pod-status'), 'The pinned key is forgotten: verify the pod to pin its current key.');
}

// ---- Keys ----------------------------------------------------------------------------------------------------------

async function renderKeys() {
  const k = state.keys;
  show($('keys-none'), !k);
  show($('keys-some'), !!k);
  if (k) {
    $('my-user-id').textContent = toHex(k.userId);
    $('my-enc-alg').textContent = k.encAlg === ENC_HPKE_P256 ? 'P-256 (HPKE)' : 'RSA-OAEP-4096';
    $('my-pub').value = await publicText(k.bundle);
  }
  renderSealRoom();
  refreshControls();
}

const keysWhere = { panel: 'keys-panel', status: 'keys-status', error: 'keys-error' };

async function saveKeys(keys, what) {
  await store.set('keys', keys);
  state.keys = keys;
  await renderKeys();
  setStatus($('keys-status'), `${what} Your user id is ${short(toHex(keys.userId), 16)}; give your .pub to the room owner.`, 'ok');
}

function createKeys() {
  return act(keysWhere, async () => {
    const alg = $('keygen-alg').value === 'rsa' ? 'rsa' : 'p256';
    setStatus($('keys-status'), alg === 'rsa' ? 'Making an RSA-4096 key (this can take a few seconds)…' : 'Making your keys…', 'busy');
    await saveKeys(await generateUserKeys({ encAlg: alg }), 'Keys created and stored in this browser.');
  });
}

function importRsa() {
  return act(keysWhere, async () => {
    const text = $('rsa-text').value;
    // The private key's text leaves the page's fields whether or not the import works.
    $('rsa-text').value = '';
    setStatus($('keys-status'), 'Importing the RSA key…', 'busy');
    const keys = await importRsaKeyBundle(text);
    await saveKeys(keys, 'RSA key imported (non-extractable) with a new signing key.');
  });
}

function deleteKeys() {
  const ok = window.confirm('Delete your keys from this browser? You lose access to every room they were granted ' +
    'in, and nobody can recover them.');
  if (!ok) return undefined;
  return act(keysWhere, async () => {
    await store.del('keys');
    state.keys = null;
    await renderKeys();
    setStatus($('keys-status'), 'Your keys are deleted from this browser.');
  });
}

function downloadText(text, name) {
  const a = el('a', { href: URL.createObjectURL(new Blob([text], { type: 'text/plain' })), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// ---- Rooms ---------------------------------------------------------------------------------------------------------

const roomWhere = { panel: 'rooms-panel', status: 'room-status', error: 'room-error' };

function renderRoomList() {
  const sel = $('room-select');
  sel.replaceChildren();
  if (state.rooms.length === 0) sel.append(el('option', { value: '' }, '— no room yet —'));
  for (const r of state.rooms) {
    sel.append(el('option', { value: r.id }, `${r.name || 'Room'} · ${r.id.slice(0, 8)}`));
  }
  sel.value = state.currentRoomId;
}

async function saveRooms() {
  await store.set('rooms', state.rooms);
}

async function rememberRoom(id, name) {
  if (!state.rooms.some((r) => r.id === id)) {
    state.rooms.push({ id, name: name.trim(), addedAt: Date.now() });
    await saveRooms();
  }
  await selectRoom(id);
}

async function selectRoom(id) {
  state.currentRoomId = id;
  state.room = null;
  await store.set('current-room', id);
  renderRoomList();
  renderRoom();
}

function myRole(room) {
  if (!state.keys || !room) return null;
  const m = room.members.get(toHex(state.keys.userId));
  if (!m) return null;
  return toHex(room.ownerId) === toHex(state.keys.userId) ? 'owner' : m.admin ? 'admin' : 'member';
}

/** The seal panel's "For room" line: the room, and its owner once its log has verified. */
function renderSealRoom() {
  const current = state.rooms.find((r) => r.id === state.currentRoomId);
  $('seal-room').textContent = current ? `${current.name || 'Room'} · ${current.id.slice(0, 12)}…` : 'none selected';
  const owner = $('seal-room-owner');
  const room = currentRoom();
  if (!current) {
    owner.textContent = '';
    delete owner.dataset.owner;
  } else if (!room) {
    owner.textContent = '· owner not verified yet: press “Show members”';
    delete owner.dataset.owner;
  } else {
    const id = toHex(room.ownerId);
    const mine = state.keys && toHex(state.keys.userId) === id;
    owner.textContent = `· owner ${short(id, 16)}${mine ? ' (you)' : ''}, from the verified log`;
    owner.title = id;
    owner.dataset.owner = id;
  }
}

function renderRoom(entriesCount) {
  renderSealRoom();
  const view = $('room-view');
  show(view, !!state.currentRoomId);
  if (!state.currentRoomId) {
    refreshControls();
    return;
  }
  $('room-id').textContent = state.currentRoomId;
  const tbody = $('members');
  tbody.replaceChildren();
  // Only the current room's own log: a read of another room must never show under this room's id.
  const room = currentRoom();
  if (!room) {
    $('room-role').textContent = '—';
    $('room-log-facts').textContent = 'not read yet: press “Show members”';
    tbody.append(el('tr', {}, el('td', { colspan: '4', class: 'muted' }, 'Members are shown once the room\'s log is read and verified.')));
    hide($('grant-box'));
    refreshControls();
    return;
  }
  const role = myRole(room);
  $('room-role').textContent = role ?? 'not a member';
  $('room-role').dataset.role = role ?? 'none';
  const n = entriesCount ?? room.seq + 1;
  $('room-log-facts').textContent = `${n} ${n === 1 ? 'entry' : 'entries'}, head ${short(toHex(room.head), 16)}; ` +
    'every signature and link verified in this page';
  const me = state.keys ? toHex(state.keys.userId) : '';
  for (const m of memberList(room)) {
    const id = toHex(m.userId);
    const r = m.owner ? 'owner' : m.admin ? 'admin' : 'member';
    const canRevoke = !m.owner && (role === 'owner' || (role === 'admin' && !m.admin));
    const button = canRevoke
      ? el('button', {
        type: 'button', class: 'danger small needs-pod needs-keys', dataset: { testid: 'revoke', userId: id },
        'aria-label': `Revoke ${short(id, 8)}`, onclick: () => revoke(id),
      }, 'Revoke')
      : null;
    tbody.append(el('tr', { dataset: { testid: 'member-row', userId: id, role: r } },
      el('td', {}, el('span', { class: `role role-${r}` }, r)),
      el('td', {}, el('code', { title: id }, short(id, 16)), id === me ? el('span', { class: 'you' }, ' (you)') : null),
      el('td', {}, m.bundle.encAlg === ENC_RSA_OAEP_4096 ? 'RSA-4096' : 'P-256'),
      el('td', { class: 'cell-actions' }, button)));
  }
  show($('grant-box'), role === 'owner' || role === 'admin');
  refreshControls();
}

/** The head this page saw of a room, for the rollback check of the next read or change. */
function seenOf(roomIdHex) {
  const r = state.rooms.find((x) => x.id === roomIdHex);
  return r ? { seenSeq: r.seenSeq, seenHead: r.seenHead } : {};
}

async function noteSeen(room) {
  const r = state.rooms.find((x) => x.id === toHex(room.roomId));
  // Never backwards: a room read through the rollback check is at or after the head saved before.
  if (r && (r.seenSeq === undefined || room.seq >= r.seenSeq)) {
    r.seenSeq = room.seq;
    r.seenHead = toHex(room.head);
    await saveRooms();
  }
}

/**
 * Keeps a verified read of room `id`'s log: its head is remembered for the rollback check whatever room is
 * selected now, but it is shown only if `id` is still the current room.
 * @returns {Promise<boolean>} whether it is the current room's
 */
async function takeRoom(id, room, entriesCount) {
  await noteSeen(room);
  if (id !== state.currentRoomId || toHex(room.roomId) !== id) {
    setStatus($('room-status'), `Done for room ${short(id, 12)}, which is no longer the selected room: select it ` +
      'again to see its members.', 'warn');
    return false;
  }
  state.room = room;
  renderRoom(entriesCount);
  return true;
}

function loadRoom() {
  return act(roomWhere, async () => {
    const id = state.currentRoomId;
    setStatus($('room-status'), 'Verifying the pod, then reading the room\'s log…', 'busy');
    const seen = state.rooms.find((r) => r.id === id) ?? {};
    const { room, entries } = await client.room(id, seen);
    if (!await takeRoom(id, room, entries.length)) return;
    setStatus($('room-status'), `Members as of log entry ${room.seq} (verified here).`, 'ok');
  });
}

function createRoomAction() {
  return act(roomWhere, async () => {
    setStatus($('room-status'), 'Verifying the pod, then creating the room…', 'busy');
    const { roomId, room } = await client.createRoom(state.keys);
    const name = $('room-name').value;
    $('room-name').value = '';
    await rememberRoom(roomId, name);
    if (!await takeRoom(roomId, room, 1)) return;
    setStatus($('room-status'), `Room ${short(roomId, 16)} created; you are its owner. Share its id with members.`, 'ok');
  });
}

function addRoomById() {
  return act(roomWhere, async () => {
    const id = $('add-room-id').value.trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(id)) throw new PodApiError('local', 'A room id is 64 hex characters.');
    await rememberRoom(id, $('add-room-name').value);
    $('add-room-id').value = '';
    $('add-room-name').value = '';
    $('add-room-details').open = false;
    setStatus($('room-status'), `Room ${short(id, 16)} added to this browser's list.`, 'ok');
  });
}

async function previewGrant() {
  const text = $('grant-pub').value;
  const p = $('grant-preview');
  if (!text.trim()) {
    p.textContent = '';
    return;
  }
  try {
    const b = await parsePublic(text);
    p.textContent = `user ${short(toHex(b.userId), 16)} · ${b.encAlg === ENC_HPKE_P256 ? 'P-256' : 'RSA-4096'}`;
    p.className = 'ok small';
  } catch (e) {
    p.textContent = e.message;
    p.className = 'bad small';
  }
}

function grant() {
  return act(roomWhere, async () => {
    const bundle = await parsePublic($('grant-pub').value);
    setStatus($('room-status'), 'Verifying the pod, then signing the grant…', 'busy');
    const id = state.currentRoomId;
    const room = await client.grant({ keys: state.keys, roomId: id, bundle, seen: seenOf(id) });
    if (!await takeRoom(id, room)) return;
    $('grant-pub').value = '';
    $('grant-preview').textContent = '';
    setStatus($('room-status'), `Granted ${short(toHex(bundle.userId), 16)} (membership log entry ${room.seq}).`, 'ok');
  });
}

function revoke(userIdHex) {
  if (state.busy) return undefined;
  const ok = window.confirm(`Revoke ${short(userIdHex, 16)}? The pod refuses them from their very next request.`);
  if (!ok) return undefined;
  return act(roomWhere, async () => {
    setStatus($('room-status'), 'Verifying the pod, then signing the revocation…', 'busy');
    const id = state.currentRoomId;
    const room = await client.revoke({ keys: state.keys, roomId: id, userId: fromHex(userIdHex), seen: seenOf(id) });
    if (!await takeRoom(id, room)) return;
    setStatus($('room-status'), `Revoked ${short(userIdHex, 16)} (membership log entry ${room.seq}).`, 'ok');
  });
}

// ---- Seal ----------------------------------------------------------------------------------------------------------

const sealWhere = { panel: 'seal-panel', status: 'seal-status', error: 'seal-error' };

/**
 * Runs `fn` with a fresh AbortController behind the panel's Cancel button, shown only meanwhile.
 * @param {string} buttonId
 * @param {(signal: AbortSignal) => Promise<void>} fn
 */
async function cancellable(buttonId, fn) {
  const controller = new AbortController();
  state.cancel = controller;
  show($(buttonId));
  try {
    await fn(controller.signal);
  } finally {
    state.cancel = null;
    hide($(buttonId));
  }
}

function seal() {
  return act(sealWhere, async () => {
    const file = $('seal-file').files?.[0];
    offerDownload($('seal-download'), null);
    if (!file) throw new PodApiError('local', 'Choose a file to seal.');
    const roomId = state.currentRoomId;
    // The room's owner is on show only after a verified read of its log: no sealing for a room nobody has looked at.
    const known = currentRoom();
    if (!known) {
      throw new PodApiError('local', 'Press “Show members” in the rooms panel first: the page seals only for a ' +
        'room whose log it has read and verified, so that you can see whose room it is.');
    }
    const docId = $('seal-doc-id').value.trim() || truncateUtf8(file.name) || 'document';
    const bar = $('seal-progress');
    bar.value = 0;
    show(bar);
    setStatus($('seal-status'), 'Verifying the pod and the room\'s log…', 'busy');
    let last = 0;
    await cancellable('seal-cancel-btn', async (signal) => {
      const { blob, pod, room } = await client.seal({
        file, roomId, docId, seen: seenOf(roomId), signal,
        onProgress: (done, total) => {
          const now = performance.now();
          if (now - last < 80 && done !== total) return;
          last = now;
          bar.value = total ? done / total : 1;
          setStatus($('seal-status'), `Sealing… ${formatBytes(done)} of ${formatBytes(total ?? 0)}`, 'busy');
        },
      });
      await noteSeen(room);
      if (roomId === state.currentRoomId) {
        state.room = room;
        renderRoom();
      }
      bar.value = 1;
      const name = `${safeFileName(file.name, 'document')}.spd`;
      offerDownload($('seal-download'), blob, name, `Save “${name}” (${formatBytes(blob.size)})`);
      setStatus($('seal-status'), `Sealed “${docId}” (${formatBytes(file.size)}) for room ${short(roomId, 12)} ` +
        `(owner ${short(toHex(room.ownerId), 12)}) to pod key ${pod.fingerprint.slice(0, 12)}….`, 'ok');
    });
  });
}

// ---- Open ----------------------------------------------------------------------------------------------------------

const openWhere = { panel: 'open-panel', status: 'open-status', error: 'open-error' };

function openDoc() {
  return act(openWhere, async () => {
    const file = $('open-file').files?.[0];
    offerDownload($('open-download'), null);
    offerDownload($('open-receipt-download'), null);
    const bar = $('open-progress');
    hide(bar);
    if (!file) throw new PodApiError('local', 'Choose a sealed document (.spd).');
    const { header } = await PodClient.readSealedHeader(file);
    const name = docIdText(header.docId);
    const known = state.rooms.find((r) => r.id === toHex(header.roomId));
    const roomText = known?.name ? `“${known.name}”` : short(toHex(header.roomId), 12);
    setStatus($('open-status'), `“${name}” of room ${roomText}: verifying the pod…`, 'busy');
    bar.value = 0;
    bar.removeAttribute('value');
    show(bar);
    let last = 0;
    let sent = false;
    const onPhase = (phase) => {
      if (phase === 'sending') {
        sent = true;
        setStatus($('open-status'), `Signed the request; sending “${name}” (${formatBytes(file.size)}) to the pod…`, 'busy');
      }
      if (phase === 'checking') setStatus($('open-status'), 'Checking the pod\'s receipt…', 'busy');
    };
    const onProgress = (done, total) => {
      const now = performance.now();
      if (now - last < 80 && done !== total) return;
      last = now;
      bar.value = total ? Math.min(1, done / total) : 1;
      setStatus($('open-status'), `Receiving and decrypting “${name}”… ${formatBytes(done)} of ${formatBytes(total)}`, 'busy');
    };
    let result;
    await cancellable('open-cancel-btn', async (signal) => {
      try {
        result = await client.open({ file, keys: state.keys, signal, onPhase, onProgress });
      } catch (e) {
        // Once the request has gone, the pod may have released and logged the copy before the cancel arrived.
        if (e?.kind === 'cancelled' && sent) {
          throw new PodApiError('cancelled', 'You cancelled it before it finished; nothing was offered. The pod had ' +
            'the request already, so its audit log may record this open.', { cause: e });
        }
        throw e;
      }
    });
    bar.value = 1;
    // The document first: a storage failure must not lose a copy the pod has released (and logged).
    const fileName = safeFileName(name, 'document');
    offerDownload($('open-download'), result.blob, fileName, `Save “${fileName}” (${formatBytes(result.size)})`);
    // What this proves: the attested pod released this copy for you and logged it. Not who sealed the document:
    // anyone may seal to the pod key, so the header hash is shown for comparison with the one the sealer published.
    setStatus($('open-status'), `Opened “${name}” (${formatBytes(result.size)}): released by the verified pod for ` +
      `you, every chunk intact, and logged as audit entry ${result.receipt.auditSeq} (signed receipt checked). ` +
      `Document header hash ${short(toHex(result.headerHash), 16)} — compare it with the sealer's if it matters ` +
      'who wrote it.', 'ok');
    try {
      await keepReceipt(result.pod.fingerprint, result.receiptBytes);
    } catch (e) {
      // The receipt is what lets an auditor show the pod logged this open: offer it as a file instead.
      const receiptName = `pod-receipt-${result.receipt.auditSeq}.json`;
      offerDownload($('open-receipt-download'), receiptsFile({ [result.pod.fingerprint]: [toBase64(result.receiptBytes)] }),
        receiptName, `Save this open's receipt (${receiptName})`);
      setError($('open-error'), {
        title: 'The document is open, but its receipt could not be kept in this browser',
        detail: `Storage refused it (${e?.message ?? e}). Save the receipt offered below and keep it with your ` +
          'other receipts: `podctl audit verify --receipts` reads it, and it shows that the pod logged this open.',
      });
    }
  });
}

/** Receipts kept per pod key, newest last, at most this many per key. */
const MAX_RECEIPTS = 10_000;

/** Keeps a verified receipt: it proves the pod logged this open, and the log must keep showing it. */
async function keepReceipt(podFingerprint, receiptBytes) {
  const all = (await store.get('receipts')) ?? {};
  const list = Array.isArray(all[podFingerprint]) ? all[podFingerprint] : [];
  list.push(toBase64(receiptBytes));
  all[podFingerprint] = list.slice(-MAX_RECEIPTS);
  await store.set('receipts', all);
}

/**
 * Receipts as the file `podctl audit verify --receipts` reads.
 * @param {Record<string, string[]>} receipts base64 receipts per pod key fingerprint
 */
function receiptsFile(receipts) {
  const text = JSON.stringify({ format: 'secure-pod-receipts/v1', receipts }, null, 1);
  return new Blob([text], { type: 'application/json' });
}

/** Offers the kept receipts as `pod-receipts.json` (the format `podctl audit verify --receipts` reads). */
async function exportReceipts() {
  const all = (await store.get('receipts')) ?? {};
  const n = Object.values(all).reduce((k, l) => k + (Array.isArray(l) ? l.length : 0), 0);
  offerDownload($('receipts-download'), receiptsFile(all), 'pod-receipts.json',
    `Save pod-receipts.json (${n} receipt${n === 1 ? '' : 's'})`);
}

// ---- Start -------------------------------------------------------------------------------------------------------

function wire() {
  $('verify-btn').addEventListener('click', verifyNow);
  $('repin-btn').addEventListener('click', () => { forgetPin().catch((e) => console.error(e)); });
  $('pcr-text').addEventListener('input', () => applyPcrText($('pcr-text').value, true));
  $('pcr-file').addEventListener('change', async () => {
    const f = $('pcr-file').files?.[0];
    if (!f) return;
    try {
      $('pcr-text').value = await readText(f);
      await applyPcrText($('pcr-text').value, true);
    } catch (e) {
      $('pcr-summary').textContent = e.message;
    }
    $('pcr-file').value = '';
  });
  for (const id of ['root-aws', 'root-custom']) {
    $(id).addEventListener('change', () => applyRoot($('root-custom').checked ? 'custom' : 'aws', $('root-text').value, true));
  }
  $('root-text').addEventListener('input', () => applyRoot('custom', $('root-text').value, true));
  $('root-file').addEventListener('change', async () => {
    const f = $('root-file').files?.[0];
    if (!f) return;
    try {
      $('root-text').value = await readText(f);
      await applyRoot('custom', $('root-text').value, true);
    } catch (e) {
      $('root-summary').textContent = e.message;
    }
    $('root-file').value = '';
  });

  $('keygen-btn').addEventListener('click', createKeys);
  $('rsa-import-btn').addEventListener('click', importRsa);
  $('rsa-file').addEventListener('change', async () => {
    const f = $('rsa-file').files?.[0];
    if (f) $('rsa-text').value = await readText(f);
    $('rsa-file').value = '';
  });
  $('delete-keys-btn').addEventListener('click', deleteKeys);
  $('copy-pub-btn').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('my-pub').value);
      setStatus($('keys-status'), 'Public key copied.', 'ok');
    } catch {
      $('my-pub').select();
      setStatus($('keys-status'), 'Select the text and copy it (the browser refused clipboard access).', 'warn');
    }
  });
  $('download-pub-btn').addEventListener('click', () => {
    if (state.keys) downloadText($('my-pub').value, `secure-pod-${toHex(state.keys.userId).slice(0, 8)}.pub`);
  });

  $('room-select').addEventListener('change', async () => {
    await selectRoom($('room-select').value);
    if (state.pod && state.currentRoomId) await loadRoom();
  });
  $('refresh-room-btn').addEventListener('click', loadRoom);
  $('create-room-btn').addEventListener('click', createRoomAction);
  $('add-room-btn').addEventListener('click', addRoomById);
  $('grant-pub').addEventListener('input', previewGrant);
  $('grant-file').addEventListener('change', async () => {
    const f = $('grant-file').files?.[0];
    if (f) $('grant-pub').value = await readText(f);
    $('grant-file').value = '';
    await previewGrant();
  });
  $('grant-btn').addEventListener('click', grant);

  $('seal-file').addEventListener('change', () => {
    const f = $('seal-file').files?.[0];
    $('seal-doc-id').placeholder = f ? truncateUtf8(f.name) : '';
    offerDownload($('seal-download'), null);
    setStatus($('seal-status'), '');
  });
  $('seal-btn').addEventListener('click', seal);
  for (const id of ['seal-cancel-btn', 'open-cancel-btn']) $(id).addEventListener('click', () => state.cancel?.abort());
  $('open-file').addEventListener('change', () => {
    offerDownload($('open-download'), null);
    offerDownload($('open-receipt-download'), null);
    setStatus($('open-status'), '');
    setError($('open-error'), null);
  });
  $('open-btn').addEventListener('click', openDoc);
  $('export-receipts-btn').addEventListener('click', () => { exportReceipts().catch((e) => console.error(e)); });
}

async function start() {
  if (!globalThis.crypto?.subtle || !globalThis.indexedDB) {
    show($('boot-error'));
    for (const b of document.querySelectorAll('button')) b.disabled = true;
    return;
  }
  wire();
  for (const id of ['pod-panel', 'keys-panel', 'rooms-panel', 'seal-panel', 'open-panel']) setPanelState(id, 'idle');
  const [pcrs, root, pin, keys, rooms, current] = await Promise.all(
    ['pcrs', 'root', 'pin', 'keys', 'rooms', 'current-room'].map((k) => store.get(k)));
  state.pin = pin ?? null;
  state.keys = keys ?? null;
  state.rooms = Array.isArray(rooms) ? rooms : [];
  state.currentRoomId = state.rooms.some((r) => r.id === current) ? current : (state.rooms[0]?.id ?? '');
  $('pcr-text').value = pcrs?.text ?? '';
  $('root-text').value = root?.pem ?? '';
  await applyRoot(root?.mode === 'custom' ? 'custom' : 'aws', root?.pem ?? '', false);
  await applyPcrText($('pcr-text').value, false);
  $('pod-settings').open = !policyReady();
  await renderKeys();
  renderRoomList();
  renderRoom();
  document.body.dataset.ready = 'true';
  // A page that knows what to expect verifies the pod straight away (this sends only the attestation request).
  if (policyReady()) {
    await verifyNow();
    // Then the selected room's members (its log is read after a fresh verification, like every action).
    if (state.pod && state.currentRoomId) await loadRoom();
  }
}

start().catch((e) => {
  console.error(e);
  const b = $('boot-error');
  b.textContent = `The page could not start: ${e.message}`;
  show(b);
});
