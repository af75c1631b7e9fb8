/**
 * Seeded fuzzing of a node's client protocol (I5): whatever arrives, every frame gets
 * exactly one reply with a known code, no reply is INTERNAL (a fault of the node itself),
 * the connection keeps serving, and the replicas end identical to the primary (I2).
 * A failure prints its seed; PBKV_FUZZ_SEED=<seed> replays it.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startInProcessCluster } from '../../src/cluster/in-process.js';
import { ERROR_CODES } from '../../src/errors.js';
import { Disposer, RawClient, tempDir, type Frame } from '../helpers.js';
import { generator, random } from '../fuzz-frames.js';
import { readSqlite } from '../sqlite-files.js';

const FRAMES = 1500;
const disposer = new Disposer();

const Fuzz = suite('node: fuzzed client frames');
Fuzz.after.each(() => disposer.dispose());

Fuzz(`${FRAMES} seeded frames: one reply each, no INTERNAL, the connection serves, replicas identical`, async () => {
  const seed = Number(process.env['PBKV_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const context = `(seed ${seed}; replay with PBKV_FUZZ_SEED=${seed})`;
  const cluster = disposer.add(await startInProcessCluster({ dataDir: await tempDir(disposer) }), (c) => c.close());
  const client = await RawClient.open(cluster.primary.url, disposer);
  const next = generator(random(seed));
  const sent = Array.from({ length: FRAMES }, next);
  for (const { frame } of sent) client.send(frame);

  const replies: Frame[] = [];
  for (let i = 0; i < FRAMES; i += 1) {
    replies.push(await client.next(20_000).catch((error: Error) => {
      throw new Error(`${error.message} after ${i} replies ${context}`);
    }));
  }
  for (const reply of replies) {
    // A text command `help` is answered with plain text for a person (RawClient keeps it as { text }).
    if (typeof reply['text'] === 'string') {
      assert.match(reply['text'], /^Commands /, `reply ${JSON.stringify(reply)} ${context}`);
      continue;
    }
    assert.type(reply['ok'], 'boolean', `reply ${JSON.stringify(reply)} ${context}`);
    if (!reply['ok']) {
      assert.ok(ERROR_CODES.includes(reply['error'].code), `unknown code in ${JSON.stringify(reply)} ${context}`);
      assert.is.not(reply['error'].code, 'INTERNAL', `a fault of the node: ${JSON.stringify(reply)} ${context}`);
    }
  }
  const validIds = new Set(sent.filter((s) => s.valid).map((s) => (JSON.parse(s.frame) as Frame)['id']));
  const failedValid = replies.filter((r) => validIds.has(r['id']) && !r['ok']);
  assert.equal(failedValid, [], `valid requests failed ${context}`);

  const last = await client.ask({ id: 'last', op: 'put', key: 'after-fuzz', value: seed });
  assert.equal(last, { id: 'last', ok: true, version: last['version'] }, context);
  assert.type(last['version'], 'number');
  // Raw rows, compared as text: byte-identical, and no structural comparer is fooled by
  // keys such as "constructor" or "__proto__" (the fuzzer writes both).
  const rows = await Promise.all(cluster.specs.map((spec) => readSqlite(spec.dataFile!, 'SELECT key, value FROM keyv ORDER BY key')));
  const [primary, ...replicas] = rows.map((r) => JSON.stringify(r));
  assert.ok(rows[0]!.length > 0, `the fuzz wrote something ${context}`);
  for (const replica of replicas) assert.ok(replica === primary, `replica differs from the primary ${context}`);
});

Fuzz.run();
