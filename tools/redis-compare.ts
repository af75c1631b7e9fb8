/**
 * The same workload against Redis: a primary and `replicas` replicas started here (temp
 * directory, free loopback ports, AOF fsync once a second as the reference does), every
 * put a SET followed by WAIT <replicas>, so a put completes when every replica holds it,
 * which is what pbkv's sync normal gives. Needs `redis-server` on the PATH.
 *
 * The other shapes (bench --op): incr is INCR followed by WAIT <replicas>; cas is a
 * WATCH/MULTI/EXEC loop on a connection of its own (WATCH is per connection): WATCH k +
 * GET k in one round trip, then MULTI, SET k v, EXEC and WAIT <replicas> in the next; a
 * nil EXEC is a conflict (that WAIT returns at once: nothing new to wait for), and the
 * loop goes back to WATCH.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CONNECT_TIMEOUT_MS } from '../src/constants.js';
import { openPaced } from './connect-paced.js';

export function redisAvailable(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

type Reply = string | number | null | Error | Reply[];

/** A minimal RESP2 client: commands are pipelined, replies come back in order. */
class RespConnection {
  private buffer = Buffer.alloc(0);
  private readonly waiting: ((reply: Reply) => void)[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      for (;;) {
        const parsed = parseReply(this.buffer, 0);
        if (!parsed) break;
        this.buffer = this.buffer.subarray(parsed.end);
        this.waiting.shift()?.(parsed.reply);
      }
    });
    socket.on('error', () => {});
  }

  static open(port: number): Promise<RespConnection> {
    return new Promise((resolve, reject) => {
      const socket = tcpConnect({ host: '127.0.0.1', port, timeout: CONNECT_TIMEOUT_MS }, () => {
        socket.setTimeout(0);
        resolve(new RespConnection(socket));
      });
      socket.once('timeout', () => socket.destroy(new Error(`redis on ${port} did not accept a connection within ${CONNECT_TIMEOUT_MS} ms`)));
      socket.once('error', reject);
    });
  }

  command(...args: string[]): Promise<Reply> {
    let frame = `*${args.length}\r\n`;
    for (const arg of args) frame += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.socket.write(frame);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

function parseReply(buffer: Buffer, start: number): { reply: Reply; end: number } | undefined {
  const lineEnd = buffer.indexOf('\r\n', start);
  if (lineEnd < 0) return undefined;
  const type = String.fromCharCode(buffer[start]!);
  const line = buffer.toString('utf8', start + 1, lineEnd);
  switch (type) {
    case '+':
      return { reply: line, end: lineEnd + 2 };
    case '-':
      return { reply: new Error(line), end: lineEnd + 2 };
    case ':':
      return { reply: Number(line), end: lineEnd + 2 };
    case '$': {
      const length = Number(line);
      if (length < 0) return { reply: null, end: lineEnd + 2 };
      if (buffer.length < lineEnd + 2 + length + 2) return undefined;
      return { reply: buffer.toString('utf8', lineEnd + 2, lineEnd + 2 + length), end: lineEnd + 2 + length + 2 };
    }
    case '*': {
      const count = Number(line);
      // A null array (*-1): what EXEC answers when a WATCHed key changed.
      if (count < 0) return { reply: null, end: lineEnd + 2 };
      const items: Reply[] = [];
      let end = lineEnd + 2;
      for (let i = 0; i < count; i += 1) {
        const item = parseReply(buffer, end);
        if (!item) return undefined;
        items.push(item.reply);
        end = item.end;
      }
      return { reply: items, end };
    }
    default:
      throw new Error(`unexpected RESP reply type ${type}`);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once('error', reject);
  });
}

export interface RedisCluster {
  primaryPort: number;
  /** The process ids of the primary (`primary`) and the replicas (`replica1`, ...), for their peak RSS. */
  pids: Record<string, number | undefined>;
  stop(): Promise<void>;
}

export async function startRedis(replicas: number): Promise<RedisCluster> {
  const dir = await mkdtemp(path.join(tmpdir(), 'pbkv-redis-'));
  const children: ChildProcess[] = [];
  const pids: Record<string, number | undefined> = {};
  const stop = async () => {
    for (const child of children.reverse()) {
      if (child.exitCode !== null) continue;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  const start = async (name: string, port: number, extra: string[]) => {
    const child = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--dbfilename', `${name}.rdb`,
      '--appendonly', 'yes', '--appendfilename', `${name}.aof`, '--appenddirname', `${name}-aof`,
      '--appendfsync', 'everysec', '--save', '', '--protected-mode', 'no', ...extra,
    ], { stdio: 'ignore' });
    children.push(child);
    pids[name] = child.pid;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const probe = await RespConnection.open(port);
        probe.close();
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`redis ${name} did not start on ${port}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  try {
    const primaryPort = await freePort();
    await start('primary', primaryPort, []);
    for (let i = 1; i <= replicas; i += 1) await start(`replica${i}`, await freePort(), ['--replicaof', '127.0.0.1', String(primaryPort)]);
    const admin = await RespConnection.open(primaryPort);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const info = String(await admin.command('INFO', 'replication'));
      const online = (info.match(/state=online/g) ?? []).length;
      if (online === replicas) break;
      if (Date.now() > deadline) throw new Error(`redis replicas not online: ${info}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    admin.close();
    return { primaryPort, pids, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The bench's shapes: puts and gets (--mix), incr of counters, compare-and-set loops. */
export type Op = 'mix' | 'incr' | 'cas';

/** A CAS run's value: how many CASes the key has seen, padded to about `valueBytes` as a JSON string ("17|vvv..."). */
export function casValue(count: number, valueBytes: number): string {
  const head = `${count}|`;
  return head + 'v'.repeat(Math.max(0, valueBytes - 2 - head.length));
}

/** The count in a casValue (0 for anything else). */
export function casCount(value: unknown): number {
  if (typeof value !== 'string') return 0;
  const count = Number.parseInt(value, 10);
  return Number.isSafeInteger(count) ? count : 0;
}

/** The values of `keys` on the Redis at `port` (null: absent), read in MGETs of 1,000. */
export async function redisValues(port: number, keys: string[]): Promise<(string | null)[]> {
  const connection = await RespConnection.open(port);
  try {
    const values: (string | null)[] = [];
    for (let start = 0; start < keys.length; start += 1000) {
      const reply = await connection.command('MGET', ...keys.slice(start, start + 1000));
      if (!Array.isArray(reply)) throw new Error(`MGET answered ${String(reply)}`);
      for (const value of reply) values.push(typeof value === 'string' ? value : null);
    }
    return values;
  } finally {
    connection.close();
  }
}

export interface Workload {
  op: Op;
  keyPrefix: string;
  connections: number;
  depth: number;
  seconds: number;
  ops: number | undefined;
  putShare: number;
  keys: number;
  valueBytes: number;
  replicas: number;
  preload: number;
}

export interface Recorder {
  record(microseconds: number, ok: boolean, code?: string): void;
  /** A CAS whose condition failed (it is then retried). */
  conflicted(): void;
}

/** Bytes of values in one MSET of a preload, and MSETs in flight. */
const PRELOAD_MSET_BYTES_MAX = 1024 * 1024;
const PRELOAD_MSETS_IN_FLIGHT = 8;
/**
 * Bytes of values a preload writes between WAITs: the replicas' backlog stays far below
 * Redis's output buffer limit for a replica (256 MB, past which it drops the replica and
 * starts a full resync).
 */
const PRELOAD_WAIT_EVERY_BYTES = 16 * 1024 * 1024;
const PRELOAD_WAIT_TIMEOUT_MS = 60_000;
/**
 * How long a preload waits for the AOF rewrites it set off. Each Redis rewrites its AOF
 * (a forked child writing the whole data set) each time it has doubled (past 64 MB), so
 * millions of keys set off several; one still running would load the measured run.
 */
const PRELOAD_REWRITE_WAIT_MS = 300_000;

/**
 * Loads `count` keys (key0..) as the pbkv preload does, in MSETs of up to 1,000 keys (one
 * command to parse and replicate per 1,000 keys instead of one per key),
 * PRELOAD_MSETS_IN_FLIGHT at a time, and fails unless every replica holds them.
 */
async function preload(port: number, count: number, value: string, replicas: number): Promise<void> {
  const keysPerMset = Math.max(1, Math.min(1000, Math.floor(PRELOAD_MSET_BYTES_MAX / Math.max(1, value.length))));
  const keysPerWait = Math.max(keysPerMset, Math.floor(PRELOAD_WAIT_EVERY_BYTES / Math.max(1, value.length)));
  const loader = await RespConnection.open(port);
  try {
    for (let start = 0; start < count; start += keysPerWait) {
      const end = Math.min(count, start + keysPerWait);
      let inFlight: Promise<Reply>[] = [];
      const settle = async () => {
        for (const reply of await Promise.all(inFlight)) if (reply instanceof Error) throw new Error(`redis preload: MSET answered ${reply.message}`);
        inFlight = [];
      };
      for (let first = start; first < end; first += keysPerMset) {
        const args = ['MSET'];
        for (let i = first; i < Math.min(end, first + keysPerMset); i += 1) args.push(`key${i}`, value);
        inFlight.push(loader.command(...args));
        if (inFlight.length === PRELOAD_MSETS_IN_FLIGHT) await settle();
      }
      await settle();
      const acked = await loader.command('WAIT', String(replicas), String(PRELOAD_WAIT_TIMEOUT_MS));
      if (acked !== replicas) throw new Error(`redis preload: ${String(acked)} of ${replicas} replicas acknowledged key${end - 1} within ${PRELOAD_WAIT_TIMEOUT_MS} ms`);
    }
    const info = String(await loader.command('INFO', 'replication'));
    const replicaPorts = [...info.matchAll(/^slave\d+:.*\bport=(\d+)/gm)].map((match) => Number(match[1]));
    for (const each of [port, ...replicaPorts]) await awaitAofRewrite(each);
  } finally {
    loader.close();
  }
}

/** Waits until the Redis at `port` neither runs nor has scheduled an AOF rewrite. */
async function awaitAofRewrite(port: number): Promise<void> {
  const connection = await RespConnection.open(port);
  try {
    const deadline = Date.now() + PRELOAD_REWRITE_WAIT_MS;
    for (;;) {
      const persistence = String(await connection.command('INFO', 'persistence'));
      if (/^aof_rewrite_in_progress:0\b/m.test(persistence) && /^aof_rewrite_scheduled:0\b/m.test(persistence)) return;
      if (Date.now() > deadline) throw new Error(`redis preload: the AOF rewrite on ${port} did not end within ${PRELOAD_REWRITE_WAIT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    connection.close();
  }
}

/** Drives Redis like the pbkv run: `depth` ops in flight per connection. */
export async function driveRedis(port: number, workload: Workload, recorder: Recorder, onProgress: () => void): Promise<number> {
  const value = 'v'.repeat(Math.max(0, workload.valueBytes - 2));
  if (workload.preload > 0) await preload(port, workload.preload, value, workload.replicas);
  // A CAS loop needs a connection of its own (WATCH); the other shapes pipeline `depth` per connection.
  const loopsPerConnection = workload.op === 'cas' ? 1 : workload.depth;
  const connectionCount = workload.op === 'cas' ? workload.connections * workload.depth : workload.connections;
  const connections = await openPaced(connectionCount, () => RespConnection.open(port), (connection) => connection.close());
  const budget = { left: workload.ops ?? Number.MAX_SAFE_INTEGER };
  const started = Date.now();
  const stopAt = started + workload.seconds * 1000;
  const progress = setInterval(onProgress, 250);
  const replicas = String(workload.replicas);
  const one = async (connection: RespConnection): Promise<void> => {
    while (budget.left > 0 && Date.now() < stopAt) {
      budget.left -= 1;
      const key = `${workload.keyPrefix}${Math.floor(Math.random() * workload.keys)}`;
      const begin = process.hrtime.bigint();
      let ok: boolean;
      let code = 'NOT_REPLICATED';
      if (workload.op === 'incr') {
        const [count, acked] = await Promise.all([connection.command('INCR', key), connection.command('WAIT', replicas, '2000')]);
        if (typeof count !== 'number') code = 'REDIS_ERROR';
        ok = typeof count === 'number' && acked === workload.replicas;
      } else if (workload.op === 'cas') {
        for (;;) {
          const [, current] = await Promise.all([connection.command('WATCH', key), connection.command('GET', key)]);
          const next = casValue(typeof current === 'string' ? casCount(current) + 1 : 1, workload.valueBytes);
          const [, , exec, acked] = await Promise.all([
            connection.command('MULTI'),
            connection.command('SET', key, next),
            connection.command('EXEC'),
            connection.command('WAIT', replicas, '2000'),
          ]);
          if (exec === null) {
            recorder.conflicted();
            continue;
          }
          if (!Array.isArray(exec)) code = 'REDIS_ERROR';
          ok = Array.isArray(exec) && acked === workload.replicas;
          break;
        }
      } else if (Math.random() < workload.putShare) {
        const [, acked] = await Promise.all([
          connection.command('SET', key, value),
          connection.command('WAIT', String(workload.replicas), '2000'),
        ]);
        ok = acked === workload.replicas;
      } else {
        ok = !((await connection.command('GET', key)) instanceof Error);
      }
      recorder.record(Math.max(1, Number((process.hrtime.bigint() - begin) / 1000n)), ok, ok ? undefined : code);
    }
  };
  await Promise.all(connections.flatMap((connection) => Array.from({ length: loopsPerConnection }, () => one(connection))));
  clearInterval(progress);
  for (const connection of connections) connection.close();
  return (Date.now() - started) / 1000;
}
