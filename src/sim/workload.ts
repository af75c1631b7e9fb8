/**
 * The scenario's clients: each keeps a few requests in flight over a few keys and two
 * counters: gets, puts of unique values (some only if the key is at a version the client
 * saw last, or absent; some expiring within seconds), dels (some conditional) and incrs of
 * the counters; one more client only reads. Requests go as the protocol's JSON through the
 * client library's connection and retries, writes with the client's request tag, so every
 * reply's version, a CONFLICT's found and version and a get's expiry go into one history,
 * which the linearizability check reads. Which node answered a read is taken off the wire:
 * its wall clock is the one that judged expiry.
 */
import type { KvClient } from '../client/client.js';
import { REQUEST_TAG_WINDOW } from '../constants.js';
import { KvError } from '../errors.js';
import type { OkReply } from '../protocol/rpc-channel.js';
import type { SimCluster } from './cluster.js';
import type { HistoryEntry, KvOp, KvOutcome } from './linearizability.js';
import type { Fail, Trace } from './trace.js';
import { WALL_CLOCK_START_MS, type SimProcess, type SimWorld } from './world.js';

export const REQUEST_TIMEOUT_MS = 5_000;
/** A key nobody writes: a read of it never waits for replicas. */
const QUIET_KEY = 'quiet';
/** Expiring writes live this long: short enough to expire during the fault phase, few enough that the checker groups them. */
const TTLS_MS = [300, 1_000, 2_500] as const;
/** The field that names a request's history entry on the wire (a node ignores fields it does not know). */
const ENTRY_FIELD = 'simEntry';

export interface WorkloadOptions {
  /** Keys of string values. */
  keys: readonly string[];
  /** Keys that are counted with incr. */
  counters: readonly string[];
  /** Clients that write; one reader comes on top. */
  writers: number;
  /** Requests each client keeps in flight. */
  pipelineDepth: number;
}

/** One simulated client: its library client, and what it last saw of each key. */
export interface SimClient {
  readonly index: number;
  readonly process: SimProcess;
  readonly client: KvClient;
  /** The version each key was at when this client last heard (0: absent). */
  readonly seen: Map<string, number>;
  nextReq: number;
  /** Request numbers of writes not yet settled, oldest first (a Set keeps insertion order). */
  readonly unsettled: Set<number>;
}

export class Workload {
  private readonly entries: HistoryEntry[] = [];
  /** The clients' processes: the network's frames to them are replies. */
  readonly processes = new Set<SimProcess>();
  /** Requests sent and not yet answered (or given up on). */
  inFlight = 0;
  private nextOpId = 1;
  private stopped = false;
  private readonly clients: SimClient[] = [];
  /** Entries by the connection and id each try of their request went with. */
  private readonly onTheWire = new Map<string, number>();
  /** The least clock offset of the nodes that answered each entry's request. */
  private readonly answeredOffsetMs = new Map<number, number>();

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: SimCluster,
    private readonly trace: Trace,
    private readonly fail: Fail,
    private readonly options: WorkloadOptions,
  ) {
    this.watchAnswers();
  }

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
    return this.options.writers;
  }

  start(): void {
    for (let index = 0; index < this.clientCount; index += 1) this.startClient(this.newClient(`c${index}`, `127.0.1.${100 + index}`));
  }

  /** No client sends a new request; those in flight go on until answered. */
  stop(): void {
    this.stopped = true;
  }

  /** A client in a process of its own, with the next index. */
  newClient(name: string, address: string): SimClient {
    const process = this.world.process(name, address);
    this.processes.add(process);
    const client: SimClient = { index: this.clients.length, process, client: this.cluster.client(process, REQUEST_TIMEOUT_MS), seen: new Map(), nextReq: 1, unsettled: new Set() };
    this.clients.push(client);
    return client;
  }

  private startClient(client: SimClient): void {
    const random = this.world.random;
    let counter = 0;
    const slot = () => {
      if (this.stopped) return;
      const op = this.nextOp(client, () => `c${client.index}-${counter++}`);
      // A client that got no answer backs off a little, as a real one would.
      void this.run(client, op).then((ok) => client.process.clock.after(ok ? random.int(0, 40) : random.int(50, 300), slot));
    };
    for (let depth = 0; depth < this.options.pipelineDepth; depth += 1) client.process.clock.after(random.int(0, 10), slot);
  }

  /**
   * The next request of a client: 30% gets (of any key), 27% puts (30% of them expiring),
   * 18% puts conditional on the version last seen (a quarter on absence; 25% expiring), 12%
   * dels (half conditional), 13% incrs of a counter. The reader only gets, half of them of
   * the quiet key. `nextValue` is called for puts only: every value put is new.
   */
  private nextOp(client: SimClient, nextValue: () => string): KvOp {
    const random = this.world.random;
    const { keys, counters } = this.options;
    if (client.index === this.readerIndex) return { kind: 'get', key: random.chance(0.5) ? QUIET_KEY : random.pick(keys) };
    const roll = random.fraction();
    // A write needs a request tag within the window the primary remembers; until then, read.
    if (roll < 0.3 || !this.tagWindowOpen(client)) return { kind: 'get', key: random.pick(random.chance(0.8) ? keys : counters) };
    if (roll < 0.57) return { kind: 'put', key: random.pick(keys), value: nextValue(), ...this.expiry(client, 0.3) };
    if (roll < 0.75) {
      const key = random.pick(keys);
      const ifVersion = random.chance(0.25) ? 0 : (client.seen.get(key) ?? 0);
      return { kind: 'put', key, value: nextValue(), ifVersion, ...this.expiry(client, 0.25) };
    }
    if (roll < 0.87) {
      const key = random.pick(random.chance(0.9) ? keys : counters);
      return { kind: 'del', key, ...(random.chance(0.5) ? { ifVersion: client.seen.get(key) ?? 0 } : {}) };
    }
    const key = random.pick(counters);
    const ifVersion = random.chance(0.1) ? { ifVersion: client.seen.get(key) ?? 0 } : {};
    return { kind: 'incr', key, by: random.pick([1, 3]), ...ifVersion, ...(random.chance(0.1) ? { ttlMs: random.pick(TTLS_MS) } : {}) };
  }

  /** With probability `chance`, an expiry: a ttl, or as often a time on the client's own wall clock (in the history's time). */
  private expiry(client: SimClient, chance: number): { ttlMs?: number; expiresAt?: number } {
    const random = this.world.random;
    if (!random.chance(chance)) return {};
    const ttlMs = random.pick(TTLS_MS);
    return random.chance(0.5) ? { ttlMs } : { expiresAt: client.process.clock.wallNow() - WALL_CLOCK_START_MS + ttlMs };
  }

  private tagWindowOpen(client: SimClient): boolean {
    const oldest = client.unsettled.values().next();
    return oldest.done === true || client.nextReq - oldest.value < REQUEST_TAG_WINDOW;
  }

  /** Sends one request and records it; resolves with whether it was answered (ok or CONFLICT). */
  async run(client: SimClient, op: KvOp): Promise<boolean> {
    const entry: HistoryEntry = { client: client.index, id: this.nextOpId++, op, callMs: this.world.nowMs, returnMs: undefined, outcome: { status: 'unknown' } };
    const req = op.kind === 'get' ? undefined : client.nextReq++;
    if (req !== undefined) client.unsettled.add(req);
    this.inFlight += 1;
    let said: string;
    try {
      const reply = await client.client.request({ ...requestFields(op), ...(req === undefined ? {} : { client: client.client.id, req }), [ENTRY_FIELD]: entry.id });
      said = this.answered(client, entry, okOutcome(op, reply, this.fail));
    } catch (error) {
      said = this.failed(client, entry, error);
    } finally {
      if (req !== undefined) client.unsettled.delete(req);
      this.inFlight -= 1;
    }
    this.trace.log(`c${client.index} ${describe(op)} -> ${said}`);
    return entry.outcome.status !== 'unknown';
  }

  /** An answer with a known outcome goes into the history, and the client remembers the version it names. */
  private answered(client: SimClient, entry: HistoryEntry, outcome: Exclude<KvOutcome, { status: 'unknown' }>): string {
    entry.outcome = outcome;
    entry.returnMs = this.world.nowMs;
    this.entries.push(entry);
    const absent = entry.op.kind === 'del' || outcome.found === false;
    client.seen.set(entry.op.key, absent ? 0 : (outcome.version ?? 0));
    return describeOutcome(entry.op, outcome);
  }

  /**
   * UNAVAILABLE (a timeout, a dropped connection) leaves the outcome unknown, so the
   * request goes into the history as such; CONFLICT is an answer; any other code says it
   * was refused before it took effect. Returns what the trace says of it.
   */
  private failed(client: SimClient, entry: HistoryEntry, error: unknown): string {
    const code = error instanceof KvError ? error.code : 'INTERNAL';
    const message = (error as Error).message;
    if (code === 'UNAVAILABLE') {
      this.entries.push(entry);
      return 'unknown';
    }
    if (code === 'CONFLICT') {
      const { found, version } = (error as KvError).details;
      if (typeof found !== 'boolean' || typeof version !== 'number') this.fail('I5', `a CONFLICT without found and version: ${JSON.stringify((error as KvError).details)}`);
      return this.answered(client, entry, { status: 'conflict', found: found as boolean, version: version as number });
    }
    const diskFull = code === 'INTERNAL' && /disk full \(simulated\)/.test(message);
    // An expiresAt the client read off its own clock may be past on the primary's.
    const pastExpiry = code === 'BAD_REQUEST' && entry.op.kind === 'put' && entry.op.expiresAt !== undefined && /is not in the future/.test(message);
    // NOT_FOUND: the lookup found no primary (a hub that restarted has not heard from it yet).
    if (code !== 'NOT_PRIMARY' && code !== 'NOT_FOUND' && !diskFull && !pastExpiry) this.fail('I5', `client ${entry.client} got ${code} for ${JSON.stringify(entry.op)}: ${message}`);
    return `refused ${code}: ${message}`;
  }

  /** Runs the world until the request is answered (or 30 s of virtual time pass). */
  async runToEnd(client: SimClient, op: KvOp): Promise<boolean> {
    let result: boolean | undefined;
    void this.run(client, op).then((ok) => (result = ok));
    if (!(await this.world.run(this.world.nowMs + 30_000, () => result !== undefined))) this.fail('I5', 'a request after healing got no answer within 30 s');
    return result ?? false;
  }

  /**
   * The history as the check reads it: each op with the offsets the wall clock that judged
   * it may have had. A read or CONFLICT was judged by a node that answered it, at no less
   * than its own time (wallNow floors); anything else by any node. At most, by any: a
   * node judges no lower than the watermark, which an earlier judge's clock set.
   */
  history(): HistoryEntry[] {
    const offsets = this.cluster.nodes.flatMap((handle) => handle.process.clockOffsetsMs);
    const min = Math.min(...offsets) - 1;
    const max = Math.max(...offsets);
    return this.entries.map((entry) => {
      const answered = this.answeredOffsetMs.get(entry.id);
      const read = entry.op.kind === 'get' || entry.outcome.status === 'conflict';
      return { ...entry, clockOffsetMs: { min: read && answered !== undefined ? answered - 1 : min, max } };
    });
  }

  /** Notes which node answered each request, by the entry its frame names. */
  private watchAnswers(): void {
    const nodes = new Set(this.cluster.nodes.map((handle) => handle.process));
    this.cluster.network.sent$.subscribe((frame) => {
      const { from, to, connection } = frame;
      if (this.processes.has(from) && nodes.has(to)) {
        const request = frame.json as Record<string, unknown>;
        if (typeof request[ENTRY_FIELD] === 'number') this.onTheWire.set(`${connection}:${String(request['id'])}`, request[ENTRY_FIELD]);
      } else if (nodes.has(from) && this.processes.has(to)) {
        const wire = `${connection}:${String((frame.json as { id?: unknown }).id)}`;
        const entryId = this.onTheWire.get(wire);
        if (entryId === undefined) return;
        this.onTheWire.delete(wire);
        this.answeredOffsetMs.set(entryId, Math.min(this.answeredOffsetMs.get(entryId) ?? Infinity, from.clockOffsetMs));
      }
    });
  }
}

/** The request's fields, times on the wall clock. */
function requestFields(op: KvOp): Record<string, unknown> {
  const { kind, ...fields } = op;
  const expiresAt = op.kind === 'put' ? op.expiresAt : undefined;
  return { op: kind, ...fields, ...(expiresAt === undefined ? {} : { expiresAt: expiresAt + WALL_CLOCK_START_MS }) };
}

/** What an ok reply says, in the history's terms (times in the history's time); I5 if it says it wrong. */
function okOutcome(op: KvOp, reply: OkReply, fail: Fail): Exclude<KvOutcome, { status: 'unknown' }> {
  const version = reply['version'];
  const malformed = () => {
    fail('I5', `a malformed reply to ${JSON.stringify(op)}: ${JSON.stringify(reply)}`);
    return { status: 'ok' as const, found: false };
  };
  const versioned = typeof version === 'number' && Number.isSafeInteger(version) && version > 0;
  switch (op.kind) {
    case 'get': {
      if (reply['found'] === false) return { status: 'ok', found: false };
      const { value, expiresAt } = reply;
      if (reply['found'] !== true || (typeof value !== 'string' && typeof value !== 'number') || !versioned || !(expiresAt === undefined || typeof expiresAt === 'number')) return malformed();
      return { status: 'ok', found: true, value, version, ...(expiresAt === undefined ? {} : { expiresAt: expiresAt - WALL_CLOCK_START_MS }) };
    }
    case 'put':
      return versioned ? { status: 'ok', version } : malformed();
    case 'del':
      return versioned && typeof reply['found'] === 'boolean' ? { status: 'ok', found: reply['found'], version } : malformed();
    case 'incr':
      return versioned && typeof reply['value'] === 'number' ? { status: 'ok', value: reply['value'], version } : malformed();
  }
}

function describe(op: KvOp): string {
  const condition = op.kind !== 'get' && op.ifVersion !== undefined ? ` if@${op.ifVersion}` : '';
  switch (op.kind) {
    case 'get':
      return `get ${op.key}`;
    case 'put': {
      const expiry = op.ttlMs !== undefined ? ` ttl ${op.ttlMs}` : op.expiresAt !== undefined ? ` until ${op.expiresAt.toFixed(0)}` : '';
      return `put ${op.key}=${op.value}${condition}${expiry}`;
    }
    case 'del':
      return `del ${op.key}${condition}`;
    case 'incr':
      return `incr ${op.key} by ${op.by}${condition}${op.ttlMs !== undefined ? ` ttl ${op.ttlMs}` : ''}`;
  }
}

function describeOutcome(op: KvOp, outcome: Exclude<KvOutcome, { status: 'unknown' }>): string {
  if (outcome.status === 'conflict') return `CONFLICT ${outcome.found ? `@${outcome.version}` : 'absent'}`;
  switch (op.kind) {
    case 'get':
      return outcome.found ? `${String(outcome.value)}@${outcome.version}${outcome.expiresAt === undefined ? '' : ` until ${outcome.expiresAt.toFixed(0)}`}` : 'not found';
    case 'del':
      return `found ${String(outcome.found)} @${outcome.version}`;
    case 'put':
      return `ok @${outcome.version}`;
    case 'incr':
      return `${String(outcome.value)}@${outcome.version}`;
  }
}
