'use strict';

/** How a CSV file is written. */
class Dialect {
  constructor({ delimiter = ',', quote = '"', lineTerminator = '\r\n', skipInitialSpace = false } = {}) {
    if (typeof delimiter !== 'string' || delimiter.length !== 1) {
      throw new TypeError('delimiter must be a single character');
    }
    if (typeof quote !== 'string' || quote.length !== 1) {
      throw new TypeError('quote must be a single character');
    }
    if (delimiter === quote) {
      throw new TypeError('delimiter and quote must differ');
    }
    this.delimiter = delimiter;
    this.quote = quote;
    this.lineTerminator = lineTerminator;
    this.skipInitialSpace = skipInitialSpace;
  }
}

Dialect.excel = new Dialect();
Dialect.excelTab = new Dialect({ delimiter: '\t' });
Dialect.unix = new Dialect({ lineTerminator: '\n' });

module.exports = { Dialect };
