/**
 * A watch as the client sees it (PROTOCOL.md, "Watching changes"): an Observable of a key's
 * or a prefix's changes that outlives connections. Each try watches on the current primary
 * from the last version delivered + 1; a dropped connection, a failover, a `cancelled`
 * event or an UNAVAILABLE answer end the try and the next one resumes there, after a
 * backoff. An event at or below the last version delivered is dropped, so the subscriber
 * sees each change once, in version order.
 *
 * Nothing is buffered here: each event frame is passed to the subscriber as it is read. A
 * subscriber that keeps up sees everything; one that does not is cut off by the node
 * (`cancelled`) and resumed from where it got to.
 */
import { Observable, catchError, concat, defer, retry, throwError, timer } from 'rxjs';
import { backoffDelayMs } from '../backoff.js';
import type { Environment } from '../env/environment.js';
import { KvError, assert, toKvError } from '../errors.js';
import type { Json } from '../protocol/messages.js';
import type { EventFrame, RpcChannel } from '../protocol/rpc-channel.js';
import { replyCount } from '../protocol/reply.js';
import type { ListPage } from './data-api.js';

/** What to watch: one key, or every key with a prefix ("" for all). */
export type WatchTarget = { key: string } | { prefix: string };

export interface WatchOptions {
  /** Send every change at or after this version first (from the node's log); without it, only changes after the watch began. */
  fromVersion?: number;
  /**
   * When the changes asked for are no longer kept (COMPACTED): 'error' (the default) ends
   * the watch with a CompactedError; 'relist' lists the target instead and emits a
   * `snapshot` event, then each entry as a `put`, then the changes after the list.
   */
  onCompacted?: 'error' | 'relist';
}

/** One change, as the node sent it; `version` is the write's own. */
export type WatchEvent =
  | { type: 'put'; key: string; value: Json; version: number }
  | { type: 'del'; key: string; version: number }
  | { type: 'clear'; prefix: string; keys: string[]; version: number }
  /**
   * Only with `onCompacted: 'relist'`: forget what you know of the target. Its entries
   * follow as `put` events carrying each key's own version (lower than `version`, or a
   * little above it for a key written while the list was read), then the changes after
   * `version`.
   */
  | ({ type: 'snapshot'; version: number } & WatchTarget);

/** An event the node sends (every WatchEvent but the client's own snapshot). */
type ChangeEvent = Exclude<WatchEvent, { type: 'snapshot' }>;

/** The changes asked for are older than the node keeps: `version` is the oldest it has. */
export class CompactedError extends KvError {
  readonly version: number;

  constructor(message: string, version: number) {
    super('COMPACTED', message, { version });
    this.version = version;
  }

  /** The typed form of a COMPACTED from the wire, whose details carry version. */
  static from(error: KvError): CompactedError | KvError {
    const { version } = error.details;
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) {
      return new KvError('INTERNAL', `malformed reply: a COMPACTED carries the oldest version kept (${error.message})`);
    }
    return new CompactedError(error.message, version);
  }
}

/** What a watch needs of the client: the connection to the primary, and a way to list. */
export interface WatchHost {
  env: Pick<Environment, 'clock' | 'random'>;
  /** The connection to the current primary, looked up and dialed when there is none. */
  channel(): Promise<RpcChannel>;
  /** Closes the connection, so the next `channel()` looks the primary up again. */
  drop(): void;
  list(prefix: string): AsyncIterable<ListPage>;
  isClosed(): boolean;
  requestTimeoutMs: number;
  /** How long the watch is retried while no primary takes it, counted from when it last did. */
  retryDeadlineMs: number;
}

/** Ends a try so that the next one starts at once: the relist is done. */
class ResumeNow extends Error {}

/** Where a watch has got to, shared by its tries. */
class Progress {
  /** The last version delivered (or the one before `fromVersion`); undefined: none yet, and no fromVersion. */
  last: number | undefined;
  /**
   * Keys a relist delivered at versions above the list's own, with those versions: the
   * watch that follows sends them again, and they are skipped (PROTOCOL.md, list). Only
   * writes made while the list was read land here; emptied once the watch passes them.
   */
  readonly listedAbove = new Map<string, number>();
  /** Tries in a row that got no reply (the backoff's count); a reply resets it, and the deadline. */
  failures = 0;
  deadlineMs: number;

  constructor(fromVersion: number | undefined, nowMs: number, retryDeadlineMs: number) {
    this.last = fromVersion === undefined ? undefined : fromVersion - 1;
    this.deadlineMs = nowMs + retryDeadlineMs;
  }

  /** Whether `event` is new: above the last version delivered and not one a relist gave already. */
  admit(event: ChangeEvent): boolean {
    if (this.last !== undefined && event.version <= this.last) return false;
    this.last = event.version;
    if (this.listedAbove.size === 0) return true;
    const listed = event.type === 'clear' ? undefined : this.listedAbove.get(event.key);
    for (const [key, version] of this.listedAbove) if (version <= event.version) this.listedAbove.delete(key);
    return listed === undefined || listed < event.version;
  }
}

export function watch$(host: WatchHost, target: WatchTarget, options: WatchOptions = {}): Observable<WatchEvent> {
  assert('key' in target ? typeof target.key === 'string' : typeof target.prefix === 'string', 'a watch target is { key } or { prefix }');
  const { fromVersion } = options;
  if (fromVersion !== undefined && (!Number.isSafeInteger(fromVersion) || fromVersion < 1)) {
    return throwError(() => new KvError('BAD_REQUEST', `fromVersion must be a positive integer, not ${fromVersion}`));
  }
  return defer(() => {
    const progress = new Progress(fromVersion, host.env.clock.now(), host.retryDeadlineMs);
    return defer(() => oneTry$(host, target, progress, options)).pipe(
      retry({
        delay: (error: unknown) => {
          if (error instanceof ResumeNow) return timer(0, host.env.clock.scheduler);
          const kvError = toKvError(error);
          // The retry deadline counts from the first failure since the watch last worked, not
          // from its last reply: a watch that ran for minutes still gets its whole deadline.
          if (progress.failures === 0) progress.deadlineMs = host.env.clock.now() + host.retryDeadlineMs;
          if (!resumable(kvError) || host.isClosed() || host.env.clock.now() >= progress.deadlineMs) return throwError(() => kvError);
          // Whoever answered may not be (or no longer be) the primary: look `kv` up again.
          if (kvError.code === 'NOT_PRIMARY' || kvError.code === 'UNAVAILABLE') host.drop();
          progress.failures += 1;
          return timer(backoffDelayMs(progress.failures, host.env.random.fraction()), host.env.clock.scheduler);
        },
      }),
    );
  });
}

/** Codes after which a watch is tried again: nothing was lost, the node just could not (or no longer) serve it. */
function resumable(error: KvError): boolean {
  return error.code === 'UNAVAILABLE' || error.code === 'NOT_PRIMARY' || error.code === 'NOT_FOUND';
}

/**
 * One watch on one connection: the events it delivers, until the connection closes, the
 * node cancels it (an UNAVAILABLE error, resumable) or the subscriber leaves (then
 * `unwatch` is sent on that connection). A COMPACTED ends it with a CompactedError, or
 * with a relist and then ResumeNow.
 */
function oneTry$(host: WatchHost, target: WatchTarget, progress: Progress, options: WatchOptions): Observable<WatchEvent> {
  const attempt$ = new Observable<WatchEvent>((subscriber) => {
    let channel: RpcChannel | undefined;
    let watchId: number | undefined;
    let ended = false;
    let stopped = false;
    const inner = { unsubscribe: () => {} };
    host.channel().then(
      (opened) => {
        if (stopped) return;
        channel = opened;
        if (!opened.connection.isOpen) {
          subscriber.error(new KvError('UNAVAILABLE', 'the connection to the primary is closing'));
          return;
        }
        const fromVersion = progress.last === undefined ? undefined : progress.last + 1;
        const subscription = opened.stream$({ op: 'watch', ...target, fromVersion }, host.requestTimeoutMs).subscribe({
          next: (frame) => {
            if ('reply' in frame) {
              watchId = frame.id;
              // Without fromVersion the watch starts after the reply's version: resume from there.
              progress.last ??= replyCount(frame.reply, 'version');
              progress.deadlineMs = host.env.clock.now() + host.retryDeadlineMs;
              progress.failures = 0;
              return;
            }
            let event: ChangeEvent;
            try {
              event = eventOf(frame);
            } catch (error) {
              ended = true;
              subscriber.error(error);
              return;
            }
            if (progress.admit(event)) subscriber.next(event);
          },
          error: (error: unknown) => {
            ended = true;
            subscriber.error(error);
          },
        });
        inner.unsubscribe = () => subscription.unsubscribe();
      },
      (error: unknown) => subscriber.error(error),
    );
    return () => {
      stopped = true;
      inner.unsubscribe();
      // The subscriber left a watch that is still on at the node: end it there. Nothing
      // else is closed: the connection serves the client's other requests.
      if (!ended && watchId !== undefined && channel?.connection.isOpen) {
        channel.request({ op: 'unwatch', watch: watchId }).catch(() => undefined);
      }
    };
  });
  return attempt$.pipe(
    catchError((error: unknown) => {
      const kvError = toKvError(error);
      if (kvError.code !== 'COMPACTED') return throwError(() => kvError);
      const compacted = CompactedError.from(kvError);
      if (options.onCompacted !== 'relist' || !(compacted instanceof CompactedError)) return throwError(() => compacted);
      return concat(relist$(host, target, progress), throwError(() => new ResumeNow()));
    }),
  );
}

/**
 * The target's entries now: a `snapshot` event, then each entry as a `put`. The watch
 * resumes after the first page's version; keys listed above it are remembered so their
 * events are not delivered twice. One page is held at a time.
 */
function relist$(host: WatchHost, target: WatchTarget, progress: Progress): Observable<WatchEvent> {
  return new Observable<WatchEvent>((subscriber) => {
    let stopped = false;
    void (async () => {
      let snapshotVersion: number | undefined;
      progress.listedAbove.clear();
      const prefix = 'key' in target ? target.key : target.prefix;
      for await (const page of host.list(prefix)) {
        if (stopped) return;
        if (snapshotVersion === undefined) {
          snapshotVersion = page.version;
          subscriber.next({ type: 'snapshot', ...target, version: snapshotVersion });
        }
        for (const entry of page.entries) {
          // A key watch lists the key as a prefix: only the key itself is its.
          if ('key' in target && entry.key !== target.key) continue;
          if (entry.value === undefined) throw new KvError('INTERNAL', 'malformed reply: a relist entry needs a value');
          if (entry.version > snapshotVersion) progress.listedAbove.set(entry.key, entry.version);
          subscriber.next({ type: 'put', key: entry.key, value: entry.value, version: entry.version });
          if (stopped) return;
        }
      }
      assert(snapshotVersion !== undefined, 'a list yields at least one page');
      progress.last = snapshotVersion;
      subscriber.complete();
    })().catch((error: unknown) => subscriber.error(toKvError(error)));
    return () => {
      stopped = true;
    };
  });
}

/** An event frame as a WatchEvent, checked once here; a `cancelled` is a resumable UNAVAILABLE. */
function eventOf(frame: EventFrame): ChangeEvent {
  const { fields } = frame;
  const version = fields['version'];
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) throw malformed(frame.event, 'version must be a non-negative integer');
  switch (frame.event) {
    case 'put': {
      const { key, value } = fields;
      if (typeof key !== 'string' || value === undefined || value === null) throw malformed('put', 'it needs a key and a value');
      return { type: 'put', key, value: value as Json, version };
    }
    case 'del': {
      const { key } = fields;
      if (typeof key !== 'string') throw malformed('del', 'it needs a key');
      return { type: 'del', key, version };
    }
    case 'clear': {
      const { prefix, keys } = fields;
      if (typeof prefix !== 'string' || !Array.isArray(keys) || !keys.every((key) => typeof key === 'string')) throw malformed('clear', 'it needs a prefix and keys');
      return { type: 'clear', prefix, keys: keys as string[], version };
    }
    case 'cancelled': {
      const error = fields['error'] as { code?: unknown; message?: unknown } | undefined;
      const why = typeof error?.message === 'string' ? error.message : 'no reason given';
      throw new KvError('UNAVAILABLE', `the node cancelled the watch at version ${version}: ${why}`);
    }
    default:
      throw malformed(frame.event, 'an event this client does not know');
  }
}

function malformed(event: string, why: string): KvError {
  return new KvError('INTERNAL', `malformed event "${event}": ${why}`);
}
