import { test } from 'node:test';
import assert from 'node:assert/strict';
import { safeFileName } from '../app/ui/dom.js';

test('download names cannot hide their extension or leave the download folder', () => {
  // A right-to-left override would show "invoice\u202Efdp.exe" as "invoiceexe.pdf".
  assert.equal(safeFileName('invoice\u202Efdp.exe', 'x'), 'invoice_fdp.exe');
  for (const c of ['\u200e', '\u200f', '\u202a', '\u202b', '\u202c', '\u202d', '\u2066', '\u2067', '\u2068', '\u2069']) {
    assert.ok(!safeFileName(`a${c}b`, 'x').includes(c), `U+${c.codePointAt(0).toString(16)}`);
  }
  assert.equal(safeFileName('../../etc/passwd', 'x'), '__.._etc_passwd');
  assert.equal(safeFileName('\u0000\u0001', 'fallback'), '__');
  assert.equal(safeFileName('', 'fallback'), 'fallback');
  assert.equal(safeFileName('report.pdf', 'x'), 'report.pdf');
});
