'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { stringify, parse, Dialect } = require('..');

test('writes rows with CRLF by default', () => {
  assert.strictEqual(stringify([['a', 'b'], [1, 2]]), 'a,b\r\n1,2\r\n');
});

test('quotes only where needed', () => {
  const text = stringify([['plain', 'with,comma', 'with "quote"', ' padded', 'multi\nline']], {
    dialect: Dialect.unix,
  });
  assert.strictEqual(text, 'plain,"with,comma","with ""quote"""," padded","multi\nline"\n');
});

test('quoteAll and null values', () => {
  assert.strictEqual(stringify([['a', null, undefined]], { quoteAll: true }), '"a","",""\r\n');
});

test('records with columns and header', () => {
  const text = stringify([{ b: 2, a: 1 }], { columns: ['a', 'b'], dialect: Dialect.unix });
  assert.strictEqual(text, 'a,b\n1,2\n');
});

test('write then parse round-trips', () => {
  const rows = [
    ['id', 'note'],
    ['1', 'he said "no", then left'],
    ['2', 'line one\r\nline two'],
  ];
  const dialect = new Dialect({ delimiter: ';' });
  assert.deepStrictEqual(parse(stringify(rows, { dialect }), dialect), rows);
});

test('empty input writes nothing', () => {
  assert.strictEqual(stringify([]), '');
});
