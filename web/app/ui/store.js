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

/** The open database, or the attempt under way; null when the next use must open it (again). */
let dbPromise = null;

function open() {
  if (!dbPromise) {
    const attempt = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => {
        const db = req.result;
        // Another tab upgrading the database (a newer page) waits for this connection: close it, and open
        // again at the next use. A connection the browser closes (storage cleared) is reopened the same way.
        db.onversionchange = () => {
          db.close();
          if (dbPromise === attempt) dbPromise = null;
        };
        db.onclose = () => {
          if (dbPromise === attempt) dbPromise = null;
        };
        resolve(db);
      };
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error('the page\'s storage is blocked by another tab of this page: close it and try again'));
    });
    // A failed open is not kept: the next use tries again (the other tab may be gone, the disk less full).
    attempt.catch(() => {
      if (dbPromise === attempt) dbPromise = null;
    });
    dbPromise = attempt;
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
 * Reads a key and, in the same transaction, writes what `decide` makes of it: no other tab can write the key in
 * between (IndexedDB runs read-write transactions on one store one after the other).
 * @template R
 * @param {string} key
 * @param {(value: any) => {write: boolean, value?: any, result: R}} decide synchronous (the transaction would
 *   commit while it awaited)
 * @returns {Promise<R>}
 */
export function update(key, decide) {
  return open().then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, 'readwrite');
    const s = tx.objectStore(STORE);
    let result;
    const read = s.get(key);
    read.onsuccess = () => {
      try {
        const d = decide(read.result);
        result = d.result;
        if (d.write) s.put(d.value, key);
      } catch (e) {
        tx.abort();
        reject(e);
      }
    };
    tx.oncomplete = () => resolve(result);
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
