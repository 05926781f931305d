// Small DOM helpers. Text only ever goes in through textContent: nothing the pod or a file says becomes markup.

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function $(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error(`no element #${id}`);
  return e;
}

/**
 * Makes an element: `el('td', {class: 'x', dataset: {a: '1'}, title: 't'}, 'text', child…)`.
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

/** @param {HTMLElement} e @param {boolean} visible */
export function show(e, visible = true) {
  e.classList.toggle('hidden', !visible);
}

/** @param {HTMLElement} e */
export function hide(e) {
  e.classList.add('hidden');
}

/**
 * Sets a status line (role="status"): plain text, with an optional tone (`ok`, `busy`, `warn`).
 * @param {HTMLElement} e
 * @param {string} text
 * @param {'ok' | 'busy' | 'warn' | ''} [tone]
 */
export function setStatus(e, text, tone = '') {
  e.textContent = text;
  e.dataset.tone = tone;
  e.classList.toggle('status-ok', tone === 'ok');
  e.classList.toggle('status-busy', tone === 'busy');
  e.classList.toggle('status-warn', tone === 'warn');
}

/**
 * Shows an error panel (role="alert") from explainError's result, or hides it for `null`.
 * @param {HTMLElement} e
 * @param {{title: string, detail?: string, podMessage?: string, code?: string} | null} info
 */
export function setError(e, info) {
  e.replaceChildren();
  if (!info) {
    hide(e);
    delete e.dataset.code;
    return;
  }
  e.append(el('strong', { class: 'alert-title' }, info.title));
  if (info.detail) e.append(el('p', {}, info.detail));
  if (info.podMessage) e.append(el('p', { class: 'pod-said' }, 'The pod said: ', el('q', {}, info.podMessage)));
  if (info.code) e.dataset.code = info.code;
  else delete e.dataset.code;
  show(e);
}

/**
 * Points a download link at a Blob (revoking the URL it pointed at before).
 * @param {HTMLAnchorElement} a
 * @param {Blob | null} blob null hides the link
 * @param {string} [name]
 * @param {string} [label]
 */
export function offerDownload(a, blob, name = '', label = '') {
  if (a.dataset.url) {
    URL.revokeObjectURL(a.dataset.url);
    delete a.dataset.url;
  }
  if (!blob) {
    a.removeAttribute('download');
    a.setAttribute('href', '#');
    hide(a);
    return;
  }
  const url = URL.createObjectURL(blob);
  a.dataset.url = url;
  a.href = url;
  a.download = name;
  a.textContent = label || `Save “${name}”`;
  show(a);
}

/**
 * Bytes for people: 1.5 MiB.
 * @param {number} n
 * @returns {string}
 */
export function formatBytes(n) {
  if (n < 1024) return `${n} byte${n === 1 ? '' : 's'}`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/**
 * The first characters of a hex id, for display.
 * @param {string} hex
 * @param {number} [n]
 */
export function short(hex, n = 12) {
  return hex.length > n ? `${hex.slice(0, n)}…` : hex;
}

/**
 * Reads a small text file chosen in an <input type=file>.
 * @param {File} file
 * @param {number} [max] refuse larger files
 * @returns {Promise<string>}
 */
export async function readText(file, max = 65536) {
  if (file.size > max) throw new Error(`${file.name} is larger than ${formatBytes(max)}; is it the right file?`);
  return file.text();
}

/**
 * A name safe to save a file under: no path separators or control characters.
 * @param {string} name
 * @param {string} fallback
 */
export function safeFileName(name, fallback) {
  // Also the invisible and bidirectional characters (C1 controls, U+061C, U+200B-F, U+202A-E, U+2060-4, U+2066-9,
  // U+FEFF; the same as docIdText's in lib/api.js): "invoice\u202Efdp.exe" must not display as a PDF.
  // eslint-disable-next-line no-control-regex
  const s = name.replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff/\\:*?"<>|]/g, '_')
    .replace(/^\.+/, '_').trim();
  return s.length ? s.slice(0, 120) : fallback;
}
