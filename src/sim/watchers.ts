/**
 * A watcher in the scenario: a client of its own watches every key from version 1 through
 * the faults (the client library resumes it on each new primary from the last version it
 * saw + 1). Afterwards every acknowledged change up to the last version it delivered must
 * have reached it exactly once, in version order, as the write that was acknowledged at
 * that version; and every event must name a write some client sent (or an expiry delete).
 * A watch the client gave up on (COMPACTED after a primary restarted with an empty log, or
 * no primary for its retry deadline) covers what it delivered until then.
 */
import type { Subscription } from 'rxjs';
import type { WatchEvent } from '../client/watch.js';
import type { SimCluster } from './cluster.js';
import type { HistoryEntry } from './linearizability.js';
import type { Fail, Trace } from './trace.js';
import type { SimWorld } from './world.js';

const WATCHER_ADDRESS = '127.0.1.240';
const WATCHER_REQUEST_TIMEOUT_MS = 5_000;

export class SimWatcher {
  private readonly events: WatchEvent[] = [];
  private ended: string | undefined;
  private subscription: Subscription | undefined;

  constructor(
    private readonly world: SimWorld,
    private readonly cluster: SimCluster,
    private readonly trace: Trace,
  ) {}

  start(): void {
    const process = this.world.process('watcher', WATCHER_ADDRESS);
    const client = this.cluster.client(process, WATCHER_REQUEST_TIMEOUT_MS);
    this.subscription = client.watch({ prefix: '' }, { fromVersion: 1 }).subscribe({
      next: (event) => this.events.push(event),
      error: (error: unknown) => {
        this.ended = String(error);
        this.trace.log(`watcher: the watch ended after version ${this.lastVersion}: ${this.ended}`);
      },
    });
  }

  stop(): void {
    this.subscription?.unsubscribe();
  }

  private get lastVersion(): number {
    return this.events.at(-1)?.version ?? 0;
  }

  /** The checks above, against the clients' history; `fail` on the first that breaks. */
  check(history: readonly HistoryEntry[], fail: Fail): { events: number; covered: number } {
    const covered = this.lastVersion;
    const byVersion = new Map<number, WatchEvent>();
    let previous = 0;
    for (const event of this.events) {
      if (event.version <= previous) return fail('watch', `event at version ${event.version} after ${previous}: not in version order, or twice`), { events: this.events.length, covered };
      previous = event.version;
      byVersion.set(event.version, event);
    }
    const sent = new Set<string>();
    for (const entry of history) {
      const { op, outcome } = entry;
      if (op.kind === 'put') sent.add(`put ${op.key} ${JSON.stringify(op.value)}`);
      if (op.kind === 'incr' || op.kind === 'del') sent.add(`${op.kind} ${op.key}`);
      if (outcome.status !== 'ok' || outcome.version === undefined || outcome.version > covered) continue;
      const event = byVersion.get(outcome.version);
      const expected = op.kind === 'put' ? { type: 'put', key: op.key, value: op.value }
        : op.kind === 'incr' ? { type: 'put', key: op.key, value: outcome.value }
        : op.kind === 'del' && outcome.found ? { type: 'del', key: op.key }
        : undefined;
      const seen = event === undefined ? undefined : { type: event.type, key: 'key' in event ? event.key : undefined, ...(event.type === 'put' ? { value: event.value } : {}) };
      if (expected === undefined) {
        if (event !== undefined && op.kind === 'del') fail('watch', `a del of ${op.key} that found nothing (version ${outcome.version}) sent ${JSON.stringify(event)}`);
        continue;
      }
      if (JSON.stringify(seen) !== JSON.stringify(expected)) {
        fail('watch', `the ${op.kind} of ${op.key} acknowledged at version ${outcome.version} reached the watcher as ${event === undefined ? 'nothing' : JSON.stringify(event)}, not ${JSON.stringify(expected)}`);
        return { events: this.events.length, covered };
      }
    }
    for (const event of this.events) {
      if (event.type === 'put' && !(sent.has(`put ${event.key} ${JSON.stringify(event.value)}`) || sent.has(`incr ${event.key}`))) {
        fail('watch', `an event names a write no client sent: ${JSON.stringify(event)}`);
        break;
      }
    }
    return { events: this.events.length, covered };
  }
}
