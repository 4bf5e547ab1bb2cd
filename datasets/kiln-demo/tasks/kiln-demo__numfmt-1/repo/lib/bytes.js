'use strict';

const { fixed } = require('./round');

const IEC = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
const SI = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

/**
 * 1536 -> "1.5 KiB"; with { si: true } powers of 1000 and SI units.
 * Whole bytes are never shown with decimals.
 */
function formatBytes(bytes, { si = false, decimals = 1 } = {}) {
  if (!Number.isFinite(bytes) || bytes < 0) {
    throw new RangeError(`formatBytes() needs a non-negative number, got ${bytes}`);
  }
  const base = si ? 1000 : 1024;
  const units = si ? SI : IEC;
  let value = bytes;
  let i = 0;
  while (value >= base && i < units.length - 1) {
    value /= base;
    i++;
  }
  if (i === 0) return `${Math.round(value)} B`;
  return `${fixed(value, decimals)} ${units[i]}`;
}

module.exports = { formatBytes };
