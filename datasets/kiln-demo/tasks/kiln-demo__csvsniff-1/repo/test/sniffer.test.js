'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { sniff, hasHeader, read, SniffError } = require('..');

test('sniffs a comma separated file', () => {
  const dialect = sniff('id,name,score\n1,ada,9.5\n2,bob,7\n');
  assert.strictEqual(dialect.delimiter, ',');
  assert.strictEqual(dialect.quote, '"');
  assert.strictEqual(dialect.lineTerminator, '\n');
});

test('sniffs tabs and pipes', () => {
  assert.strictEqual(sniff('a\tb\tc\n1\t2\t3\n').delimiter, '\t');
  assert.strictEqual(sniff('a|b\n1|2\n3|4\n').delimiter, '|');
});

test('sniffs semicolons with decimal commas in some cells', () => {
  const sample = 'item;price;qty\napple;1,20;3\npear;0,95;10\nplum;2;1\n';
  assert.strictEqual(sniff(sample).delimiter, ';');
});

test('sniffs CRLF and single quotes', () => {
  const dialect = sniff("'a','b'\r\n'1','2'\r\n");
  assert.strictEqual(dialect.lineTerminator, '\r\n');
  assert.strictEqual(dialect.quote, "'");
});

test('detects a space after each delimiter', () => {
  assert.strictEqual(sniff('a, b, c\n1, 2, 3\n').skipInitialSpace, true);
  assert.strictEqual(sniff('a,b,c\n1,2,3\n').skipInitialSpace, false);
});

test('tolerates a truncated last line', () => {
  assert.strictEqual(sniff('a;b;c\n1;2;3\n4;5;6\n7;8').delimiter, ';');
});

test('fails clearly on a single column', () => {
  assert.throws(() => sniff('just\none\ncolumn\n'), SniffError);
  assert.throws(() => sniff(''), SniffError);
});

test('header detection', () => {
  assert.strictEqual(hasHeader([['id', 'score'], ['1', '9'], ['2', '7']]), true);
  assert.strictEqual(hasHeader([['1', '9'], ['2', '7'], ['3', '5']]), false);
  assert.strictEqual(hasHeader([['product code'], ['AB12'], ['CD34']]), true);
});

test('read sniffs, parses and splits off the header', () => {
  const { dialect, header, rows } = read('name|age\nada|36\nbob|41\n');
  assert.strictEqual(dialect.delimiter, '|');
  assert.deepStrictEqual(header, ['name', 'age']);
  assert.deepStrictEqual(rows, [['ada', '36'], ['bob', '41']]);
});
