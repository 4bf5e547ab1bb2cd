'use strict';

const { fixed } = require('./round');

/**
 * Formats a number with digit grouping.
 *
 * options.decimals   digits after the decimal point (default 0)
 * options.separator  group separator (default ',')
 * options.point      decimal point (default '.')
 * options.style      'standard' (groups of 3) or 'indian' (3, then 2s:
 *                    12,34,567)
 * options.keepZeros  keep trailing zeros in the fraction (default true)
 */
function formatNumber(value, options = {}) {
  const { decimals = 0, separator = ',', point = '.', style = 'standard', keepZeros = true } = options;
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(`not a number: ${value}`);
  }
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '-∞';
  if (separator === point) throw new RangeError('separator and point must differ');

  const text = fixed(Math.abs(value), decimals, keepZeros);
  const [whole, fraction] = text.split('.');
  const grouped = group(whole, style).join(separator);
  const negative = value < 0 && /[1-9]/.test(text);
  return (negative ? '-' : '') + grouped + (fraction ? point + fraction : '');
}

function group(digits, style) {
  if (style !== 'standard' && style !== 'indian') {
    throw new RangeError(`unknown grouping style: ${style}`);
  }
  const groups = [];
  let end = digits.length;
  let size = 3;
  while (end > size) {
    groups.unshift(digits.slice(end - size, end));
    end -= size;
    if (style === 'indian') size = 2;
  }
  groups.unshift(digits.slice(0, end));
  return groups;
}

module.exports = { formatNumber, group };
