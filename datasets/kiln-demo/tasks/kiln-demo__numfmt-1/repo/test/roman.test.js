'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { toRoman, fromRoman } = require('..');

test('toRoman known values', () => {
  assert.strictEqual(toRoman(1), 'I');
  assert.strictEqual(toRoman(4), 'IV');
  assert.strictEqual(toRoman(1994), 'MCMXCIV');
  assert.strictEqual(toRoman(3999), 'MMMCMXCIX');
});

test('toRoman range checks', () => {
  for (const bad of [0, 4000, 1.5, -3]) {
    assert.throws(() => toRoman(bad), RangeError);
  }
});

test('fromRoman accepts lower case and spaces', () => {
  assert.strictEqual(fromRoman(' mcmxciv '), 1994);
  assert.strictEqual(fromRoman('XLII'), 42);
});

test('fromRoman rejects non-canonical numerals', () => {
  for (const bad of ['IIII', 'VX', 'IC', 'MMMM', '', 'ABC']) {
    assert.throws(() => fromRoman(bad), SyntaxError);
  }
});

test('roman numerals round-trip for 1 to 3999', () => {
  for (let n = 1; n <= 3999; n++) {
    assert.strictEqual(fromRoman(toRoman(n)), n);
  }
});
