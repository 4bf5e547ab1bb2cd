'use strict';

const NUMERALS = [
  [1000, 'M'],
  [900, 'CM'],
  [500, 'D'],
  [400, 'CD'],
  [100, 'C'],
  [90, 'XC'],
  [50, 'L'],
  [40, 'XL'],
  [10, 'X'],
  [9, 'IX'],
  [5, 'V'],
  [4, 'IV'],
  [1, 'I'],
];

// Canonical numerals only: at most three repeats, subtractive pairs where
// they belong. Anchored, so "IIII" or "VX" are rejected.
const CANONICAL = /^M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$/;

function toRoman(n) {
  if (!Number.isInteger(n) || n < 1 || n > 3999) {
    throw new RangeError(`Roman numerals cover 1..3999, got ${n}`);
  }
  let out = '';
  let rest = n;
  for (const [value, symbol] of NUMERALS) {
    while (rest >= value) {
      out += symbol;
      rest -= value;
    }
  }
  return out;
}

function fromRoman(text) {
  const upper = String(text).trim().toUpperCase();
  if (upper === '' || !CANONICAL.test(upper)) {
    throw new SyntaxError(`not a canonical Roman numeral: ${JSON.stringify(text)}`);
  }
  let total = 0;
  let i = 0;
  for (const [value, symbol] of NUMERALS) {
    while (upper.startsWith(symbol, i)) {
      total += value;
      i += symbol.length;
    }
  }
  return total;
}

module.exports = { fromRoman, toRoman };
