import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster } from '../../src/cluster/in-process.js';
import { KvError } from '../../src/errors.js';
import { parseNodeFrame } from '../../src/protocol/parse.js';
import { HELP_TEXT, parseTextCommand } from '../../src/protocol/text-commands.js';
import { Disposer, RawClient, tempDir, waitFor } from '../helpers.js';

const disposer = new Disposer();
const Text = suite('protocol: text commands at a wscat prompt');
Text.after.each(() => disposer.dispose());

function refusal(line: string): string {
  const parsed = parseTextCommand(line);
  assert.instance(parsed, KvError, line);
  assert.is((parsed as KvError).code, 'BAD_REQUEST');
  return (parsed as KvError).message;
}

Text('a key in double quotes may hold spaces; the value of put is still the rest of the line, as a string', () => {
  assert.equal(parseTextCommand('put "my key" some value'), { op: 'put', id: null, key: 'my key', value: 'some value' });
  assert.equal(parseTextCommand('get "my key"'), { op: 'get', id: null, key: 'my key' });
  assert.equal(parseTextCommand('del   "my key"  \r\n'), { op: 'del', id: null, key: 'my key' });
  assert.equal(parseTextCommand('put "k" "quoted value"  '), { op: 'put', id: null, key: 'k', value: '"quoted value"  ' }, 'quotes in the value are kept');
  assert.equal(parseTextCommand('put "" v'), { op: 'put', id: null, key: '', value: 'v' }, 'an empty quoted key is passed on...');
  const empty = parseNodeFrame('get ""', { keyBytesMax: 1024, valueBytesMax: 1024 });
  assert.is(!empty.ok && empty.error.code, 'BAD_REQUEST', '...and refused by the request check, with its own message');
});

Text('inside quotes \\" is a quote and \\\\ a backslash; any other backslash stays as it is', () => {
  assert.equal(parseTextCommand('get "say \\"hi\\""'), { op: 'get', id: null, key: 'say "hi"' });
  assert.equal(parseTextCommand('get "back\\\\slash"'), { op: 'get', id: null, key: 'back\\slash' });
  assert.equal(parseTextCommand('get "C:\\temp\\n"'), { op: 'get', id: null, key: 'C:\\temp\\n' });
  assert.equal(parseTextCommand('put "ends with \\\\" v'), { op: 'put', id: null, key: 'ends with \\', value: 'v' });
  assert.equal(parseTextCommand('get un"quoted'), { op: 'get', id: null, key: 'un"quoted' }, 'a quote inside a bare word is a character');
});

Text('an unterminated quote, or a closing quote run into more text, is BAD_REQUEST saying what to do', () => {
  assert.match(refusal('get "my key'), /^unterminated quote: "my key needs a closing "/);
  assert.match(refusal('put "my key some value'), /unterminated quote/);
  assert.match(refusal('get "escaped at the end\\"'), /unterminated quote/);
  assert.match(refusal(`get "${'x'.repeat(10_000)}`), /unterminated quote: "x{39}\.\.\. needs/, 'a long line is cut in the message');
  assert.match(refusal('get "a"b'), /a space must follow the closing quote of "a"/);
});

Text('unquoted commands read as before', () => {
  assert.equal(parseTextCommand('put color light blue'), { op: 'put', id: null, key: 'color', value: 'light blue' });
  assert.equal(parseTextCommand('PUT  color   blue '), { op: 'put', id: null, key: 'color', value: 'blue ' });
  assert.equal(parseTextCommand('GET color\n'), { op: 'get', id: null, key: 'color' });
  assert.equal(parseTextCommand('help'), { op: 'help', id: null });
  assert.equal(parseTextCommand('lookup kv'), { op: 'lookup', id: null, service: 'kv' });
  assert.is(refusal('put'), 'usage: put KEY VALUE');
  assert.is(refusal('put k'), 'usage: put KEY VALUE');
  assert.is(refusal('   '), 'empty command (try "help")');
  assert.is(refusal('oops'), 'unknown command "oops" (try "help")');
  assert.match(refusal('get my key'), /^usage: get KEY \(unexpected "key"; a KEY with spaces goes in double quotes\)$/);
});

Text('incr KEY [BY] and list [PREFIX]: the fields of the JSON request, BY a number', () => {
  assert.equal(parseTextCommand('incr hits'), { op: 'incr', id: null, key: 'hits' }, 'by left out: the node takes 1');
  assert.equal(parseTextCommand('incr hits 5'), { op: 'incr', id: null, key: 'hits', by: 5 });
  assert.equal(parseTextCommand('INCR "page views" -2.5e1'), { op: 'incr', id: null, key: 'page views', by: -25 });
  assert.equal(parseTextCommand('list user:'), { op: 'list', id: null, prefix: 'user:' });
  assert.equal(parseTextCommand('list'), { op: 'list', id: null, prefix: '' }, 'every key');
  assert.equal(parseTextCommand('list "my prefix"'), { op: 'list', id: null, prefix: 'my prefix' });
  for (const by of ['five', '0x10', 'Infinity', '1e', '+1', '""']) {
    assert.is(refusal(`incr hits ${by}`), `usage: incr KEY [BY] (BY is a number, not ${JSON.stringify(by.replaceAll('"', ''))})`, by);
  }
  assert.equal(parseTextCommand('incr hits "5"'), { op: 'incr', id: null, key: 'hits', by: 5 }, 'a quoted number is a number, as in a shell');
  assert.is(refusal('incr'), 'usage: incr KEY [BY]');
  assert.match(refusal('incr hits 1 2'), /^usage: incr KEY \[BY\] \(unexpected "2"/);
  assert.match(refusal('list a b'), /^usage: list \[PREFIX\] \(unexpected "b"/);
});

Text('watch [PREFIX]: the fields of a watch request, every key without a prefix', () => {
  assert.equal(parseTextCommand('watch user:'), { op: 'watch', id: null, prefix: 'user:' });
  assert.equal(parseTextCommand('WATCH'), { op: 'watch', id: null, prefix: '' }, 'every key');
  assert.equal(parseTextCommand('watch "my prefix"'), { op: 'watch', id: null, prefix: 'my prefix' });
  assert.match(refusal('watch a b'), /^usage: watch \[PREFIX\] \(unexpected "b"/);
});

Text('help lists every command with its text aligned, and says how to quote a key', () => {
  const lines = HELP_TEXT.split('\n');
  const commands = lines.filter((line) => /^ {2}[a-z]+(?: \[?[A-Z]+\]?)* {2,}\S/.test(line));
  assert.equal(commands.map((line) => line.trim().split(' ')[0]), ['put', 'get', 'del', 'incr', 'list', 'watch', 'help']);
  const columns = commands.map((line) => /^ {2}\S+(?: \[?[A-Z]+\]?)* +/.exec(line)![0].length);
  assert.equal(new Set(columns).size, 1, `descriptions start in one column: ${columns}`);
  assert.ok(HELP_TEXT.includes('put "my key" some value'));
  assert.ok(HELP_TEXT.includes('\\"'));
  assert.ok(lines.every((line) => line.length <= 100), 'fits a terminal');
});

Text('at a node: a quoted key put by text is read back by a JSON frame, and help answers with the text', async () => {
  const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer), replicas: 1 }), (c) => c.close());
  const wscat = await RawClient.open(cluster.primary.url, disposer);
  // The primary may first wait for its replicas to report where they stand.
  await waitFor('the primary to serve', async () => (await wscat.ask('get probe'))['error']?.code !== 'UNAVAILABLE');
  assert.equal(await wscat.ask('put "my key" some value'), { id: null, ok: true, version: 1 });
  assert.equal(await wscat.ask({ id: 1, op: 'get', key: 'my key' }), { id: 1, ok: true, found: true, value: 'some value', version: 1 });
  assert.equal(await wscat.ask('del "my key"'), { id: null, ok: true, found: true, version: 2 });
  const unterminated = await wscat.ask('get "my key');
  assert.is(unterminated['error']?.code, 'BAD_REQUEST');
  assert.equal(await wscat.ask('help'), { text: `${HELP_TEXT}\n` });
  assert.equal(await wscat.ask('incr hits'), { id: null, ok: true, value: 1, version: 3 });
  assert.equal(await wscat.ask('incr hits 41'), { id: null, ok: true, value: 42, version: 4 });
  assert.equal(await wscat.ask('put user:1 ann'), { id: null, ok: true, version: 5 });
  assert.equal(await wscat.ask('list user:'), { id: null, ok: true, entries: [{ key: 'user:1', value: 'ann', version: 5 }], more: false, version: 5 });
  assert.equal((await wscat.ask('list'))['entries'].map((entry: { key: string }) => entry.key), ['hits', 'user:1']);
  const notNumber = await wscat.ask('incr user:1');
  assert.is(notNumber['error']?.code, 'BAD_REQUEST', 'a value that is not a number');
  assert.equal(await wscat.ask({ id: 7, op: 'help' }), { id: 7, ok: true, help: HELP_TEXT });
});

Text.run();
