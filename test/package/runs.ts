/** Helpers of the package tests: child processes with deadlines, and the Nodes on this machine. */
import { spawn } from 'node:child_process';
import { access, realpath } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Disposer } from '../helpers.js';

/** The repository's root (dist/test/package/ is three levels below it). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

export interface RunOptions {
  cwd: string;
  deadlineMs: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * The environment of a user's shell: without the npm_* variables that `npm test` sets
 * (npm_config_local_prefix among them would point a nested npm at this repository).
 */
export function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(name) || name === 'INIT_CWD' || name === 'FORCE_COLOR' || name === 'NO_COLOR') continue;
    env[name] = value;
  }
  return { ...env, ...extra };
}

/**
 * Runs a command in its own process group and resolves with what it printed. Past the
 * deadline the whole group is killed (npm may start children) and the run fails.
 */
export function run(command: string, args: string[], options: RunOptions, disposer: Disposer): Promise<Run> {
  const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? userEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const killGroup = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  disposer.add(child, killGroup);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const what = [command, ...args].join(' ');
  return new Promise<Run>((resolve, reject) => {
    const timer = setTimeout(() => {
      killGroup();
      reject(new Error(`timed out after ${options.deadlineMs} ms: ${what}\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.deadlineMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface NodeRuntime { path: string; version: string; hasSqlite: boolean }

/**
 * Every distinct `node` on PATH (as `which -a node` lists them) and in the usual places,
 * with its version and whether it has node:sqlite. The one running this test is first.
 */
export async function nodeRuntimes(disposer: Disposer): Promise<NodeRuntime[]> {
  const candidates = [process.execPath];
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) if (dir) candidates.push(path.join(dir, 'node'));
  candidates.push('/usr/bin/node', '/usr/local/bin/node');
  const seen = new Set<string>();
  const runtimes: NodeRuntime[] = [];
  for (const candidate of candidates) {
    let real: string;
    try {
      await access(candidate);
      real = await realpath(candidate);
    } catch {
      continue;
    }
    if (seen.has(real)) continue;
    seen.add(real);
    const probe = "import('node:sqlite').then(() => true, () => false).then((has) => console.log(process.version, has))";
    const answer = await run(real, ['-e', probe], { cwd: REPO_ROOT, deadlineMs: 10_000 }, disposer);
    const [version, has] = answer.stdout.trim().split(' ');
    // A `node` on PATH may be a shell script of some tool; only a real Node answers.
    if (answer.code !== 0 || !version?.startsWith('v')) continue;
    runtimes.push({ path: real, version, hasSqlite: has === 'true' });
  }
  return runtimes;
}
