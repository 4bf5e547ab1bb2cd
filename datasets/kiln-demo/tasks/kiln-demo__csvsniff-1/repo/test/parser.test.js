'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { parse, parseRecords, Dialect } = require('..');
const { ParseError } = require('../lib/parser');

test('parses simple rows', () => {
  assert.deepStrictEqual(parse('a,b,c\n1,2,3\n'), [
    ['a', 'b', 'c'],
    ['1', '2', '3'],
  ]);
});

test('accepts CRLF and a missing final newline', () => {
  assert.deepStrictEqual(parse('a,b\r\n1,2'), [
    ['a', 'b'],
    ['1', '2'],
  ]);
});

test('quoted fields keep delimiters, quotes and newlines', () => {
  const rows = parse('"a,b","say ""hi""","two\nlines"\n');
  assert.deepStrictEqual(rows, [['a,b', 'say "hi"', 'two\nlines']]);
});

test('empty fields and empty quoted fields', () => {
  assert.deepStrictEqual(parse(',"",x\n'), [['', '', 'x']]);
  assert.deepStrictEqual(parse('""\n'), [['']]);
});

test('custom delimiter and quote', () => {
  const dialect = new Dialect({ delimiter: ';', quote: "'" });
  assert.deepStrictEqual(parse("'a;b';c\n", dialect), [['a;b', 'c']]);
});

test('skipInitialSpace drops spaces after delimiters', () => {
  const dialect = new Dialect({ skipInitialSpace: true });
  assert.deepStrictEqual(parse('a, b,  c\n', dialect), [['a', 'b', 'c']]);
});

test('unterminated quote is an error with a line number', () => {
  assert.throws(() => parse('a,b\n"oops,c\n'), (err) => err instanceof ParseError && err.line === 3);
});

test('strict mode rejects text after a closing quote', () => {
  assert.deepStrictEqual(parse('"a"b,c\n'), [['ab', 'c']]);
  assert.throws(() => parse('"a"b,c\n', Dialect.excel, { strict: true }), ParseError);
});

test('parseRecords maps rows to objects', () => {
  const records = parseRecords('id,name\n1,ada\n2\n');
  assert.deepStrictEqual(records, [
    { id: '1', name: 'ada' },
    { id: '2', name: null },
  ]);
  assert.deepStrictEqual(parseRecords(''), []);
});
