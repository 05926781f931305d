// STREAM (docs/SPEC.md §3.2): chunked AES-256-GCM in the construction of Hoang, Reyhanitabar, Rogaway and Vizár,
// as age uses it.
//
// Plaintext is cut into 65,536-byte chunks; every chunk but the last is full, and the last holds 0..65,536 bytes
// (empty only when it is the only chunk, so a plaintext has one encoding). Chunk i is sealed under the nonce
// I2OSP(i, 11) ‖ last with an empty AAD. A dropped, repeated or reordered chunk breaks a counter; a cut at a
// chunk boundary breaks the `last` flag; bytes after the final chunk are refused.
//
// Three layers, for bounded memory on files of any size:
// - StreamSealer / StreamOpener take exact chunks and say which is last;
// - ChunkSealer / ChunkOpener take pieces of any size, hold back at most one chunk (a full chunk cannot be sealed
//   or opened until the input shows whether more follows: if it ends there, that chunk is the last);
// - sealStream / openStream (async generators) and sealTransform / openTransform (TransformStreams) run a
//   whole source through them.
// An opener's output is authenticated chunk by chunk but the stream is complete only when `end()` succeeds: a
// caller must not treat what it has received as the whole document before then (truncation shows only there).

import { PodFormatError, subtle } from './bytes.js';

/** Plaintext bytes per chunk. */
export const CHUNK_SIZE = 65536;
/** AES-GCM tag length, added to every chunk. */
export const TAG_LEN = 16;
/** Ciphertext bytes of a full chunk. */
export const SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_LEN;
/** Key length. */
export const KEY_LEN = 32;
/** Pieces handed to the chunkers are cut to at most this, so that one push never yields more than two chunks. */
const PIECE = CHUNK_SIZE;

/**
 * Imports 32 key bytes as a non-extractable AES-256-GCM key for one stream.
 * @param {Uint8Array} raw
 * @returns {Promise<CryptoKey>}
 */
export async function importStreamKey(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== KEY_LEN) {
    throw new PodFormatError('invalid_argument', 'a stream key is 32 bytes');
  }
  return subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']);
}

async function asKey(key) {
  return key instanceof Uint8Array ? importStreamKey(key) : key;
}

/**
 * The nonce of chunk `counter`: I2OSP(counter, 11) ‖ last.
 * @param {number} counter
 * @param {boolean} last
 * @returns {Uint8Array}
 */
export function streamNonce(counter, last) {
  const n = new Uint8Array(12);
  // Bytes 0..2 stay zero: the top of the 11-byte counter, never reached by a safe integer.
  const view = new DataView(n.buffer);
  view.setUint32(3, Math.floor(counter / 0x100000000));
  view.setUint32(7, counter >>> 0);
  n[11] = last ? 1 : 0;
  return n;
}

/**
 * Length of the sealed form of `plaintextLength` bytes.
 * @param {number} plaintextLength
 * @returns {number}
 */
export function sealedLength(plaintextLength) {
  const chunks = plaintextLength === 0 ? 1 : Math.ceil(plaintextLength / CHUNK_SIZE);
  return plaintextLength + chunks * TAG_LEN;
}

/** Seals exact chunks, in order, saying which is the last. */
export class StreamSealer {
  /** @param {CryptoKey} key an AES-256-GCM key with usage `encrypt` ({@link importStreamKey}) */
  constructor(key) {
    this.key = key;
    this.counter = 0;
    this.done = false;
  }

  /**
   * Seals the next chunk: exactly 65,536 bytes unless `last`; the last at most that, and empty only if first.
   * @param {Uint8Array} chunk
   * @param {boolean} last
   * @returns {Promise<Uint8Array>} the sealed chunk (chunk ‖ tag)
   */
  async sealChunk(chunk, last) {
    if (this.done) throw new PodFormatError('truncated', 'the stream was already finished');
    const len = chunk.length;
    const bad = last ? len > CHUNK_SIZE || (len === 0 && this.counter > 0) : len !== CHUNK_SIZE;
    if (bad) throw new PodFormatError('chunk_length', `invalid chunk length ${len}`);
    if (this.counter >= Number.MAX_SAFE_INTEGER) throw new PodFormatError('stream_too_long', 'the stream is too long');
    const iv = streamNonce(this.counter, last);
    // Claim the counter before awaiting, so that two concurrent calls can never share a nonce.
    this.counter += 1;
    this.done = last;
    return new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv }, this.key, chunk));
  }
}

/** Opens exact sealed chunks, in order; the caller says which is the last (its input ends there). */
export class StreamOpener {
  /** @param {CryptoKey} key an AES-256-GCM key with usage `decrypt` */
  constructor(key) {
    this.key = key;
    this.counter = 0;
    this.done = false;
  }

  /**
   * Opens the next sealed chunk. A full chunk followed by the end of input must have been sealed as the last,
   * so a cut at a chunk boundary fails here.
   * @param {Uint8Array} sealed
   * @param {boolean} last
   * @returns {Promise<Uint8Array>} the plaintext chunk
   */
  async openChunk(sealed, last) {
    if (this.failed) throw new PodFormatError('decrypt', 'decryption failed');
    if (this.done) throw new PodFormatError('truncated', 'data after the last chunk');
    const len = sealed.length;
    const bad = last
      ? len < TAG_LEN || len > SEALED_CHUNK_SIZE || (len === TAG_LEN && this.counter > 0)
      : len !== SEALED_CHUNK_SIZE;
    if (bad) throw new PodFormatError('chunk_length', `invalid sealed chunk length ${len}`);
    if (this.counter >= Number.MAX_SAFE_INTEGER) throw new PodFormatError('stream_too_long', 'the stream is too long');
    const iv = streamNonce(this.counter, last);
    this.counter += 1;
    try {
      const out = new Uint8Array(await subtle.decrypt({ name: 'AES-GCM', iv }, this.key, sealed));
      this.done = last;
      return out;
    } catch (e) {
      // Nothing after a failed chunk may be opened.
      this.done = true;
      this.failed = true;
      throw new PodFormatError('decrypt', 'decryption failed', { cause: e });
    }
  }

  /** Succeeds only once the last chunk has been opened. */
  finish() {
    if (!this.done || this.failed) throw new PodFormatError('truncated', 'the stream ends before its last chunk');
  }
}

/** A fixed buffer that hands back a full block only once it knows more input follows. */
class HoldBack {
  constructor(size) {
    this.buf = new Uint8Array(size);
    this.fill = 0;
    this.busy = false;
  }

  // Runs `fn(fullBlock)` for each block that more input follows; appends the rest.
  async push(piece, fn) {
    if (!(piece instanceof Uint8Array)) throw new PodFormatError('invalid_argument', 'pieces must be Uint8Arrays');
    if (this.busy) throw new PodFormatError('invalid_argument', 'await each push before the next');
    this.busy = true;
    try {
      const out = [];
      let off = 0;
      while (off < piece.length) {
        if (this.fill === this.buf.length) {
          // WebCrypto copies its input when called, so the buffer can be refilled as soon as this returns.
          out.push(await fn(this.buf, false));
          this.fill = 0;
        }
        const n = Math.min(this.buf.length - this.fill, piece.length - off);
        this.buf.set(piece.subarray(off, off + n), this.fill);
        this.fill += n;
        off += n;
      }
      return out;
    } finally {
      this.busy = false;
    }
  }

  async end(fn) {
    if (this.busy) throw new PodFormatError('invalid_argument', 'await each push before the end');
    const out = await fn(this.buf.subarray(0, this.fill), true);
    this.buf.fill(0);
    this.fill = 0;
    return out;
  }
}

/** Seals a stream from pieces of any size, holding back at most one chunk. */
export class ChunkSealer {
  /** @param {CryptoKey} key */
  constructor(key) {
    this.sealer = new StreamSealer(key);
    this.hold = new HoldBack(CHUNK_SIZE);
    /** Plaintext bytes taken so far. */
    this.bytesIn = 0;
  }

  /**
   * Takes the next piece of plaintext; returns the sealed chunks now complete (possibly none).
   * @param {Uint8Array} piece
   * @returns {Promise<Uint8Array[]>}
   */
  async push(piece) {
    const out = await this.hold.push(piece, (c, last) => this.sealer.sealChunk(c, last));
    this.bytesIn += piece.length;
    return out;
  }

  /**
   * Ends the input; returns the final sealed chunk.
   * @returns {Promise<Uint8Array>}
   */
  async end() {
    return this.hold.end((c, last) => this.sealer.sealChunk(c, last));
  }
}

/** Opens a stream from pieces of any size, holding back at most one sealed chunk. */
export class ChunkOpener {
  /** @param {CryptoKey} key */
  constructor(key) {
    this.opener = new StreamOpener(key);
    this.hold = new HoldBack(SEALED_CHUNK_SIZE);
    /** Sealed bytes taken so far. */
    this.bytesIn = 0;
  }

  /**
   * Takes the next piece of the sealed stream; returns the plaintext chunks authenticated so far. They are not
   * the whole plaintext until {@link ChunkOpener#end} succeeds.
   * @param {Uint8Array} piece
   * @returns {Promise<Uint8Array[]>}
   */
  async push(piece) {
    const out = await this.hold.push(piece, (c, last) => this.opener.openChunk(c, last));
    this.bytesIn += piece.length;
    return out;
  }

  /**
   * Ends the input: opens the held-back chunk as the last and checks the stream is complete.
   * @returns {Promise<Uint8Array>} the final plaintext chunk
   */
  async end() {
    if (this.hold.fill === 0 && this.opener.counter === 0) {
      throw new PodFormatError('truncated', 'the stream is empty');
    }
    const out = await this.hold.end((c, last) => this.opener.openChunk(c, last));
    this.opener.finish();
    return out;
  }
}

/**
 * Iterates a source as Uint8Array pieces of at most 64 KiB, without copying where it can: a Uint8Array or
 * ArrayBuffer, a Blob or File (read a slice at a time), a ReadableStream, or any (async) iterable of
 * Uint8Array / ArrayBuffer.
 * @param {Uint8Array | ArrayBuffer | Blob | ReadableStream | AsyncIterable<Uint8Array> | Iterable<Uint8Array>} source
 * @returns {AsyncGenerator<Uint8Array>}
 */
export async function* pieces(source) {
  const cut = function* (bytes) {
    for (let i = 0; i < bytes.length; i += PIECE) yield bytes.subarray(i, Math.min(bytes.length, i + PIECE));
  };
  const asBytes = (p) => {
    if (p instanceof Uint8Array) return p;
    if (p instanceof ArrayBuffer) return new Uint8Array(p);
    if (ArrayBuffer.isView(p)) return new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
    throw new PodFormatError('invalid_argument', 'a source must yield Uint8Arrays');
  };
  if (source instanceof Uint8Array || source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    yield* cut(asBytes(source));
  } else if (typeof Blob !== 'undefined' && source instanceof Blob) {
    // Reading slices works in every browser, where ReadableStream async iteration does not yet.
    for (let i = 0; i < source.size; i += 16 * PIECE) {
      yield* cut(new Uint8Array(await source.slice(i, Math.min(source.size, i + 16 * PIECE)).arrayBuffer()));
    }
  } else if (source && typeof source.getReader === 'function') {
    const reader = source.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        yield* cut(asBytes(value));
      }
    } finally {
      reader.releaseLock();
    }
  } else if (source && (typeof source[Symbol.asyncIterator] === 'function' || typeof source[Symbol.iterator] === 'function')) {
    for await (const p of source) yield* cut(asBytes(p));
  } else {
    throw new PodFormatError('invalid_argument', 'unsupported source');
  }
}

/**
 * Seals a source, yielding sealed chunks as they are ready (at most one chunk is held back).
 * @param {CryptoKey | Uint8Array} key
 * @param {Parameters<typeof pieces>[0]} source
 * @param {(plaintextBytesDone: number) => void} [onProgress]
 * @returns {AsyncGenerator<Uint8Array>}
 */
export async function* sealStream(key, source, onProgress) {
  const s = new ChunkSealer(await asKey(key));
  for await (const p of pieces(source)) {
    yield* await s.push(p);
    onProgress?.(s.bytesIn);
  }
  yield await s.end();
  onProgress?.(s.bytesIn);
}

/**
 * Opens a sealed source, yielding plaintext chunks as they authenticate. The generator throws at the end if
 * the stream is truncated: consume it to the end before treating the output as complete.
 * @param {CryptoKey | Uint8Array} key
 * @param {Parameters<typeof pieces>[0]} source
 * @param {(sealedBytesDone: number) => void} [onProgress]
 * @returns {AsyncGenerator<Uint8Array>}
 */
export async function* openStream(key, source, onProgress) {
  const o = new ChunkOpener(await asKey(key));
  for await (const p of pieces(source)) {
    yield* await o.push(p);
    onProgress?.(o.bytesIn);
  }
  yield await o.end();
  onProgress?.(o.bytesIn);
}

function transform(chunker) {
  return new TransformStream({
    async transform(piece, controller) {
      for await (const p of pieces(piece)) for (const c of await chunker.push(p)) controller.enqueue(c);
    },
    async flush(controller) {
      controller.enqueue(await chunker.end());
    },
  });
}

/**
 * A TransformStream sealing Uint8Array pieces into sealed chunks (for `readable.pipeThrough`).
 * @param {CryptoKey} key
 * @returns {TransformStream<Uint8Array, Uint8Array>}
 */
export function sealTransform(key) {
  return transform(new ChunkSealer(key));
}

/**
 * A TransformStream opening a sealed stream; it errors (and the pipe fails) on any tampering or truncation.
 * @param {CryptoKey} key
 * @returns {TransformStream<Uint8Array, Uint8Array>}
 */
export function openTransform(key) {
  return transform(new ChunkOpener(key));
}

/**
 * Seals a whole plaintext held in memory.
 * @param {CryptoKey | Uint8Array} key
 * @param {Uint8Array} plaintext
 * @returns {Promise<Uint8Array>}
 */
export async function sealAll(key, plaintext) {
  return collect(sealStream(key, plaintext), sealedLength(plaintext.length));
}

/**
 * Opens a whole sealed stream held in memory.
 * @param {CryptoKey | Uint8Array} key
 * @param {Uint8Array} sealed
 * @returns {Promise<Uint8Array>}
 */
export async function openAll(key, sealed) {
  return collect(openStream(key, sealed), sealed.length);
}

/**
 * Concatenates what an async iterable of Uint8Array yields.
 * @param {AsyncIterable<Uint8Array>} iterable
 * @param {number} [sizeHint] an upper bound, to allocate once
 * @returns {Promise<Uint8Array>}
 */
export async function collect(iterable, sizeHint = 0) {
  let out = new Uint8Array(sizeHint);
  let n = 0;
  for await (const p of iterable) {
    if (n + p.length > out.length) {
      const bigger = new Uint8Array(Math.max(2 * out.length, n + p.length));
      bigger.set(out.subarray(0, n));
      out = bigger;
    }
    out.set(p, n);
    n += p.length;
  }
  return n === out.length ? out : out.slice(0, n);
}
