import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, encode, CborError, Tagged } from '../app/lib/cbor.js';

const hex = (s) => Uint8Array.from(s.match(/../g).map((h) => parseInt(h, 16)));

test('round trips RFC 8949 appendix A examples in the subset', () => {
  const cases = [
    ['00', 0], ['17', 23], ['1818', 24], ['1903e8', 1000], ['1a000f4240', 1000000],
    ['1b000000e8d4a51000', 1000000000000], ['20', -1], ['3863', -100], ['f6', null], ['f5', true],
    ['4401020304', hex('01020304')], ['6449455446', 'IETF'], ['83010203', [1, 2, 3]],
    ['1bffffffffffffffff', 18446744073709551615n],
  ];
  for (const [h, v] of cases) {
    assert.deepEqual(decode(hex(h)), v, h);
    assert.deepEqual(encode(v), hex(h), h);
  }
  const m = decode(hex('a201020304'));
  assert.equal(m.get(1), 2);
  assert.equal(m.get(3), 4);
  assert.deepEqual(encode(new Map([[3, 4], [1, 2]])), hex('a201020304'));
  const t = decode(hex('d283010203'));
  assert.ok(t instanceof Tagged);
  assert.equal(t.tag, 18);
});

test('refuses what the spec refuses', () => {
  const bad = ['1817', '190001', '00ff', '5f', '9f01ff', 'a20102 0103'.replace(' ', ''), '9b00000000ffffffff', '42 01'.replace(' ', ''), 'fa00000000'];
  for (const h of bad) assert.throws(() => decode(hex(h)), CborError, h);
  assert.deepEqual(decode(hex('9f01ff'), { allowIndefinite: true }), [1]);
  let deep = '81'.repeat(40) + '00';
  assert.throws(() => decode(hex(deep)), /deep/);
});

test('invalid UTF-8 is a CborError, and byte strings never share memory with a Buffer', () => {
  assert.throws(() => decode(Uint8Array.of(0x61, 0xff)), CborError);
  const input = Buffer.from([0x42, 1, 2]);
  const out = decode(input);
  input[1] = 9;
  assert.deepEqual([...out], [1, 2]);
});
