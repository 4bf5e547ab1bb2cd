'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { formatNumber, ordinal, formatBytes } = require('..');
const { roundTo } = require('../lib/round');

test('roundTo rounds half away from zero', () => {
  assert.strictEqual(roundTo(1.005, 2), 1.01);
  assert.strictEqual(roundTo(-2.5, 0), -3);
  assert.strictEqual(roundTo(1234.5678, 1), 1234.6);
});

test('formatNumber groups thousands', () => {
  assert.strictEqual(formatNumber(1234567), '1,234,567');
  assert.strictEqual(formatNumber(999), '999');
  assert.strictEqual(formatNumber(-1234.5, { decimals: 2 }), '-1,234.50');
});

test('formatNumber custom separators', () => {
  assert.strictEqual(formatNumber(1234567.891, { decimals: 2, separator: '.', point: ',' }), '1.234.567,89');
  assert.strictEqual(formatNumber(1234567, { separator: '\u202f' }), '1\u202f234\u202f567');
  assert.throws(() => formatNumber(1, { separator: '.', point: '.' }), RangeError);
});

test('formatNumber indian grouping', () => {
  assert.strictEqual(formatNumber(1234567, { style: 'indian' }), '12,34,567');
  assert.strictEqual(formatNumber(123456789, { style: 'indian' }), '12,34,56,789');
  assert.strictEqual(formatNumber(100, { style: 'indian' }), '100');
});

test('formatNumber edge cases', () => {
  assert.strictEqual(formatNumber(-0.001, { decimals: 2 }), '0.00');
  assert.strictEqual(formatNumber(2.5, { decimals: 3, keepZeros: false }), '2.5');
  assert.strictEqual(formatNumber(Infinity), '∞');
  assert.throws(() => formatNumber(NaN), TypeError);
});

test('ordinal suffixes', () => {
  const cases = { 1: '1st', 2: '2nd', 3: '3rd', 4: '4th', 11: '11th', 12: '12th', 13: '13th', 21: '21st', 102: '102nd', 111: '111th' };
  for (const [n, expected] of Object.entries(cases)) {
    assert.strictEqual(ordinal(Number(n)), expected);
  }
  assert.strictEqual(ordinal(-1), '-1st');
  assert.throws(() => ordinal(1.5), TypeError);
});

test('formatBytes binary and SI units', () => {
  assert.strictEqual(formatBytes(0), '0 B');
  assert.strictEqual(formatBytes(1023), '1023 B');
  assert.strictEqual(formatBytes(1536), '1.5 KiB');
  assert.strictEqual(formatBytes(5 * 1024 ** 3), '5 GiB');
  assert.strictEqual(formatBytes(1e9, { si: true }), '1 GB');
  assert.throws(() => formatBytes(-1), RangeError);
});
