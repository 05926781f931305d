// Deterministic CBOR (RFC 8949) for Secure Pod, in the browser and in Node.
//
// The subset the pod speaks (docs/SPEC.md §1): unsigned and negative integers, byte strings (Uint8Array), text
// strings, arrays, maps (for COSE and the attestation payload), null, booleans and tag 18 (COSE_Sign1). The decoder
// is bounded before it allocates: every length is checked against the bytes that remain, nesting is limited, and
// trailing bytes are refused. Integers above 2^53 - 1 decode as BigInt so that nothing is silently rounded.

import { concatAll } from './bytes.js';

export class CborError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CborError';
  }
}

/** A tagged value, e.g. `new Tagged(18, [...])` for a tagged COSE_Sign1. */
export class Tagged {
  constructor(tag, value) {
    this.tag = tag;
    this.value = value;
  }
}

const MAX_DEPTH = 16;

/**
 * Decodes exactly one CBOR item that fills `bytes`.
 * Options: `maxDepth` (default 16), `allowIndefinite` (default false; AWS attestation maps may be indefinite).
 * Maps decode to `Map` (keys are numbers, BigInts or strings); duplicate keys are refused.
 */
export function decode(bytes, options = {}) {
  if (!(bytes instanceof Uint8Array)) throw new CborError('input must be a Uint8Array');
  const r = new Reader(bytes, options.maxDepth ?? MAX_DEPTH, options.allowIndefinite ?? false);
  const value = r.item(0);
  if (r.pos !== bytes.length) throw new CborError(`${bytes.length - r.pos} trailing bytes`);
  return value;
}

class Reader {
  constructor(bytes, maxDepth, allowIndefinite) {
    this.b = bytes;
    this.pos = 0;
    this.maxDepth = maxDepth;
    this.allowIndefinite = allowIndefinite;
  }

  need(n) {
    if (n > this.b.length - this.pos) throw new CborError('truncated input');
  }

  byte() {
    this.need(1);
    return this.b[this.pos++];
  }

  // Reads the argument of a head; returns a number when it is safe, else a BigInt.
  arg(info) {
    if (info < 24) return info;
    let n;
    if (info === 24) {
      n = this.byte();
      if (n < 24) throw new CborError('non-shortest integer');
      return n;
    }
    if (info === 25) {
      this.need(2);
      n = (this.b[this.pos] << 8) | this.b[this.pos + 1];
      this.pos += 2;
      if (n < 0x100) throw new CborError('non-shortest integer');
      return n;
    }
    if (info === 26) {
      this.need(4);
      n = new DataView(this.b.buffer, this.b.byteOffset + this.pos, 4).getUint32(0);
      this.pos += 4;
      if (n < 0x10000) throw new CborError('non-shortest integer');
      return n;
    }
    if (info === 27) {
      this.need(8);
      const big = new DataView(this.b.buffer, this.b.byteOffset + this.pos, 8).getBigUint64(0);
      this.pos += 8;
      if (big < 0x100000000n) throw new CborError('non-shortest integer');
      return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    }
    throw new CborError(`unsupported additional information ${info}`);
  }

  length(info) {
    const n = this.arg(info);
    if (typeof n !== 'number') throw new CborError('length too large');
    return n;
  }

  item(depth) {
    if (depth > this.maxDepth) throw new CborError('nesting too deep');
    const head = this.byte();
    const major = head >> 5;
    const info = head & 0x1f;
    if (info === 31) {
      if (!this.allowIndefinite || (major !== 4 && major !== 5)) {
        throw new CborError('indefinite length not allowed');
      }
      return major === 4 ? this.indefiniteArray(depth) : this.indefiniteMap(depth);
    }
    switch (major) {
      case 0:
        return this.arg(info);
      case 1: {
        const n = this.arg(info);
        return typeof n === 'number' ? -1 - n : -1n - n;
      }
      case 2: {
        const n = this.length(info);
        this.need(n);
        // Uint8Array.prototype.slice copies even for a Node Buffer (whose own slice would share memory).
        const out = Uint8Array.prototype.slice.call(this.b, this.pos, this.pos + n);
        this.pos += n;
        return out;
      }
      case 3: {
        const n = this.length(info);
        this.need(n);
        let text;
        try {
          text = new TextDecoder('utf-8', { fatal: true }).decode(this.b.subarray(this.pos, this.pos + n));
        } catch {
          throw new CborError('text string is not valid UTF-8');
        }
        this.pos += n;
        return text;
      }
      case 4: {
        const n = this.length(info);
        // Every element takes at least one byte: refuse a count the input cannot hold before allocating.
        this.need(n);
        const out = [];
        for (let i = 0; i < n; i++) out.push(this.item(depth + 1));
        return out;
      }
      case 5: {
        const n = this.length(info);
        this.need(2 * n);
        const out = new Map();
        for (let i = 0; i < n; i++) this.entry(out, depth);
        return out;
      }
      case 6: {
        const tag = this.arg(info);
        return new Tagged(tag, this.item(depth + 1));
      }
      default: {
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        throw new CborError(`unsupported simple value or float (0x${head.toString(16)})`);
      }
    }
  }

  entry(map, depth) {
    const key = this.item(depth + 1);
    if (typeof key !== 'number' && typeof key !== 'string' && typeof key !== 'bigint') {
      throw new CborError('map keys must be integers or text');
    }
    if (map.has(key)) throw new CborError(`duplicate map key ${String(key)}`);
    map.set(key, this.item(depth + 1));
  }

  indefiniteArray(depth) {
    const out = [];
    for (;;) {
      this.need(1);
      if (this.b[this.pos] === 0xff) {
        this.pos++;
        return out;
      }
      out.push(this.item(depth + 1));
    }
  }

  indefiniteMap(depth) {
    const out = new Map();
    for (;;) {
      this.need(1);
      if (this.b[this.pos] === 0xff) {
        this.pos++;
        return out;
      }
      this.entry(out, depth);
    }
  }
}

/**
 * Encodes a value deterministically: shortest heads, definite lengths. Accepts non-negative and negative safe
 * integers or BigInts, Uint8Array, strings, arrays, Maps with integer or text keys (sorted by encoded key bytes),
 * null, booleans and `Tagged`.
 */
export function encode(value) {
  const out = [];
  write(out, value);
  return concatAll(out);
}

function head(major, n) {
  const m = major << 5;
  if (typeof n === 'bigint') {
    if (n < 0n || n > 0xffffffffffffffffn) throw new CborError('integer out of range');
    if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return head(major, Number(n));
    const b = new Uint8Array(9);
    b[0] = m | 27;
    new DataView(b.buffer).setBigUint64(1, n);
    return b;
  }
  if (!Number.isSafeInteger(n) || n < 0) throw new CborError('integer out of range');
  if (n < 24) return Uint8Array.of(m | n);
  if (n < 0x100) return Uint8Array.of(m | 24, n);
  if (n < 0x10000) return Uint8Array.of(m | 25, n >> 8, n & 0xff);
  if (n < 0x100000000) {
    const b = new Uint8Array(5);
    b[0] = m | 26;
    new DataView(b.buffer).setUint32(1, n);
    return b;
  }
  const b = new Uint8Array(9);
  b[0] = m | 27;
  new DataView(b.buffer).setBigUint64(1, BigInt(n));
  return b;
}

function write(out, v) {
  if (v === null || v === undefined) {
    out.push(Uint8Array.of(0xf6));
  } else if (v === true || v === false) {
    out.push(Uint8Array.of(v ? 0xf5 : 0xf4));
  } else if (typeof v === 'number' || typeof v === 'bigint') {
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new CborError('only integers can be encoded');
    if (v >= 0) out.push(head(0, v));
    else out.push(typeof v === 'bigint' ? head(1, -1n - v) : head(1, -1 - v));
  } else if (v instanceof Uint8Array) {
    out.push(head(2, v.length), v);
  } else if (typeof v === 'string') {
    const t = new TextEncoder().encode(v);
    out.push(head(3, t.length), t);
  } else if (Array.isArray(v)) {
    out.push(head(4, v.length));
    for (const x of v) write(out, x);
  } else if (v instanceof Map) {
    const entries = [...v.entries()].map(([k, x]) => [encode(k), x]);
    entries.sort((a, b) => compareBytes(a[0], b[0]));
    out.push(head(5, entries.length));
    for (const [k, x] of entries) {
      out.push(k);
      write(out, x);
    }
  } else if (v instanceof Tagged) {
    out.push(head(6, v.tag));
    write(out, v.value);
  } else {
    throw new CborError(`cannot encode ${typeof v}`);
  }
}

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}
