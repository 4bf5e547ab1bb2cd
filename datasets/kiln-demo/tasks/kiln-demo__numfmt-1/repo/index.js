'use strict';

const { formatNumber } = require('./lib/grouping');
const { compact } = require('./lib/compact');
const { ordinal } = require('./lib/ordinal');
const { formatBytes } = require('./lib/bytes');
const { toRoman, fromRoman } = require('./lib/roman');

module.exports = { compact, formatBytes, formatNumber, fromRoman, ordinal, toRoman };
