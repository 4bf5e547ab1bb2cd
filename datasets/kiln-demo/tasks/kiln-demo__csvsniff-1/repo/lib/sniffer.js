'use strict';

const { Dialect } = require('./dialect');

/** Candidate delimiters, most preferred first: ties go to the earlier one. */
const CANDIDATES = [',', '\t', ';', '|', ':'];
const THRESHOLDS = [1, 0.9, 0.8];

class SniffError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SniffError';
  }
}

function sampleLines(sample) {
  const lines = sample.split(/\r?\n/);
  // A sample cut from a larger file usually ends mid-record.
  if (lines.length > 2 && !/\r?\n$/.test(sample)) lines.pop();
  return lines.filter((line) => line.trim() !== '');
}

function guessQuote(sample) {
  // A quote character opens a field right after the start of a line or a
  // delimiter-like character; count those openings for each candidate.
  const opening = (q) => (sample.match(new RegExp(`(^|[,\\t;|:])\\s*${q}`, 'gm')) || []).length;
  return opening("'") > opening('"') ? "'" : '"';
}

function countDelimiter(line, ch) {
  let n = 0;
  for (const c of line) {
    if (c === ch) n++;
  }
  return n;
}

function modalCount(counts) {
  const freq = new Map();
  for (const n of counts) freq.set(n, (freq.get(n) || 0) + 1);
  let mode = 0;
  let best = -1;
  for (const [n, f] of freq) {
    if (f > best || (f === best && n > mode)) {
      mode = n;
      best = f;
    }
  }
  return mode;
}

/**
 * Guesses the Dialect of a CSV sample: the delimiter that occurs the same
 * (non-zero) number of times on (nearly) every line, the quote character,
 * the line terminator and whether delimiters are followed by a space.
 */
function sniff(sample, { delimiters = CANDIDATES } = {}) {
  const lines = sampleLines(sample);
  if (lines.length === 0) throw new SniffError('cannot sniff an empty sample');
  const quote = guessQuote(sample);

  for (const threshold of THRESHOLDS) {
    const consistent = [];
    for (const ch of delimiters) {
      const counts = lines.map((line) => countDelimiter(line, ch));
      const mode = modalCount(counts);
      if (mode === 0) continue;
      const agreement = counts.filter((n) => n === mode).length / counts.length;
      if (agreement >= threshold) consistent.push(ch);
    }
    if (consistent.length > 0) {
      const delimiter = consistent[0];
      const afterDelimiter = sample.split(delimiter).slice(1);
      const spaced = afterDelimiter.filter((part) => part.startsWith(' ')).length;
      return new Dialect({
        delimiter,
        quote,
        lineTerminator: sample.includes('\r\n') ? '\r\n' : '\n',
        skipInitialSpace: afterDelimiter.length > 0 && spaced / afterDelimiter.length > 0.5,
      });
    }
  }
  if (lines.length === 1 || delimiters.every((ch) => !sample.includes(ch))) {
    throw new SniffError('no delimiter found: is this a single-column file?');
  }
  throw new SniffError('could not determine the delimiter');
}

function cellType(value) {
  if (value.trim() !== '' && !Number.isNaN(Number(value))) return 'number';
  return 'string';
}

/**
 * Guesses whether the first of `rows` is a header: a column whose body is
 * all numbers under a non-numeric first cell votes yes, as does a column of
 * fixed-length values under a first cell of another length.
 */
function hasHeader(rows) {
  if (rows.length < 2) return false;
  const [first, ...body] = rows;
  let votes = 0;
  first.forEach((headerCell, col) => {
    const values = body.map((row) => row[col]).filter((v) => v !== undefined);
    if (values.length === 0) return;
    const types = new Set(values.map(cellType));
    if (types.size === 1 && types.has('number')) {
      votes += cellType(headerCell) === 'number' ? -1 : 1;
      return;
    }
    const lengths = new Set(values.map((v) => v.length));
    if (lengths.size === 1) {
      votes += lengths.has(headerCell.length) ? -1 : 1;
    }
  });
  return votes > 0;
}

module.exports = { CANDIDATES, SniffError, hasHeader, sniff };
