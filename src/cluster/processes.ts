/**
 * Runs the hub and nodes as child processes of their entry points in src/cli/, as a real
 * deployment would (one process per node). Each child prints one JSON line
 * {"event":"ready","url":...} when it serves; everything else it prints is handed on.
 * Each child's stdin is a pipe from this process: when this process ends, however it
 * ends, the children read EOF and shut down.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { NODE_HEAP_MB_MAX, NODE_SEMI_SPACE_MB } from '../constants.js';
import { KvError } from '../errors.js';
import type { ClusterSpec, NodeSpec } from './config.js';
import { SECRET_FILE_NAME } from './secret.js';

const CLI_DIR = fileURLToPath(new URL('../cli/', import.meta.url));
const READY_DEADLINE_MS = 20_000;
const STOP_DEADLINE_MS = 10_000;
/** Lines of each child's output kept to show when it dies, and the characters kept of each. */
const CHILD_OUTPUT_LINES_KEPT = 10;
const CHILD_OUTPUT_LINE_CHARS_KEPT = 2_000;

export interface ChildHandle {
  name: string;
  url: string;
  process: ChildProcess;
  /** Resolves with the exit code (null when a signal ended it) once the process and its output ended. */
  exited: Promise<number | null>;
  /** The command line that starts this child again by hand, for a shell in the current directory. */
  command: string;
  /** The last lines the child printed (stdout and stderr, ready line included), oldest first. */
  recentOutput(): string[];
  /** SIGTERM, then SIGKILL after a deadline; resolves when the process is gone. */
  stop(): Promise<void>;
}

export interface SpawnOptions {
  /** Each line the child prints that is not its ready line (trace events, logs). */
  onLine?(name: string, line: string): void;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /**
   * The cluster secret's file, passed on as --secret-file (the secret itself never goes on
   * a command line: other local users can read argv). Without it, and without `insecure`,
   * the children use `defaultSecretFile(spec)`, so a hub and nodes started from one spec
   * always share one secret.
   */
  secretFile?: string;
  /** Run without a secret (--insecure): any local process can then forge writes. */
  insecure?: boolean;
}

/** Where a cluster's secret is kept by default: beside its data (`data/` without a data file). */
export function defaultSecretFile(spec: ClusterSpec): string {
  const dataFile = spec.nodes.find((node) => node.dataFile !== undefined)?.dataFile;
  return path.join(dataFile === undefined ? 'data' : path.dirname(dataFile), SECRET_FILE_NAME);
}

export function spawnHub(spec: ClusterSpec, options: SpawnOptions = {}): Promise<ChildHandle> {
  const args = ['--host', spec.hubHost, '--port', String(spec.hubPort), ...(spec.hubDataFile ? ['--data', spec.hubDataFile] : ['--memory']), ...secretArgs(spec, options)];
  return spawnTool('hub', 'hub.js', args, options);
}

export function spawnNode(node: NodeSpec, spec: ClusterSpec, hubUrl: string, options: SpawnOptions = {}): Promise<ChildHandle> {
  const replicas = spec.nodes.filter((n) => n.role === 'replica').map((n) => n.name);
  const primary = spec.nodes.find((n) => n.role === 'primary')!.name;
  const args = [
    '--name', node.name,
    '--role', node.role,
    '--host', node.host,
    '--port', String(node.port),
    '--hub', hubUrl,
    '--sync', spec.sync,
    ...(node.dataFile ? ['--data', node.dataFile] : []),
    ...(node.role === 'primary' ? ['--replicas', replicas.join(',')] : ['--primary', primary]),
    ...secretArgs(spec, options),
  ];
  const heapFlags = [`--max-old-space-size=${NODE_HEAP_MB_MAX}`, `--max-semi-space-size=${NODE_SEMI_SPACE_MB}`];
  return spawnTool(node.name, 'node.js', args, options, heapFlags);
}

function secretArgs(spec: ClusterSpec, options: SpawnOptions): string[] {
  if (options.insecure && options.secretFile !== undefined) {
    throw new KvError('BAD_REQUEST', 'a cluster runs with a secret file or insecure, not both');
  }
  return options.insecure ? ['--insecure'] : ['--secret-file', options.secretFile ?? defaultSecretFile(spec)];
}

/** How a child ended, for people: "exited with code 1" or "was killed by SIGKILL". */
export function describeExit(child: ChildHandle): string {
  const { exitCode, signalCode } = child.process;
  if (signalCode !== null) return `was killed by ${signalCode}`;
  return exitCode === null ? 'is still running' : `exited with code ${exitCode}`;
}

function spawnTool(name: string, script: string, args: string[], options: SpawnOptions, defaultFlags: string[] = []): Promise<ChildHandle> {
  // PBKV_NODE_FLAGS passes flags to node itself, such as --cpu-prof for a profile of each
  // process; they come after the defaults, so they win.
  const nodeFlags = [...defaultFlags, ...(process.env['PBKV_NODE_FLAGS'] ?? '').split(' ').filter((flag) => flag !== '')];
  const toolArgs = [...args, ...(options.extraArgs ?? [])];
  const child = spawn(process.execPath, [...nodeFlags, CLI_DIR + script, ...toolArgs], {
    // stdin stays open as a lifeline: the child stops when it reads EOF (src/cli/shutdown.ts).
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env, PBKV_EXIT_WITH_PARENT: '1' },
  });
  // 'close', not 'exit': the last lines the child printed have been read by then.
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const recent = new RecentLines(CHILD_OUTPUT_LINES_KEPT, CHILD_OUTPUT_LINE_CHARS_KEPT);
  // The runtime this process runs on (the project's pinned Node), not whatever `node` a shell finds.
  const runtime = path.relative(process.cwd(), process.execPath);
  const command = shellCommand([runtime.startsWith('..') ? process.execPath : runtime, ...nodeFlags, path.relative(process.cwd(), CLI_DIR + script) || script, ...toolArgs]);
  createInterface({ input: child.stderr! }).on('line', (line) => {
    recent.push(line);
    options.onLine?.(name, line);
  });
  const lastOutput = () => (recent.lines().length === 0 ? '(no output)' : recent.lines().join('\n'));
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new KvError('UNAVAILABLE', `${name} was not ready within ${READY_DEADLINE_MS} ms; its last output:\n${lastOutput()}`));
    }, READY_DEADLINE_MS);
    void exited.then((code) => {
      clearTimeout(deadline);
      reject(new KvError('UNAVAILABLE', `${name} exited with ${code ?? child.signalCode} before it was ready; its last output:\n${lastOutput()}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      recent.push(line);
      const ready = readyUrl(line);
      if (ready === undefined) {
        options.onLine?.(name, line);
        return;
      }
      clearTimeout(deadline);
      resolve({
        name,
        url: ready,
        process: child,
        exited,
        command,
        recentOutput: () => recent.lines(),
        async stop() {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
            await exited;
            clearTimeout(timer);
          }
          await exited;
        },
      });
    });
  });
}

/** A ring buffer of the last lines a child printed, each cut to a bounded length. */
class RecentLines {
  private readonly kept: string[] = [];
  private next = 0;

  constructor(
    private readonly linesMax: number,
    private readonly lineCharsMax: number,
  ) {}

  push(line: string): void {
    const cut = line.length > this.lineCharsMax ? `${line.slice(0, this.lineCharsMax)}...` : line;
    if (this.kept.length < this.linesMax) this.kept.push(cut);
    else this.kept[this.next] = cut;
    this.next = (this.next + 1) % this.linesMax;
  }

  lines(): string[] {
    return this.kept.length < this.linesMax ? [...this.kept] : [...this.kept.slice(this.next), ...this.kept.slice(0, this.next)];
  }
}

/** Words joined for a POSIX shell, quoted where the shell would split or expand them. */
export function shellCommand(words: string[]): string {
  return words.map((word) => (/^[A-Za-z0-9_./:=,@%+-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`)).join(' ');
}

function readyUrl(line: string): string | undefined {
  if (!line.startsWith('{"event":"ready"')) return undefined;
  try {
    return (JSON.parse(line) as { url: string }).url;
  } catch {
    return undefined;
  }
}
