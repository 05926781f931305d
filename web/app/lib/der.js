// A small, bounded DER reader and the X.509 subset that AWS Nitro attestation documents use.
//
// Everything here reads from the caller's bytes through `subarray` views: no length taken from the input is used
// before it has been checked against the bytes that actually remain, and nothing is copied or allocated in
// proportion to a declared length. Only DER is accepted (definite, minimal lengths; low tag numbers; minimal
// integers; booleans 0x00/0xff), because every certificate is signed over its exact bytes and a lenient reader
// only adds ways for two parsers to disagree about what was signed.
//
// The X.509 part mirrors what the Rust verifier (attestation-verifier/src/chain.rs, on the `x509-cert` crate)
// accepts: a v3 certificate, its tbsCertificate bytes as they appear in the input, names compared as bytes,
// UTCTime and GeneralizedTime validity, an EC SubjectPublicKeyInfo, and the extensions list with
// basicConstraints and keyUsage decoded. Policy (which algorithms, which constraints) lives in attest.js.

/** A DER or X.509 structure that is malformed; `message` says what is wrong without echoing input bytes. */
export class DerError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DerError';
  }
}

/** Universal tags this module reads (single-byte identifier octets, constructed bit included). */
export const TAG = Object.freeze({
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
});

/** Object identifiers used by the Nitro chain, in dotted form. */
export const OID = Object.freeze({
  EC_PUBLIC_KEY: '1.2.840.10045.2.1',
  SECP384R1: '1.3.132.0.34',
  PRIME256V1: '1.2.840.10045.3.1.7',
  ECDSA_WITH_SHA256: '1.2.840.10045.4.3.2',
  ECDSA_WITH_SHA384: '1.2.840.10045.4.3.3',
  BASIC_CONSTRAINTS: '2.5.29.19',
  KEY_USAGE: '2.5.29.15',
});

// Lengths of more than four octets would describe objects of 4 GiB; the Rust reader refuses them as well.
const MAX_LENGTH_OCTETS = 4;

/**
 * One TLV read from the input.
 * @typedef {object} Tlv
 * @property {number} tag        the identifier octet
 * @property {Uint8Array} value  the contents (a view into the input)
 * @property {Uint8Array} tlv    the whole encoding, header included (a view into the input)
 */

/**
 * Reads consecutive DER TLVs from `bytes[start, end)`.
 * Every read checks the declared length against the bytes that remain before it makes a view.
 */
export class DerReader {
  /**
   * @param {Uint8Array} bytes
   * @param {number} [start]
   * @param {number} [end]
   */
  constructor(bytes, start = 0, end = bytes.length) {
    if (!(bytes instanceof Uint8Array)) throw new DerError('input must be a Uint8Array');
    if (!(start >= 0 && start <= end && end <= bytes.length)) throw new DerError('reader bounds outside the input');
    this.b = bytes;
    this.pos = start;
    this.end = end;
  }

  /** A reader over the contents of `tlv` (which must be a view returned by a read). */
  static of(tlv) {
    return new DerReader(tlv.value);
  }

  /** True when every byte has been read. */
  get done() {
    return this.pos === this.end;
  }

  /** The identifier octet of the next TLV, or -1 at the end. */
  peekTag() {
    return this.pos < this.end ? this.b[this.pos] : -1;
  }

  /**
   * Reads one TLV; with `expectedTag`, refuses any other tag.
   * @param {number} [expectedTag]
   * @param {string} [what]  what the caller expects, for the error message
   * @returns {Tlv}
   */
  read(expectedTag, what) {
    const start = this.pos;
    if (this.end - start < 2) throw new DerError(`${what ?? 'a DER item'} is truncated`);
    const tag = this.b[start];
    // High tag numbers (0x1f) need multi-byte identifiers; nothing in X.509 uses them.
    if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte DER tags are not supported');
    if (expectedTag !== undefined && tag !== expectedTag) {
      throw new DerError(`expected ${what ?? `tag 0x${expectedTag.toString(16)}`}, found tag 0x${tag.toString(16)}`);
    }
    let len = this.b[start + 1];
    let header = 2;
    if (len === 0x80) throw new DerError('indefinite lengths are not DER');
    if (len > 0x80) {
      const n = len & 0x7f;
      if (n > MAX_LENGTH_OCTETS) throw new DerError('DER length is too large');
      if (this.end - start - 2 < n) throw new DerError('DER length is truncated');
      if (this.b[start + 2] === 0) throw new DerError('DER length has a leading zero octet');
      len = 0;
      // Multiplication, not shifts: 32-bit shifts would turn a 4-octet length negative.
      for (let i = 0; i < n; i++) len = len * 256 + this.b[start + 2 + i];
      if (len < 0x80) throw new DerError('DER length should use the short form');
      header = 2 + n;
    }
    const valueStart = start + header;
    if (len > this.end - valueStart) throw new DerError(`${what ?? 'a DER item'} is longer than its container`);
    const valueEnd = valueStart + len;
    this.pos = valueEnd;
    return {
      tag,
      value: this.b.subarray(valueStart, valueEnd),
      tlv: this.b.subarray(start, valueEnd),
    };
  }

  /** Reads the next TLV only if it has tag `tag`; returns null otherwise. */
  readOptional(tag, what) {
    return this.peekTag() === tag ? this.read(tag, what) : null;
  }

  /** Refuses bytes left over after the last expected item. */
  finish(what = 'a DER structure') {
    if (!this.done) throw new DerError(`${what} has unexpected trailing data`);
  }
}

/**
 * Reads exactly one TLV that fills `bytes`.
 * @param {Uint8Array} bytes
 * @param {number} [expectedTag]
 * @param {string} [what]
 * @returns {Tlv}
 */
export function readOne(bytes, expectedTag, what) {
  const r = new DerReader(bytes);
  const tlv = r.read(expectedTag, what);
  r.finish(what);
  return tlv;
}

// ---- Primitive types -------------------------------------------------------------------------------------------

/** Checks that an INTEGER's contents are a minimal two's-complement encoding; returns them. */
export function integerBytes(tlv, what = 'INTEGER') {
  const v = tlv.value;
  if (tlv.tag !== TAG.INTEGER) throw new DerError(`${what} is not an INTEGER`);
  if (v.length === 0) throw new DerError(`${what} is empty`);
  if (v.length > 1 && ((v[0] === 0x00 && v[1] < 0x80) || (v[0] === 0xff && v[1] >= 0x80))) {
    throw new DerError(`${what} is not minimally encoded`);
  }
  return v;
}

/** A small non-negative INTEGER (at most `max`) as a number. */
export function smallUint(tlv, max, what = 'INTEGER') {
  const v = integerBytes(tlv, what);
  if (v[0] >= 0x80) throw new DerError(`${what} is negative`);
  if (v.length > 4) throw new DerError(`${what} is out of range`);
  let n = 0;
  for (const b of v) n = n * 256 + b;
  if (n > max) throw new DerError(`${what} is out of range`);
  return n;
}

/** A BOOLEAN: DER allows only 0x00 and 0xff. */
export function boolean(tlv, what = 'BOOLEAN') {
  if (tlv.tag !== TAG.BOOLEAN) throw new DerError(`${what} is not a BOOLEAN`);
  if (tlv.value.length !== 1 || (tlv.value[0] !== 0x00 && tlv.value[0] !== 0xff)) {
    throw new DerError(`${what} is not a DER BOOLEAN`);
  }
  return tlv.value[0] === 0xff;
}

/**
 * A BIT STRING's contents: `{ unusedBits, bytes }`. As in the Rust `der` crate, the unused-bit count must be 0..7
 * and 0 for an empty string; the padding bits themselves are not inspected.
 */
export function bitString(tlv, what = 'BIT STRING') {
  const v = tlv.value;
  if (v.length === 0) throw new DerError(`${what} is empty`);
  const unusedBits = v[0];
  if (unusedBits > 7 || (unusedBits !== 0 && v.length === 1)) throw new DerError(`${what} has a bad unused-bit count`);
  return { unusedBits, bytes: v.subarray(1) };
}

/**
 * An OBJECT IDENTIFIER in dotted form; refuses non-minimal and truncated sub-identifiers. As the Rust side's
 * `const-oid` crate, it takes 3 to 39 content bytes and arcs of at most 32 bits.
 */
export function oid(tlv, what = 'OBJECT IDENTIFIER') {
  const v = tlv.value;
  if (tlv.tag !== TAG.OID) throw new DerError(`${what} is not an OBJECT IDENTIFIER`);
  if (v.length < 3 || v.length > 39) throw new DerError(`${what} has a bad length`);
  const arcs = [];
  let n = 0;
  let fresh = true;
  for (let i = 0; i < v.length; i++) {
    const b = v[i];
    if (fresh && b === 0x80) throw new DerError(`${what} is not minimally encoded`);
    n = n * 128 + (b & 0x7f);
    if (n > 0xffffffff) throw new DerError(`${what} has an arc that is too large`);
    fresh = (b & 0x80) === 0;
    if (fresh) {
      if (arcs.length === 0) {
        // The first sub-identifier packs the first two arcs: 40 * X + Y.
        if (n < 40) arcs.push(0, n);
        else if (n < 80) arcs.push(1, n - 40);
        else arcs.push(2, n - 80);
      } else {
        arcs.push(n);
      }
      n = 0;
    }
  }
  if (!fresh) throw new DerError(`${what} is truncated`);
  return arcs.join('.');
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function digits(v, from, count) {
  let n = 0;
  for (let i = from; i < from + count; i++) {
    const c = v[i];
    if (c < 0x30 || c > 0x39) throw new DerError('time has a non-digit');
    n = n * 10 + (c - 0x30);
  }
  return n;
}

/**
 * A UTCTime (`YYMMDDHHMMSSZ`, years 1950..2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, no fraction), as
 * milliseconds since the Unix epoch. These are the only forms RFC 5280 (and DER) allow in a certificate.
 */
export function time(tlv, what = 'time') {
  const v = tlv.value;
  let year;
  let at;
  if (tlv.tag === TAG.UTC_TIME) {
    if (v.length !== 13) throw new DerError(`${what} is not a DER UTCTime`);
    const yy = digits(v, 0, 2);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    at = 2;
  } else if (tlv.tag === TAG.GENERALIZED_TIME) {
    if (v.length !== 15) throw new DerError(`${what} is not a DER GeneralizedTime`);
    year = digits(v, 0, 4);
    at = 4;
  } else {
    throw new DerError(`${what} is neither UTCTime nor GeneralizedTime`);
  }
  if (v[v.length - 1] !== 0x5a) throw new DerError(`${what} is not in UTC (no trailing Z)`);
  const month = digits(v, at, 2);
  const day = digits(v, at + 2, 2);
  const hour = digits(v, at + 4, 2);
  const minute = digits(v, at + 6, 2);
  const second = digits(v, at + 8, 2);
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  if (month < 1 || month > 12) throw new DerError(`${what} has a bad month`);
  const monthDays = month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1];
  if (day < 1 || day > monthDays || hour > 23 || minute > 59 || second > 59) {
    throw new DerError(`${what} is not a valid date and time`);
  }
  // Date.UTC maps years 0..99 to 1900..1999; build the date with setUTCFullYear to keep any year exact.
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, 0);
  return d.getTime();
}

// ---- ECDSA signatures ------------------------------------------------------------------------------------------

/**
 * Converts a DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` to the raw `r ‖ s` form WebCrypto
 * verifies, each half left-padded to `size` bytes (48 for P-384). Refuses negative, zero, non-minimal or
 * over-long integers and trailing data.
 * @param {Uint8Array} sig
 * @param {number} [size]
 * @returns {Uint8Array}
 */
export function ecdsaDerToRaw(sig, size = 48) {
  const seq = readOne(sig, TAG.SEQUENCE, 'ECDSA signature');
  const r = new DerReader(seq.value);
  const out = new Uint8Array(2 * size);
  for (let k = 0; k < 2; k++) {
    let v = integerBytes(r.read(TAG.INTEGER, 'ECDSA signature integer'), 'ECDSA signature integer');
    if (v[0] >= 0x80) throw new DerError('ECDSA signature integer is negative');
    if (v[0] === 0x00 && v.length > 1) v = v.subarray(1);
    if (v.length > size) throw new DerError('ECDSA signature integer is too long for the curve');
    if (v.every((b) => b === 0)) throw new DerError('ECDSA signature integer is zero');
    out.set(v, k * size + size - v.length);
  }
  r.finish('ECDSA signature');
  return out;
}

// ---- X.509 -----------------------------------------------------------------------------------------------------

/**
 * An AlgorithmIdentifier: `{ oid, parameters: Tlv|null, tlv }`.
 * @param {Tlv} tlv
 */
export function algorithmIdentifier(tlv, what = 'AlgorithmIdentifier') {
  if (tlv.tag !== TAG.SEQUENCE) throw new DerError(`${what} is not a SEQUENCE`);
  const r = DerReader.of(tlv);
  const id = oid(r.read(TAG.OID, `${what} algorithm`), `${what} algorithm`);
  const parameters = r.done ? null : r.read(undefined, `${what} parameters`);
  r.finish(what);
  return { oid: id, parameters, tlv: tlv.tlv };
}

// Name ::= SEQUENCE OF RelativeDistinguishedName; RDN ::= SET SIZE (1..MAX) OF SEQUENCE { type OID, value ANY }.
// Only the structure is checked: names are compared as bytes, which DER makes equivalent to comparing values.
function checkName(tlv, what) {
  if (tlv.tag !== TAG.SEQUENCE) throw new DerError(`${what} is not a SEQUENCE`);
  const rdns = DerReader.of(tlv);
  while (!rdns.done) {
    const set = rdns.read(TAG.SET, `${what} RDN`);
    const atvs = DerReader.of(set);
    if (atvs.done) throw new DerError(`${what} has an empty RDN`);
    while (!atvs.done) {
      const atv = DerReader.of(atvs.read(TAG.SEQUENCE, `${what} attribute`));
      oid(atv.read(TAG.OID, `${what} attribute type`), `${what} attribute type`);
      atv.read(undefined, `${what} attribute value`);
      atv.finish(`${what} attribute`);
    }
  }
}

/**
 * A SubjectPublicKeyInfo: `{ tlv, algorithm: oid, curve: oid|null, publicKey: Uint8Array }`. `curve` is the
 * namedCurve parameter when the parameters are an OID.
 * @param {Tlv} tlv
 */
export function subjectPublicKeyInfo(tlv, what = 'subjectPublicKeyInfo') {
  if (tlv.tag !== TAG.SEQUENCE) throw new DerError(`${what} is not a SEQUENCE`);
  const r = DerReader.of(tlv);
  const alg = algorithmIdentifier(r.read(TAG.SEQUENCE, `${what} algorithm`), `${what} algorithm`);
  const bits = bitString(r.read(TAG.BIT_STRING, `${what} key`), `${what} key`);
  r.finish(what);
  const curve = alg.parameters && alg.parameters.tag === TAG.OID ? oid(alg.parameters, `${what} curve`) : null;
  return { tlv: tlv.tlv, algorithm: alg.oid, curve, unusedBits: bits.unusedBits, publicKey: bits.bytes };
}

/**
 * Parses the extensions of a certificate: `[{ oid, critical, value }]`, `value` being the extnValue contents.
 * `critical` may be absent (DEFAULT FALSE); like the Rust verifier, an explicit FALSE is tolerated.
 */
function extensionList(tlv) {
  const outer = DerReader.of(tlv);
  const seq = outer.read(TAG.SEQUENCE, 'extensions');
  outer.finish('extensions');
  const r = DerReader.of(seq);
  const out = [];
  while (!r.done) {
    const e = DerReader.of(r.read(TAG.SEQUENCE, 'extension'));
    const id = oid(e.read(TAG.OID, 'extension id'), 'extension id');
    const crit = e.readOptional(TAG.BOOLEAN, 'extension criticality');
    const value = e.read(TAG.OCTET_STRING, 'extension value').value;
    e.finish('extension');
    out.push({ oid: id, critical: crit ? boolean(crit, 'extension criticality') : false, value });
  }
  return out;
}

/**
 * Decodes a basicConstraints extension value: `{ ca, pathLen: number|null }`. pathLenConstraint is limited to
 * 0..255, as in the `x509-cert` crate.
 * @param {Uint8Array} value
 */
export function basicConstraints(value) {
  const seq = readOne(value, TAG.SEQUENCE, 'basicConstraints');
  const r = DerReader.of(seq);
  const caTlv = r.readOptional(TAG.BOOLEAN, 'basicConstraints cA');
  const ca = caTlv ? boolean(caTlv, 'basicConstraints cA') : false;
  const lenTlv = r.readOptional(TAG.INTEGER, 'pathLenConstraint');
  const pathLen = lenTlv ? smallUint(lenTlv, 255, 'pathLenConstraint') : null;
  r.finish('basicConstraints');
  return { ca, pathLen };
}

/**
 * Decodes a keyUsage extension value into named flags. At most 16 bits, as in the `x509-cert` crate.
 * @param {Uint8Array} value
 */
export function keyUsage(value) {
  const { unusedBits, bytes } = bitString(readOne(value, TAG.BIT_STRING, 'keyUsage'), 'keyUsage');
  if (bytes.length * 8 - unusedBits > 16) throw new DerError('keyUsage has too many bits');
  // Bit 0 is the most significant bit of the first byte (X.680 named bit lists).
  const bit = (i) => i < bytes.length * 8 - unusedBits && (bytes[i >> 3] & (0x80 >> (i & 7))) !== 0;
  return {
    digitalSignature: bit(0),
    nonRepudiation: bit(1),
    keyEncipherment: bit(2),
    dataEncipherment: bit(3),
    keyAgreement: bit(4),
    keyCertSign: bit(5),
    cRLSign: bit(6),
  };
}

/**
 * A parsed X.509 v3 certificate. Byte fields are views into the input.
 * @typedef {object} Certificate
 * @property {Uint8Array} tbs                 tbsCertificate exactly as encoded (what the issuer signed)
 * @property {Uint8Array} serial              serialNumber contents
 * @property {{oid: string, parameters: Tlv|null, tlv: Uint8Array}} tbsSignatureAlgorithm  the signature field
 *   inside tbsCertificate
 * @property {{oid: string, parameters: Tlv|null, tlv: Uint8Array}} signatureAlgorithm  the outer one
 * @property {Uint8Array} issuer              issuer Name, whole TLV
 * @property {Uint8Array} subject             subject Name, whole TLV
 * @property {number} notBefore               ms since the Unix epoch
 * @property {number} notAfter                ms since the Unix epoch
 * @property {{tlv: Uint8Array, algorithm: string, curve: string|null, unusedBits: number, publicKey: Uint8Array}} spki
 * @property {{oid: string, critical: boolean, value: Uint8Array}[]} extensions
 * @property {Uint8Array} signature           signatureValue contents (a DER ECDSA-Sig-Value for ECDSA)
 * @property {number} signatureUnusedBits
 */

/**
 * Parses a DER X.509 certificate. Only version 3 is accepted (the Nitro chain is all v3, and only v3 has the
 * extensions that say which certificates may sign others).
 * @param {Uint8Array} der
 * @returns {Certificate}
 */
export function parseCertificate(der) {
  const cert = readOne(der, TAG.SEQUENCE, 'Certificate');
  const c = DerReader.of(cert);
  const tbs = c.read(TAG.SEQUENCE, 'tbsCertificate');
  const signatureAlgorithm = algorithmIdentifier(c.read(TAG.SEQUENCE, 'signatureAlgorithm'), 'signatureAlgorithm');
  const sig = bitString(c.read(TAG.BIT_STRING, 'signatureValue'), 'signatureValue');
  c.finish('Certificate');

  const t = DerReader.of(tbs);
  // version [0] EXPLICIT INTEGER DEFAULT v1: absent means v1, which is refused.
  const versionTlv = t.readOptional(0xa0, 'version');
  if (!versionTlv) throw new DerError('not version 3 (no version field)');
  const versionReader = DerReader.of(versionTlv);
  const version = smallUint(versionReader.read(TAG.INTEGER, 'version'), 2, 'version');
  versionReader.finish('version');
  if (version !== 2) throw new DerError('not version 3');
  const serial = integerBytes(t.read(TAG.INTEGER, 'serialNumber'), 'serialNumber');
  // RFC 5280 allows 20 octets; the x509-cert crate reads up to 21 (a sign octet in front of 20).
  if (serial.length > 21) throw new DerError('serialNumber is longer than 20 octets');
  const tbsSignatureAlgorithm = algorithmIdentifier(t.read(TAG.SEQUENCE, 'signature'), 'signature');
  const issuer = t.read(TAG.SEQUENCE, 'issuer');
  checkName(issuer, 'issuer');
  const validity = DerReader.of(t.read(TAG.SEQUENCE, 'validity'));
  const notBefore = time(validity.read(undefined, 'notBefore'), 'notBefore');
  const notAfter = time(validity.read(undefined, 'notAfter'), 'notAfter');
  validity.finish('validity');
  const subject = t.read(TAG.SEQUENCE, 'subject');
  checkName(subject, 'subject');
  const spki = subjectPublicKeyInfo(t.read(TAG.SEQUENCE, 'subjectPublicKeyInfo'));
  // issuerUniqueID [1] and subjectUniqueID [2] are IMPLICIT BIT STRINGs; allowed, checked, ignored.
  const issuerUid = t.readOptional(0x81, 'issuerUniqueID');
  if (issuerUid) bitString(issuerUid, 'issuerUniqueID');
  const subjectUid = t.readOptional(0x82, 'subjectUniqueID');
  if (subjectUid) bitString(subjectUid, 'subjectUniqueID');
  const extTlv = t.readOptional(0xa3, 'extensions');
  const extensions = extTlv ? extensionList(extTlv) : [];
  t.finish('tbsCertificate');

  return {
    tbs: tbs.tlv,
    serial,
    tbsSignatureAlgorithm,
    signatureAlgorithm,
    issuer: issuer.tlv,
    subject: subject.tlv,
    notBefore,
    notAfter,
    spki,
    extensions,
    signature: sig.bytes,
    signatureUnusedBits: sig.unusedBits,
  };
}

// ---- PEM -------------------------------------------------------------------------------------------------------

/**
 * Decodes one PEM block (`-----BEGIN <label>-----` … `-----END <label>-----`) to DER. Text around the block is
 * ignored, as OpenSSL does; exactly one block must be present and its label must be `label`.
 * @param {string} pem
 * @param {string} [label]
 * @returns {Uint8Array}
 */
export function pemToDer(pem, label = 'CERTIFICATE') {
  if (typeof pem !== 'string') throw new DerError('PEM input must be a string');
  if (pem.length > 64 * 1024) throw new DerError('PEM input is larger than 64 KiB');
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
  const blocks = [...pem.matchAll(re)];
  if (blocks.length !== 1) throw new DerError(`expected one PEM block, found ${blocks.length}`);
  const [, begin, body, end] = blocks[0];
  if (begin !== end) throw new DerError('PEM BEGIN and END labels differ');
  if (begin !== label) throw new DerError(`the PEM label is ${begin}, not ${label}`);
  const b64 = body.replace(/[\r\n\t ]/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) throw new DerError('PEM body is not base64');
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
