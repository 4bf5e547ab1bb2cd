'use strict';

/**
 * Rounds half away from zero to `decimals` places. Going through the
 * exponent form avoids most binary artefacts: 1.005 rounds to 1.01.
 */
function roundTo(value, decimals) {
  if (!Number.isFinite(value)) return value;
  const sign = value < 0 ? -1 : 1;
  const shifted = Number(`${Math.abs(value)}e${decimals}`);
  return sign * Number(`${Math.round(shifted)}e-${decimals}`);
}

/** Fixed-point text without trailing zeros unless `keepZeros`. */
function fixed(value, decimals, keepZeros = false) {
  const text = roundTo(value, decimals).toFixed(decimals);
  if (keepZeros || !text.includes('.')) return text;
  return text.replace(/\.?0+$/, '');
}

module.exports = { fixed, roundTo };
