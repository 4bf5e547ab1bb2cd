'use strict';

const { fixed } = require('./round');

const SHORT = ['', 'K', 'M', 'B', 'T'];
const LONG = ['', ' thousand', ' million', ' billion', ' trillion'];

/**
 * Short human form of a number: 1234 -> "1.2K", 5600000 -> "5.6M".
 *
 * options.decimals  digits after the point (default 1); trailing zeros
 *                   are dropped, so 2000 is "2K"
 * options.long      "1.2 thousand" instead of "1.2K"
 */
function compact(value, options = {}) {
  const { decimals = 1, long = false } = options;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new TypeError(`compact() needs a finite number, got ${value}`);
  }
  const units = long ? LONG : SHORT;
  const abs = Math.abs(value);
  let tier = abs < 1000 ? 0 : Math.floor(Math.log10(abs) / 3);
  tier = Math.min(tier, units.length - 1);
  let text = fixed(abs / 1000 ** tier, decimals);
  // Rounding can carry into the next unit: 999950 is "1M", not "1000K".
  if (Number(text) >= 1000 && tier < units.length - 1) {
    tier += 1;
    text = fixed(abs / 1000 ** tier, decimals);
  }
  const sign = value < 0 && text !== '0' ? '-' : '';
  return sign + text + units[tier];
}

module.exports = { compact };
