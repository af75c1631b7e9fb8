/**
 * The scenario's clients: each keeps a few requests in flight, 50% puts of unique values,
 * 35% gets, 15% dels over a few keys, and one more client only reads. What each request
 * was and what its client saw goes into one history, which the linearizability check reads.
 */
import type { KvClient } from '../client/client.js';
import { KvError } from '../errors.js';
import type { SimCluster } from './cluster.js';
import type { HistoryEntry, KvOp } from './linearizability.js';
import type { Fail, Trace } from './trace.js';
import type { SimProcess, SimWorld } from './world.js';

export const REQUEST_TIMEOUT_MS = 5_000;
/** A key nobody writes: a read of it never waits for replicas. */
const QUIET_KEY = 'quiet';

export interface WorkloadOptions {
  keys: readonly string[];
  /** Clients that write; one reader comes on top. */
  writers: number;
  /** Requests each client keeps in flight. */
  pipelineDepth: number;
}

export class Workload {
  readonly history: HistoryEntry[] = [];
  /** The clients' processes: the network's frames to them are replies. */
  readonly processes = new Set<SimProcess>();
  /** Requests sent and not yet answered (or given up on). */
  inFlight = 0;
  private nextOpId = 1;
  private stopped = false;

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: SimCluster,
    private readonly trace: Trace,
    private readonly fail: Fail,
    private readonly options: WorkloadOptions,
  ) {}

  get running(): boolean {
    return !this.stopped;
  }

  /** The clients of the run and the reader; a client made later gets the next index. */
  get clientCount(): number {
    return this.options.writers + 1;
  }

  /**
   * The last client only reads: it stays with whichever primary it found for as long as
   * that one answers, which is what makes a deposed primary's stale reads show.
   */
  private get readerIndex(): number {
    return this.clientCount - 1;
  }

  start(): void {
    for (let index = 0; index < this.clientCount; index += 1) this.startClient(index);
  }

  /** No client sends a new request; those in flight go on until answered. */
  stop(): void {
    this.stopped = true;
  }

  private startClient(index: number): void {
    const random = this.world.random;
    const process = this.world.process(`c${index}`, `127.0.1.${100 + index}`);
    this.processes.add(process);
    const client = this.cluster.client(process, REQUEST_TIMEOUT_MS);
    let counter = 0;
    const slot = () => {
      if (this.stopped) return;
      const op = this.nextOp(index, () => `c${index}-${counter++}`);
      // A client that got no answer backs off a little, as a real one would.
      void this.run(client, index, op).then((ok) => process.clock.after(ok ? random.int(0, 40) : random.int(50, 300), slot));
    };
    for (let depth = 0; depth < this.options.pipelineDepth; depth += 1) process.clock.after(random.int(0, 10), slot);
  }

  /** `nextValue` is called for puts only: every value put is new. */
  private nextOp(index: number, nextValue: () => string): KvOp {
    const random = this.world.random;
    // The reader also reads the quiet key: there only the leases keep a deposed primary
    // from answering.
    const key = index === this.readerIndex && random.chance(0.5) ? QUIET_KEY : random.pick(this.options.keys);
    const roll = random.fraction();
    if (index === this.readerIndex || (roll >= 0.5 && roll < 0.85)) return { kind: 'get', key };
    return roll < 0.5 ? { kind: 'put', key, value: nextValue() } : { kind: 'del', key };
  }

  /** Sends one request and records it; resolves with whether it was answered ok. */
  async run(client: KvClient, clientIndex: number, op: KvOp): Promise<boolean> {
    const entry: HistoryEntry = { client: clientIndex, id: this.nextOpId++, op, callMs: this.world.nowMs, returnMs: undefined, outcome: { status: 'unknown' } };
    this.inFlight += 1;
    let said: string;
    try {
      if (op.kind === 'put') await client.put(op.key, op.value);
      else if (op.kind === 'del') entry.outcome = { status: 'ok', found: await client.del(op.key) };
      else {
        const value = await client.get(op.key);
        if (value !== undefined && typeof value !== 'string') this.fail('I5', `a get of ${op.key} returned ${JSON.stringify(value)}`);
        entry.outcome = { status: 'ok', value: value as string | undefined };
      }
      if (op.kind === 'put') entry.outcome = { status: 'ok' };
      entry.returnMs = this.world.nowMs;
      this.history.push(entry);
      said = describeOutcome(entry);
    } catch (error) {
      said = this.failed(entry, error);
    } finally {
      this.inFlight -= 1;
    }
    this.trace.log(`c${clientIndex} ${describe(op)} -> ${said}`);
    return entry.outcome.status === 'ok';
  }

  /**
   * UNAVAILABLE (a timeout, a dropped connection) leaves the outcome unknown, so the
   * request goes into the history as such; any other code says it was refused before it
   * took effect. Returns what the trace says of it.
   */
  private failed(entry: HistoryEntry, error: unknown): string {
    const code = error instanceof KvError ? error.code : 'INTERNAL';
    const message = (error as Error).message;
    if (code === 'UNAVAILABLE') {
      this.history.push(entry);
      return describeOutcome(entry);
    }
    const diskFull = code === 'INTERNAL' && /disk full \(simulated\)/.test(message);
    // NOT_FOUND: the lookup found no primary (a hub that restarted has not heard from it yet).
    if (code !== 'NOT_PRIMARY' && code !== 'NOT_FOUND' && !diskFull) this.fail('I5', `client ${entry.client} got ${code} for ${JSON.stringify(entry.op)}: ${message}`);
    return `refused ${code}: ${message}`;
  }

  /** Runs the world until the request is answered (or 30 s of virtual time pass). */
  async runToEnd(client: KvClient, clientIndex: number, op: KvOp): Promise<boolean> {
    let result: boolean | undefined;
    void this.run(client, clientIndex, op).then((ok) => (result = ok));
    if (!(await this.world.run(this.world.nowMs + 30_000, () => result !== undefined))) this.fail('I5', 'a request after healing got no answer within 30 s');
    return result ?? false;
  }
}

function describe(op: KvOp): string {
  return op.kind === 'put' ? `put ${op.key}=${op.value}` : `${op.kind} ${op.key}`;
}

function describeOutcome(entry: HistoryEntry): string {
  const { outcome } = entry;
  if (outcome.status === 'unknown') return 'unknown';
  if (entry.op.kind === 'get') return outcome.value === undefined ? 'not found' : outcome.value;
  if (entry.op.kind === 'del') return `found ${String(outcome.found)}`;
  return 'ok';
}
