/**
 * The cluster secret of the tools: secure by default. With no secret given, the tools
 * generate one and keep it in a file beside the data, readable by its owner only, so
 * every process of one cluster shares it without it ever appearing on a command line
 * (other local users can read any process's argv).
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { KvError } from '../errors.js';

/** Random bytes in a generated secret (written as hex): the full strength of the HMAC-SHA256 proofs. */
const SECRET_BYTES = 32;
/** The file's name beside the data: `npm start`, `npm run hub` and `npm run node` agree on it. */
export const SECRET_FILE_NAME = 'cluster.secret';
/** Permission bits that let anyone but the owner read or write a file. */
const GROUP_OR_OTHERS_MODE = 0o077;

/**
 * The secret kept in `file`, created first if it does not exist. A file that is empty,
 * or that group or others may read or write, is refused: its secret may be known.
 */
export async function loadOrCreateSecret(file: string): Promise<string> {
  await mkdir(path.dirname(file), { recursive: true });
  const created = randomBytes(SECRET_BYTES).toString('hex');
  if (await createExclusively(file, `${created}\n`)) return created;
  return readSecretFile(file);
}

async function readSecretFile(file: string): Promise<string> {
  let text: string;
  try {
    // Windows has no owner-only mode bits to check; its ACLs protect the user's files.
    if (process.platform !== 'win32') {
      const mode = (await stat(file)).mode & 0o777;
      if ((mode & GROUP_OR_OTHERS_MODE) !== 0) {
        throw new KvError(
          'BAD_REQUEST',
          `${file} holds the cluster secret, but its mode ${mode.toString(8).padStart(4, '0')} lets other users read or write it: run chmod 600 ${file}`,
        );
      }
    }
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (error instanceof KvError) throw error;
    throw new KvError('BAD_REQUEST', `cannot read the cluster secret from ${file}: ${(error as Error).message}`);
  }
  const secret = text.trim();
  if (secret === '') {
    throw new KvError('BAD_REQUEST', `${file} is empty: write the cluster secret into it, or delete it to have a new one generated`);
  }
  return secret;
}

/**
 * Creates `file` holding `text`, mode 0600, unless it exists (then false). The text goes
 * into a temporary file first ('wx': never someone else's), which is then linked into
 * place: a process starting at the same moment sees no file or the whole secret, never an
 * empty one.
 */
async function createExclusively(file: string, text: string): Promise<boolean> {
  const temporary = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, text, { flag: 'wx', mode: 0o600 });
    try {
      await link(temporary, file);
      return true;
    } finally {
      await unlink(temporary);
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    // A file system without hard links: create the file itself exclusively.
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'ENOSYS') return createInPlace(file, text);
    throw new KvError('BAD_REQUEST', `cannot create the cluster secret file ${file}: ${(error as Error).message}`);
  }
}

async function createInPlace(file: string, text: string): Promise<boolean> {
  try {
    await writeFile(file, text, { flag: 'wx', mode: 0o600 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new KvError('BAD_REQUEST', `cannot create the cluster secret file ${file}: ${(error as Error).message}`);
  }
}

/** Flags shared by `npm run hub` and `npm run node` (node:util parseArgs options). */
export const SECRET_FLAGS = {
  secret: { type: 'string' },
  'secret-file': { type: 'string' },
  insecure: { type: 'boolean', default: false },
} as const;

/** The usage lines of those flags, descriptions starting at `column`. */
export function secretFlagsUsage(column: number, defaultFile: string): string {
  return [
    ['--secret-file PATH', `the cluster secret's file, created (32 random bytes, mode 0600) if absent`],
    ['', `(default ${defaultFile}; PBKV_SECRET instead when set)`],
    ['--secret S', 'the secret itself (or env PBKV_SECRET): local users can read it in argv'],
    ['--insecure', 'no secret: any local process can register names and forge writes'],
  ]
    .map(([flag, text]) => `  ${flag!.padEnd(column - 2)}${text}`)
    .join('\n');
}

export type SecretChoice = { secret: string } | { insecure: true };

type SecretFlags = { secret?: string | undefined; 'secret-file'?: string | undefined; insecure?: boolean | undefined };

/** A usage mistake in the secret flags (two of them at once, an empty one), or undefined. */
export function secretFlagsProblem(flags: SecretFlags): string | undefined {
  const given = [flags.secret !== undefined && '--secret', flags['secret-file'] !== undefined && '--secret-file', flags.insecure && '--insecure'];
  const named = given.filter((flag): flag is string => typeof flag === 'string');
  if (named.length > 1) return `${named.join(' and ')} exclude each other`;
  if (flags.secret !== undefined && flags.secret.trim() === '') return '--secret must not be empty';
  if (flags['secret-file'] === '') return '--secret-file must not be empty';
  return undefined;
}

/**
 * What --secret, --secret-file, --insecure and PBKV_SECRET say (checked first with
 * secretFlagsProblem), in this order of precedence: a flag beats the environment, so
 * `npm start` (which passes --secret-file) is not overridden by a PBKV_SECRET left in the
 * shell. Throws a KvError when the secret file cannot be used.
 */
export async function chooseSecret(flags: SecretFlags, defaultFile: string, env: NodeJS.ProcessEnv = process.env): Promise<SecretChoice> {
  const problem = secretFlagsProblem(flags);
  if (problem !== undefined) throw new KvError('BAD_REQUEST', problem);
  if (flags.insecure) return { insecure: true };
  if (flags.secret !== undefined) return { secret: flags.secret };
  if (flags['secret-file'] !== undefined) return { secret: await loadOrCreateSecret(flags['secret-file']) };
  const fromEnv = env['PBKV_SECRET'];
  if (fromEnv !== undefined && fromEnv !== '') return { secret: fromEnv };
  return { secret: await loadOrCreateSecret(defaultFile) };
}

/** The one-line warning a tool prints when it runs without a secret. */
export function insecureWarning(tool: string): string {
  return `${tool}: WARNING: --insecure: no cluster secret, so any local process can register names at the hub and forge writes to replicas`;
}
