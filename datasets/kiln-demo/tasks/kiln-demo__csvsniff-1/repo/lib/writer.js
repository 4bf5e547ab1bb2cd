'use strict';

const { Dialect } = require('./dialect');

function needsQuotes(value, dialect) {
  return (
    value.includes(dialect.delimiter) ||
    value.includes(dialect.quote) ||
    value.includes('\n') ||
    value.includes('\r') ||
    value.startsWith(' ') ||
    value.endsWith(' ')
  );
}

function formatField(value, dialect, quoteAll) {
  let text;
  if (value === null || value === undefined) text = '';
  else if (value instanceof Date) text = value.toISOString();
  else text = String(value);
  if (quoteAll || needsQuotes(text, dialect)) {
    return dialect.quote + text.split(dialect.quote).join(dialect.quote + dialect.quote) + dialect.quote;
  }
  return text;
}

/**
 * Writes rows (arrays) or records (objects, with `columns` giving the
 * order) as CSV text, quoting only where needed unless `quoteAll`.
 */
function stringify(rows, { dialect = Dialect.excel, columns = null, header = true, quoteAll = false } = {}) {
  const lines = [];
  let data = rows;
  if (columns) {
    if (header) lines.push(columns.map((c) => formatField(c, dialect, quoteAll)).join(dialect.delimiter));
    data = rows.map((record) => columns.map((c) => record[c]));
  }
  for (const row of data) {
    lines.push(row.map((v) => formatField(v, dialect, quoteAll)).join(dialect.delimiter));
  }
  return lines.length ? lines.join(dialect.lineTerminator) + dialect.lineTerminator : '';
}

module.exports = { stringify };
