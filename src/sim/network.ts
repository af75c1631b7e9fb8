/**
 * The simulated network: processes with addresses, connections with TCP's semantics.
 * Frames of one direction arrive in order, each after a seeded delay, and none is ever
 * dropped alone: a fault stalls a direction (a partition) or ends the whole connection
 * (a crash, a keepalive that gave up). What it models:
 *   - connect: refused at once when nobody listens (or the process is dead), timed out
 *     when a partition lies between the two processes;
 *   - partitions between any two processes, one-way or both ways: frames stall while it
 *     lasts and flow again when it heals; a connection stalled for longer than the
 *     keepalive gives up breaks, as a WebSocket with pings would;
 *   - a process crash: its connections break (the peer hears of it after a delay, unless
 *     a partition hides it) and its listeners go away; its own code hears nothing more;
 *   - a connection reset by the network: frames on their way are lost both ways, and each
 *     end hears the reset (what a client sees as a lost reply).
 * What it does not: byte-level loss or corruption (TCP hides those), send buffers filling
 * up (bufferedBytes is always 0), connection limits other than `connectionsMax`.
 */
import { Subject } from 'rxjs';
import { CLOSE_GRACE_MS, CONNECT_TIMEOUT_MS, KEEPALIVE_INTERVAL_MS } from '../constants.js';
import { KvError, assert } from '../errors.js';
import type { SimProcess, SimWorld } from './world.js';
import { CloseCode, type ConnectOptions, type Connection, type ConnectionKind, type ListenOptions, type Listener, type Transport } from '../env/transport.js';

export interface SimNetworkOptions {
  /** One-way delay of a frame, drawn uniformly in [min, max]. */
  delayMinMs?: number;
  delayMaxMs?: number;
  /** How long a stalled connection lasts before its keepalive gives up (two intervals). */
  keepaliveGiveUpMs?: number;
}

/**
 * What the network reports to whoever watches it (the scenario's trace and checks). Every
 * watcher of client frames reads their JSON: it is parsed once, for all of them, and
 * must not be changed by any.
 */
export class SimFrame {
  private parsed: unknown;
  private isParsed = false;

  constructor(
    readonly from: SimProcess,
    readonly to: SimProcess,
    readonly connection: number,
    readonly text: string,
  ) {}

  /** The frame's JSON (throws as JSON.parse does for a frame that is not JSON). */
  get json(): unknown {
    if (!this.isParsed) {
      this.parsed = JSON.parse(this.text);
      this.isParsed = true;
    }
    return this.parsed;
  }
}

interface SimListener {
  process: SimProcess;
  generation: number;
  options: ListenOptions;
  clients: number;
}

export class SimNetwork {
  private readonly listeners = new Map<string, SimListener>();
  /** Directions cut, as "from>to" addresses, with how many partitions cut each. */
  private readonly blocked = new Map<string, number>();
  /** Open connections, by their client end. */
  private readonly connections = new Set<SimEnd>();
  private nextConnection = 1;
  private nextPort = 30_000;
  /** Every frame as it is sent (before any delay): the scenario's checks watch it. */
  readonly sent$ = new Subject<SimFrame>();

  constructor(
    readonly world: SimWorld,
    private readonly options: SimNetworkOptions = {},
  ) {}

  /** The Transport a process sees: it listens and connects from its own address. */
  transportFor(process: SimProcess): Transport {
    const generation = process.generation;
    return {
      listen: (options) => this.listen(process, generation, options),
      connect: (url, options) => this.connect(process, generation, url, options),
    };
  }

  /** Stops frames from `from` to `to` (and back too, with `both`); returns what heals this one partition. */
  partition(from: SimProcess, to: SimProcess, both: boolean): () => void {
    const cuts = [cutOf(from, to), ...(both ? [cutOf(to, from)] : [])];
    for (const cut of cuts) this.blocked.set(cut, (this.blocked.get(cut) ?? 0) + 1);
    for (const connection of this.connections) connection.watchStall();
    let healed = false;
    return () => {
      if (healed) return;
      healed = true;
      for (const cut of cuts) {
        const count = this.blocked.get(cut) ?? 0;
        if (count <= 1) this.blocked.delete(cut);
        else this.blocked.set(cut, count - 1);
      }
      for (const connection of [...this.connections]) connection.healed();
    };
  }

  /** Lifts every partition. */
  heal(): void {
    this.blocked.clear();
    for (const connection of [...this.connections]) connection.healed();
  }

  isBlocked(from: SimProcess, to: SimProcess): boolean {
    return this.isCut(cutOf(from, to));
  }

  /** Whether a partition cuts the direction `cut` (cutOf) names: asked for every frame, so mostly of no partition at all. */
  isCut(cut: string): boolean {
    return this.blocked.size > 0 && this.blocked.has(cut);
  }

  /** Connection `id` is reset: what is on its way in either direction is lost. */
  reset(id: number): void {
    for (const connection of [...this.connections]) if (connection.id === id) connection.reset();
  }

  /** A process died: its connections break and its listeners are gone. */
  crashed(process: SimProcess): void {
    for (const [key, listener] of this.listeners) if (listener.process === process) this.listeners.delete(key);
    for (const connection of [...this.connections]) {
      if (connection.process === process || connection.peerProcess === process) connection.breakFrom(process);
    }
  }

  delayMs(): number {
    const min = this.options.delayMinMs ?? 0.2;
    const max = this.options.delayMaxMs ?? 2;
    return min + this.world.random.fraction() * (max - min);
  }

  get keepaliveGiveUpMs(): number {
    return this.options.keepaliveGiveUpMs ?? 2 * KEEPALIVE_INTERVAL_MS;
  }

  /** A connection both of whose ends are gone is forgotten. */
  forget(connection: SimEnd): void {
    this.connections.delete(connection);
  }

  private async listen(process: SimProcess, generation: number, options: ListenOptions): Promise<Listener> {
    assert(process.isAlive && process.generation === generation, `${process.name} listens while alive`);
    const port = options.port === 0 ? this.nextPort++ : options.port;
    const key = `${process.address}:${port}`;
    assert(!this.listeners.has(key), `${key} is free`);
    const listener: SimListener = { process, generation, options, clients: 0 };
    this.listeners.set(key, listener);
    return {
      url: `ws://${process.address}:${port}`,
      host: process.address,
      port,
      counts: () => ({ client: listener.clients, peer: 0, handshaking: 0 }),
      close: async () => {
        if (this.listeners.get(key) === listener) this.listeners.delete(key);
      },
    };
  }

  private connect(process: SimProcess, generation: number, url: string, options: ConnectOptions): Promise<Connection> {
    const { hostname, port } = new URL(url);
    const key = `${hostname}:${port}`;
    const kind = options.kind ?? 'client';
    return new Promise((resolve, reject) => {
      const refuse = (why: string) => reject(new KvError('UNAVAILABLE', `cannot connect to ${url}: ${why}`));
      const target = this.listeners.get(key);
      // The SYN and the SYN-ACK each cross the network once.
      if (!target) {
        process.clock.after(this.delayMs() * 2, () => refuse('connection refused'));
        return;
      }
      const there = target.process;
      if (this.isBlocked(process, there) || this.isBlocked(there, process)) {
        process.clock.after(options.timeoutMs ?? CONNECT_TIMEOUT_MS, () => refuse('timed out'));
        return;
      }
      process.clock.after(this.delayMs() * 2, () => {
        if (this.listeners.get(key) !== target || !there.isAlive || there.generation !== target.generation) return refuse('connection refused');
        if (this.isBlocked(process, there) || this.isBlocked(there, process)) {
          // A partition began during the handshake: the SYN-ACK never comes.
          process.clock.after(Math.max(0, (options.timeoutMs ?? CONNECT_TIMEOUT_MS) - this.delayMs() * 2), () => refuse('timed out'));
          return;
        }
        if (!process.isAlive || process.generation !== generation) return;
        if (kind === 'client' && target.clients >= target.options.connectionsMax) return refuse('server busy');
        const id = this.nextConnection++;
        const client = new SimEnd(this, id, process, kind, options.maxPayload);
        const server = new SimEnd(this, id, there, kind, target.options.maxPayload);
        client.pair(server);
        server.pair(client);
        client.isClientSide = true;
        this.connections.add(client);
        client.watchStall();
        if (kind === 'client') {
          target.clients += 1;
          server.frames$.subscribe({ complete: () => (target.clients -= 1) });
        }
        target.options.onConnection(server);
        resolve(client);
      });
    });
  }
}

/** A direction between two processes, as partitions cut it. */
function cutOf(from: SimProcess, to: SimProcess): string {
  return `${from.address}>${to.address}`;
}

/** One direction of a connection: each frame arrives after its own delay, in order; a partition stalls it. */
class Pipe {
  /** Frames sent and not yet delivered, each with its arrival time; `close` is the sender's close. */
  private readonly queue: { text?: string; close?: true; atMs: number }[] = [];
  private cancelNext: (() => void) | undefined;
  private lastArrivalMs = 0;
  /** The direction it travels, as partitions cut it (a process keeps its address). */
  private readonly cut: string;

  constructor(
    private readonly network: SimNetwork,
    readonly from: SimEnd,
    readonly to: SimEnd,
  ) {
    this.cut = cutOf(from.process, to.process);
  }

  send(text: string): void {
    this.queue.push({ text, atMs: this.arrival() });
    this.flow();
  }

  /** The sender closed: the peer hears of it after what was sent before. */
  finish(): void {
    this.queue.push({ close: true, atMs: this.arrival() });
    this.flow();
  }

  /** Drops what is unsent (an abort, a crash). */
  discard(): void {
    this.queue.length = 0;
    this.cancelNext?.();
    this.cancelNext = undefined;
  }

  get isBlocked(): boolean {
    return this.network.isCut(this.cut);
  }

  /** Frames wait behind the previous one's arrival: a connection pipelines, it never reorders. */
  private arrival(): number {
    this.lastArrivalMs = Math.max(this.network.world.nowMs + this.network.delayMs(), this.lastArrivalMs);
    return this.lastArrivalMs;
  }

  /** Schedules the next delivery, unless one is pending or the pipe is stalled. */
  flow(): void {
    if (this.to.isGone) this.discard();
    const head = this.queue[0];
    if (!head || this.cancelNext || this.isBlocked || this.to.isGone) return;
    if (this.to.isPaused && head.text !== undefined) return;
    const world = this.network.world;
    this.cancelNext = world.schedule(head.atMs - world.nowMs, () => {
      this.cancelNext = undefined;
      if (this.isBlocked || this.to.isGone || (this.to.isPaused && this.queue[0]?.text !== undefined)) return;
      const next = this.queue.shift()!;
      if (next.text !== undefined) this.to.receive(next.text);
      else this.to.closedByPeer();
      this.flow();
    });
  }

  /** A partition healed: what stalled leaves now, each frame after a fresh delay. */
  resumeAfterStall(): void {
    if (this.cancelNext || this.queue.length === 0) return;
    this.lastArrivalMs = 0;
    for (const item of this.queue) item.atMs = this.arrival();
    this.flow();
  }
}

class SimEnd implements Connection {
  private readonly frames = new Subject<string>();
  private readonly drains = new Subject<void>();
  readonly frames$ = this.frames.asObservable();
  readonly drain$ = this.drains.asObservable();
  readonly bufferedBytes = 0;
  /** The simulated network counts no bytes. */
  readonly bytesRead = 0;
  readonly bytesWritten = 0;
  private peer!: SimEnd;
  private outgoing!: Pipe;
  /** Sends are taken. */
  private open = true;
  private paused = false;
  /** Finished here: nothing more is read (its frames$ completed, or its process died). */
  private gone = false;
  private stallCheck: (() => void) | undefined;
  /** Set on the end that dialed. */
  isClientSide = false;

  constructor(
    private readonly network: SimNetwork,
    readonly id: number,
    readonly process: SimProcess,
    readonly kind: ConnectionKind,
    private readonly maxPayload: number,
  ) {}

  pair(peer: SimEnd): void {
    this.peer = peer;
    this.outgoing = new Pipe(this.network, this, peer);
  }

  get peerProcess(): SimProcess {
    return this.peer.process;
  }

  get remoteAddress(): string {
    return this.peer.process.address;
  }

  get isOpen(): boolean {
    return this.open;
  }

  get isGone(): boolean {
    return this.gone;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  send(text: string): boolean {
    if (!this.open) return false;
    this.network.sent$.next(new SimFrame(this.process, this.peer.process, this.id, text));
    this.outgoing.send(text);
    return true;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.peer.outgoing.flow();
  }

  trust(): void {}

  /**
   * As ws does: sends stop at once; frames already on their way in are still read until
   * the peer's close arrives, or CLOSE_GRACE_MS passes without it.
   */
  close(_code: number = CloseCode.Normal, _reason = ''): void {
    if (!this.open) return;
    this.open = false;
    this.outgoing.finish();
    this.network.world.schedule(CLOSE_GRACE_MS, () => {
      if (this.process.isAlive) this.end();
    });
  }

  /** Terminates: nothing unsent leaves, the peer hears a reset. */
  abort(): void {
    if (this.gone) return;
    this.open = false;
    this.outgoing.discard();
    this.outgoing.finish();
    this.end();
  }

  receive(text: string): void {
    if (this.gone) return;
    if (text.length > this.maxPayload / 4 && Buffer.byteLength(text) > this.maxPayload) {
      // ws closes the connection (1009) when a frame is over maxPayload.
      this.abort();
      return;
    }
    this.frames.next(text);
  }

  /** The peer's close (or reset) reached this end: answered with a close, then finished. */
  closedByPeer(): void {
    if (this.open) {
      this.open = false;
      this.outgoing.finish();
    }
    this.end();
  }

  /** A partition began or a connection opened across one: if it stays stalled, its keepalive gives up. */
  watchStall(): void {
    if (this.stallCheck || !this.stalls()) return;
    this.stallCheck = this.network.world.schedule(this.network.keepaliveGiveUpMs, () => {
      this.stallCheck = undefined;
      if (!this.stalls()) return;
      this.breakBoth();
    });
  }

  /**
   * The partition is gone: stalled frames flow again. A peer that died behind it answers
   * the survivor's next keepalive ping with a reset, within one interval.
   */
  healed(): void {
    if (!this.stalls()) {
      this.stallCheck?.();
      this.stallCheck = undefined;
    }
    this.outgoing.resumeAfterStall();
    this.peer.outgoing.resumeAfterStall();
    const [dead, live] = this.gone && !this.peer.gone ? [this as SimEnd, this.peer] : [this.peer, this as SimEnd];
    if (dead.gone && !live.gone && !dead.process.isAlive) {
      this.network.world.schedule((this.network.world.random.fraction() * this.network.keepaliveGiveUpMs) / 2, () => live.breakHere());
    }
  }

  /** `process` died: its end falls silent, the other end hears the reset after a delay. */
  breakFrom(process: SimProcess): void {
    const [dead, live] = this.process === process ? [this as SimEnd, this.peer] : [this.peer, this as SimEnd];
    dead.open = false;
    dead.gone = true;
    dead.outgoing.discard();
    dead.forgetIfDone();
    if (live.gone) return;
    // A partition hides the reset: the survivor's keepalive finds out.
    const delayMs = dead.outgoing.isBlocked ? this.network.keepaliveGiveUpMs : this.network.delayMs();
    this.network.world.schedule(delayMs, () => live.breakHere());
  }

  /** Both ends break now, with nothing more delivered. */
  reset(): void {
    this.breakBoth();
  }

  private breakBoth(): void {
    this.breakHere();
    this.peer.breakHere();
  }

  /** The connection is gone for this end, with no close handshake (a reset, a keepalive). */
  private breakHere(): void {
    this.open = false;
    this.outgoing.discard();
    this.end();
  }

  private stalls(): boolean {
    return !this.gone && !this.peer.gone && (this.outgoing.isBlocked || this.peer.outgoing.isBlocked);
  }

  private end(): void {
    if (this.gone) return;
    this.gone = true;
    this.frames.complete();
    this.drains.complete();
    this.forgetIfDone();
  }

  private forgetIfDone(): void {
    if (this.gone && this.peer.gone) {
      this.stallCheck?.();
      this.peer.stallCheck?.();
      this.network.forget(this.isClientSide ? this : this.peer);
    }
  }
}
