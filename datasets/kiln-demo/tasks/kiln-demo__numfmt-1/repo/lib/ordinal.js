'use strict';

/** 1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd", -1 -> "-1st". */
function ordinal(n) {
  if (!Number.isInteger(n)) throw new TypeError(`ordinal() needs an integer, got ${n}`);
  const abs = Math.abs(n);
  const lastTwo = abs % 100;
  let suffix = 'th';
  if (lastTwo < 11 || lastTwo > 13) {
    suffix = { 1: 'st', 2: 'nd', 3: 'rd' }[abs % 10] || 'th';
  }
  return `${n}${suffix}`;
}

module.exports = { ordinal };
