/**
 * Runs the hub and nodes as child processes of the scripts in tools/, as a real
 * deployment would (one process per node). Each child prints one JSON line
 * {"event":"ready","url":...} when it serves; everything else it prints is handed on.
 * Each child's stdin is a pipe from this process: when this process ends, however it
 * ends, the children read EOF and shut down.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { NODE_HEAP_MB_MAX } from '../constants.js';
import { KvError } from '../errors.js';
import type { ClusterSpec, NodeSpec } from './config.js';

const TOOLS_DIR = fileURLToPath(new URL('../../tools/', import.meta.url));
const READY_DEADLINE_MS = 20_000;
const STOP_DEADLINE_MS = 10_000;

export interface ChildHandle {
  name: string;
  url: string;
  process: ChildProcess;
  /** Resolves with the exit code once the process ended. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after a deadline; resolves when the process is gone. */
  stop(): Promise<void>;
}

export interface SpawnOptions {
  /** Each line the child prints that is not its ready line (trace events, logs). */
  onLine?(name: string, line: string): void;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
}

export function spawnHub(spec: ClusterSpec, options: SpawnOptions & { secret?: string } = {}): Promise<ChildHandle> {
  return spawnTool('hub', 'hub.js', ['--host', spec.hubHost, '--port', String(spec.hubPort)], options);
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
  ];
  const heapFlag = `--max-old-space-size=${NODE_HEAP_MB_MAX}`;
  return spawnTool(node.name, 'node.js', args, options, [heapFlag]);
}

function spawnTool(name: string, script: string, args: string[], options: SpawnOptions, defaultFlags: string[] = []): Promise<ChildHandle> {
  // PBKV_NODE_FLAGS passes flags to node itself, such as --cpu-prof for a profile of each
  // process; they come after the defaults, so they win.
  const nodeFlags = [...defaultFlags, ...(process.env['PBKV_NODE_FLAGS'] ?? '').split(' ').filter((flag) => flag !== '')];
  const child = spawn(process.execPath, [...nodeFlags, TOOLS_DIR + script, ...args, ...(options.extraArgs ?? [])], {
    // stdin stays open as a lifeline: the child stops when it reads EOF (tools/shutdown.ts).
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env, PBKV_EXIT_WITH_PARENT: '1' },
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr.push(line);
    options.onLine?.(name, line);
  });
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new KvError('UNAVAILABLE', `${name} was not ready within ${READY_DEADLINE_MS} ms: ${stderr.join('\n')}`));
    }, READY_DEADLINE_MS);
    void exited.then((code) => {
      clearTimeout(deadline);
      reject(new KvError('UNAVAILABLE', `${name} exited with ${code} before it was ready: ${stderr.join('\n')}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
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
        async stop() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
          await exited;
          clearTimeout(timer);
        },
      });
    });
  });
}

function readyUrl(line: string): string | undefined {
  if (!line.startsWith('{"event":"ready"')) return undefined;
  try {
    return (JSON.parse(line) as { url: string }).url;
  } catch {
    return undefined;
  }
}
