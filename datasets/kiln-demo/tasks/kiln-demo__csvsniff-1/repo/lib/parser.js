'use strict';

const { Dialect } = require('./dialect');

class ParseError extends Error {
  constructor(message, line) {
    super(`${message} (line ${line})`);
    this.name = 'ParseError';
    this.line = line;
  }
}

/**
 * Parses CSV text into an array of rows (arrays of strings), following
 * RFC 4180: fields may be quoted, quotes inside quoted fields are doubled,
 * and quoted fields may contain delimiters and line breaks. Both \n and
 * \r\n end a record. A final line break does not start an empty record.
 */
function parse(text, dialect = Dialect.excel, { strict = false } = {}) {
  const { delimiter, quote, skipInitialSpace } = dialect;
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false; // inside a quoted field
  let wasQuoted = false; // current field started with a quote
  let line = 1;
  let i = 0;

  const endField = () => {
    row.push(field);
    field = '';
    wasQuoted = false;
  };
  const endRow = () => {
    endField();
    rows.push(row);
    row = [];
  };

  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === quote) {
        if (text[i + 1] === quote) {
          field += quote;
          i += 2;
          continue;
        }
        quoted = false;
      } else {
        if (c === '\n') line++;
        field += c;
      }
      i++;
      continue;
    }
    if (c === quote && field === '' && !wasQuoted) {
      quoted = true;
      wasQuoted = true;
    } else if (c === delimiter) {
      endField();
      if (skipInitialSpace) {
        while (text[i + 1] === ' ') i++;
      }
    } else if (c === '\r' && text[i + 1] === '\n') {
      endRow();
      line++;
      i++;
    } else if (c === '\n') {
      endRow();
      line++;
    } else {
      if (strict && wasQuoted) {
        throw new ParseError(`unexpected ${JSON.stringify(c)} after closing quote`, line);
      }
      field += c;
    }
    i++;
  }
  if (quoted) {
    throw new ParseError('unterminated quoted field', line);
  }
  if (field !== '' || wasQuoted || row.length > 0) {
    endRow();
  }
  return rows;
}

/** Parses rows and turns every row after the header into an object. */
function parseRecords(text, dialect = Dialect.excel, options = {}) {
  const [header, ...rows] = parse(text, dialect, options);
  if (!header) return [];
  return rows.map((row) => {
    const record = {};
    header.forEach((name, index) => {
      record[name] = index < row.length ? row[index] : null;
    });
    return record;
  });
}

module.exports = { ParseError, parse, parseRecords };
