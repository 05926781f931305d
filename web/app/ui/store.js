// What the page remembers, in this browser's IndexedDB (one object store of key → value). Values are structured
// clones, so the user's non-extractable CryptoKeys are stored as they are and stay non-extractable.
//
// Keys in use:
//   'pcrs'  {text}                        the published PCR file as the user loaded it
//   'root'  {mode: 'aws' | 'custom', pem} the attestation root
//   'pin'   {fingerprint, pinnedAt}       the pod key fingerprint pinned at the first successful verification
//   'keys'  UserKeys (keys.js)            my keys
//   'rooms' [{id, name, addedAt, seenSeq?, seenHead?}]  rooms I know, and the log head last seen of each

const DB_NAME = 'secure-pod';
const STORE = 'kv';

let dbPromise = null;

function open() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error('the page\'s storage is blocked by another tab'));
    });
  }
  return dbPromise;
}

function run(mode, fn) {
  return open().then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req?.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('storage transaction aborted'));
  }));
}

/**
 * @param {string} key
 * @returns {Promise<any>} undefined when absent
 */
export function get(key) {
  return run('readonly', (s) => s.get(key));
}

/**
 * @param {string} key
 * @param {any} value
 */
export function set(key, value) {
  return run('readwrite', (s) => s.put(value, key)).then(() => undefined);
}

/** @param {string} key */
export function del(key) {
  return run('readwrite', (s) => s.delete(key)).then(() => undefined);
}
