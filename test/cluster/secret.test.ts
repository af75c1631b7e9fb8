import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chooseSecret, loadOrCreateSecret, secretFlagsProblem } from '../../src/cluster/secret.js';
import { KvError } from '../../src/errors.js';
import { Disposer, tempDir } from '../helpers.js';

const disposer = new Disposer();
const Secret = suite('cluster: the secret file of the tools');
Secret.after.each(() => disposer.dispose());

const posix = process.platform !== 'win32';

async function refusal(promise: Promise<unknown>): Promise<KvError> {
  try {
    await promise;
  } catch (error) {
    assert.instance(error, KvError);
    return error as KvError;
  }
  throw new Error('expected a refusal');
}

Secret('created in a new directory with mode 0600, 32 random bytes in hex, and the same secret on the next call', async () => {
  const file = path.join(await tempDir(disposer), 'new', 'dir', 'cluster.secret');
  const secret = await loadOrCreateSecret(file);
  assert.match(secret, /^[0-9a-f]{64}$/);
  assert.is(await readFile(file, 'utf8'), `${secret}\n`);
  if (posix) assert.is((await stat(file)).mode & 0o777, 0o600);
  assert.is(await loadOrCreateSecret(file), secret, 'reused, not replaced');
  assert.equal(await readdir(path.dirname(file)), ['cluster.secret'], 'no temporary file is left behind');
  const other = await loadOrCreateSecret(path.join(path.dirname(file), 'other.secret'));
  assert.is.not(other, secret, 'each new file gets a secret of its own');
});

Secret('processes creating the file at the same moment all read the one secret that was written', async () => {
  const file = path.join(await tempDir(disposer), 'cluster.secret');
  const secrets = await Promise.all(Array.from({ length: 20 }, () => loadOrCreateSecret(file)));
  assert.equal(new Set(secrets).size, 1);
  assert.is(await readFile(file, 'utf8'), `${secrets[0]}\n`);
});

Secret('a file that group or others may read or write is refused, and the message says chmod 600', async () => {
  if (!posix) return;
  const file = path.join(await tempDir(disposer), 'cluster.secret');
  const secret = await loadOrCreateSecret(file);
  for (const mode of [0o640, 0o604, 0o620]) {
    await chmod(file, mode);
    const error = await refusal(loadOrCreateSecret(file));
    assert.is(error.code, 'BAD_REQUEST');
    assert.match(error.message, `mode 0${mode.toString(8)}`);
    assert.match(error.message, `chmod 600 ${file}`);
  }
  await chmod(file, 0o600);
  assert.is(await loadOrCreateSecret(file), secret, 'accepted again once only its owner can read it');
});

Secret('an empty file is refused; a secret written by hand is used as it is, less its newline', async () => {
  const file = path.join(await tempDir(disposer), 'cluster.secret');
  await writeFile(file, '\n', { mode: 0o600 });
  const error = await refusal(loadOrCreateSecret(file));
  assert.match(error.message, /is empty/);
  await writeFile(file, 'chosen by hand\n', { mode: 0o600 });
  assert.is(await loadOrCreateSecret(file), 'chosen by hand');
});

Secret('flags: --secret beats --secret-file beats PBKV_SECRET beats the default file; two at once or an empty one is bad usage', async () => {
  const dir = await tempDir(disposer);
  const defaultFile = path.join(dir, 'default.secret');
  const flagFile = path.join(dir, 'flag.secret');
  const env = { PBKV_SECRET: 'from env' };
  assert.equal(await chooseSecret({ secret: 'from flag' }, defaultFile, env), { secret: 'from flag' });
  assert.equal(await chooseSecret({ 'secret-file': flagFile }, defaultFile, env), { secret: await loadOrCreateSecret(flagFile) });
  assert.equal(await chooseSecret({}, defaultFile, env), { secret: 'from env' });
  assert.equal(await chooseSecret({}, defaultFile, {}), { secret: await loadOrCreateSecret(defaultFile) });
  assert.equal(await chooseSecret({ insecure: true }, defaultFile, env), { insecure: true });
  assert.is(secretFlagsProblem({ insecure: true, secret: 's' }), '--secret and --insecure exclude each other');
  assert.is(secretFlagsProblem({ secret: 's', 'secret-file': 'f' }), '--secret and --secret-file exclude each other');
  assert.is(secretFlagsProblem({ secret: ' ' }), '--secret must not be empty');
  assert.is(secretFlagsProblem({ 'secret-file': flagFile }), undefined);
});

Secret.run();
