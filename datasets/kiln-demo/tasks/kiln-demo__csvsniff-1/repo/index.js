'use strict';

const { parse, parseRecords } = require('./lib/parser');
const { sniff, hasHeader, SniffError } = require('./lib/sniffer');
const { stringify } = require('./lib/writer');
const { Dialect } = require('./lib/dialect');

/**
 * Sniffs the dialect from the start of `text`, then parses all of it.
 * Returns { dialect, header, rows } where header is null when the first
 * row does not look like one.
 */
function read(text, options = {}) {
  const dialect = sniff(text.slice(0, options.sampleSize || 8192), options);
  const rows = parse(text, dialect);
  const header = hasHeader(rows.slice(0, 20)) ? rows.shift() : null;
  return { dialect, header, rows };
}

module.exports = { Dialect, SniffError, hasHeader, parse, parseRecords, read, sniff, stringify };
