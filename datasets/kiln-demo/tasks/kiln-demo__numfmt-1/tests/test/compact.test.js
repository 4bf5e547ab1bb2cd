'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { compact } = require('..');

test('compact leaves small numbers alone', () => {
  assert.strictEqual(compact(0), '0');
  assert.strictEqual(compact(999), '999');
  assert.strictEqual(compact(12.34), '12.3');
});

test('compact picks the unit by magnitude', () => {
  assert.strictEqual(compact(1234), '1.2K');
  assert.strictEqual(compact(5600000), '5.6M');
  assert.strictEqual(compact(7.25e9), '7.3B');
  assert.strictEqual(compact(3e12), '3T');
});

test('compact drops trailing zeros', () => {
  assert.strictEqual(compact(2000), '2K');
  assert.strictEqual(compact(2050, { decimals: 2 }), '2.05K');
});

test('compact carries rounding into the next unit', () => {
  assert.strictEqual(compact(999950), '1M');
  assert.strictEqual(compact(999999), '1M');
  assert.strictEqual(compact(999.96), '1K');
  assert.strictEqual(compact(999_949_999), '999.9M');
});

test('compact carry respects decimals', () => {
  assert.strictEqual(compact(999_500, { decimals: 0 }), '1M');
  assert.strictEqual(compact(999_499, { decimals: 0 }), '999K');
  assert.strictEqual(compact(999_995_000, { decimals: 2 }), '1B');
});

test('compact carry with long names and negatives', () => {
  assert.strictEqual(compact(-999_999_999, { long: true }), '-1 billion');
});

test('compact keeps the largest unit for huge values', () => {
  assert.strictEqual(compact(4.2e15), '4200T');
});

test('compact negative numbers', () => {
  assert.strictEqual(compact(-1500), '-1.5K');
  assert.strictEqual(compact(-0.01), '0');
});

test('compact long unit names', () => {
  assert.strictEqual(compact(1234, { long: true }), '1.2 thousand');
  assert.strictEqual(compact(2500000, { long: true }), '2.5 million');
});

test('compact rejects non-finite input', () => {
  assert.throws(() => compact(Infinity), TypeError);
  assert.throws(() => compact('12'), TypeError);
});
