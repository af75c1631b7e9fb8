/**
 * The pbkv client: finds the primary through the hub (service `kv`, the view's primary),
 * keeps one connection to it, and turns the data API (PROTOCOL.md) into promises matched
 * by request id. It follows the view: on NOT_PRIMARY, on no primary known yet (NOT_FOUND)
 * or a primary that cannot be reached, it looks `kv` up again and retries with backoff
 * until its deadline.
 *
 * Every write (put, del, incr, clear) carries a request tag (PROTOCOL.md): this client's
 * random id and a number that grows with each write. The primary applies a tag at most
 * once and answers a retry with the first reply, so a write is retried on UNAVAILABLE too
 * (a timeout, a lost reply, a failover), as a read is. A new write waits while this
 * client's oldest unsettled one is REQUEST_TAG_WINDOW numbers behind: the primary
 * remembers no further back.
 */
import { defer, firstValueFrom, retry, throwError, type Observable } from 'rxjs';
import { backoff } from '../backoff.js';
import { CLIENT_ID_LENGTH_MAX, CLIENT_ID_RANDOM_BYTES, CLIENT_REPLY_FRAME_BYTES_MAX, CLIENT_RETRY_DEADLINE_MS, KV_SERVICE, REQUEST_TAG_WINDOW, REQUEST_TIMEOUT_MS } from '../constants.js';
import { KvError, NOTHING_APPLIED, assert, toKvError, type ErrorCode } from '../errors.js';
import type { Json, RequestTag } from '../protocol/messages.js';
import type { Environment } from '../env/environment.js';
import { realEnvironment } from '../transport/real-environment.js';
import { HubClient } from '../hub/hub-client.js';
import { replyCount } from '../protocol/reply.js';
import { ConflictError, entryOf, listPageOf, replyVersion, type ClearOptions, type DelOptions, type IncrOptions, type KvEntry, type ListOptions, type ListPage, type PutOptions } from './data-api.js';
import { RpcChannel, type OkReply } from '../protocol/rpc-channel.js';
import { Redialer } from '../transport/redialer.js';
import { watch$, type WatchEvent, type WatchOptions, type WatchTarget } from './watch.js';

export { CompactedError, type WatchEvent, type WatchOptions, type WatchTarget } from './watch.js';

export interface KvClientOptions {
  /** The directory hub, ws://host:port. */
  hubUrl: string;
  /** The service to look up; `kv` unless told otherwise. */
  service?: string;
  requestTimeoutMs?: number;
  /** How long a request is retried while no primary answers it (0: never retried). */
  retryDeadlineMs?: number;
  /** The network, clock and randomness (the real ones unless given). */
  env?: Environment;
}

/** Codes that say a try applied nothing, whatever tries before it may have done. */
const DEFINITE_CODES: ReadonlySet<ErrorCode> = new Set(['CONFLICT', 'BAD_REQUEST']);

export class KvClient {
  private readonly env: Environment;
  private readonly hub: HubClient;
  private readonly channel: Redialer<RpcChannel>;
  private lastAddress: string | undefined;
  /** The `client` of this client's request tags, picked once. */
  readonly id: string;
  private nextReq = 1;
  /** Request numbers of writes not yet settled, oldest first (a Set keeps insertion order). */
  private readonly unsettled = new Set<number>();
  /** Writes waiting for a request number, in order: each gets one as the window opens. */
  private readonly windowWaiters: { resolve(tag: RequestTag): void; reject(error: KvError): void }[] = [];
  private closed = false;

  constructor(private readonly options: KvClientOptions) {
    this.env = options.env ?? realEnvironment;
    this.id = `c-${this.env.random.hex(CLIENT_ID_RANDOM_BYTES)}`;
    assert(this.id.length <= CLIENT_ID_LENGTH_MAX, `client id ${this.id} fits CLIENT_ID_LENGTH_MAX`);
    this.hub = new HubClient(options.hubUrl, { requestTimeoutMs: options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS, env: this.env });
    this.channel = new Redialer(() => this.connect(), { env: this.env });
  }

  /** The value stored under `key`, or undefined. */
  async get(key: string): Promise<Json | undefined> {
    return (await this.getEntry(key))?.value;
  }

  /** The value stored under `key` with its version and expiry, or undefined. */
  async getEntry(key: string): Promise<KvEntry | undefined> {
    const reply = await this.request({ op: 'get', key });
    if (reply['found'] === false) return undefined;
    if (reply['found'] !== true) throw new KvError('INTERNAL', 'malformed reply: a get answers found: false, or found: true with a value');
    return entryOf(reply);
  }

  /**
   * Stores `value` under `key`; resolves with the write's version once the primary and
   * every replica hold it. `ifVersion`: only if the key is at that version (0: absent),
   * else a ConflictError. `ttlMs` or `expiresAt` (Unix ms): when the key expires; without
   * either, an earlier expiry is cleared.
   */
  async put(key: string, value: Json, options: PutOptions = {}): Promise<number> {
    if (value === null || value === undefined) throw new KvError('BAD_REQUEST', 'value must not be null');
    const { ifVersion, ttlMs, expiresAt } = options;
    const reply = await this.write({ op: 'put', key, value, ifVersion, ttlMs, expiresAt });
    return replyVersion(reply);
  }

  /** Deletes `key`; resolves with whether it existed. `ifVersion` as for put. */
  async del(key: string, options: DelOptions = {}): Promise<boolean> {
    return (await this.delEntry(key, options)).found;
  }

  /** del, resolving with the delete's own version too (an absent key's delete takes one as well). */
  async delEntry(key: string, options: DelOptions = {}): Promise<{ found: boolean; version: number }> {
    const reply = await this.write({ op: 'del', key, ifVersion: options.ifVersion });
    if (typeof reply['found'] !== 'boolean') throw new KvError('INTERNAL', 'malformed reply: a del answers found: true or false');
    return { found: reply['found'], version: replyVersion(reply) };
  }

  /**
   * Adds `by` to the number under `key` (an absent key counts as 0) and resolves with the
   * new value and version. A value that is not a number is BAD_REQUEST. Without `ttlMs` or
   * `expiresAt`, an expiry the key had is kept.
   */
  async incr(key: string, by = 1, options: IncrOptions = {}): Promise<{ value: number; version: number }> {
    const { ifVersion, ttlMs, expiresAt } = options;
    const reply = await this.write({ op: 'incr', key, by, ifVersion, ttlMs, expiresAt });
    const value = reply['value'];
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new KvError('INTERNAL', 'malformed reply: an incr answers its value as a finite number');
    return { value, version: replyVersion(reply) };
  }

  /**
   * The keys with `prefix` ("" for all) in their UTF-8 byte order, a page at a time: each
   * page is read after the last key of the one before, until `more` is false. Each page is
   * linearizable; the pages together are not one snapshot (PROTOCOL.md, list).
   */
  async *list(prefix: string, options: ListOptions = {}): AsyncGenerator<ListPage, void, undefined> {
    let after = options.after;
    for (;;) {
      // Fields left undefined are not sent (JSON leaves them out).
      const reply = await this.request({ op: 'list', prefix, after, limit: options.limit, values: options.values });
      const page = listPageOf(reply);
      yield page;
      const last = page.entries.at(-1);
      if (!page.more) return;
      // A page that says more follow but holds nothing would be asked for again forever.
      if (last === undefined) throw new KvError('INTERNAL', 'malformed reply: a list page says more follow but holds no entry');
      after = last.key;
    }
  }

  /**
   * Deletes every key with `prefix` ("" is every key of the cluster), as many clear writes
   * as it takes: each deletes at most `limit` keys (the node's default and most: 10,000) as
   * one write. Resolves with how many keys were deleted.
   */
  async clear(prefix: string, options: ClearOptions = {}): Promise<number> {
    let deleted = 0;
    for (;;) {
      const reply = await this.write({ op: 'clear', prefix, limit: options.limit });
      deleted += replyCount(reply, 'deleted');
      if (reply['more'] === false) return deleted;
      if (reply['more'] !== true) throw new KvError('INTERNAL', 'malformed reply: a clear answers more: true or false');
    }
  }

  /**
   * The changes of a key or of every key with a prefix, as they are acknowledged, until
   * unsubscribed (which sends `unwatch`; the connection stays for other requests).
   * `fromVersion`: changes from that version on first. Across failovers, dropped
   * connections and watches the node cancels, it watches again on the current primary
   * from the last version delivered + 1: each change is delivered once, in version order.
   * It errors when no primary takes it for the retry deadline, with a CompactedError when
   * the changes asked for are no longer kept (unless `onCompacted: 'relist'`: see
   * WatchOptions), or with the node's error for a bad request.
   */
  watch(target: WatchTarget, options: WatchOptions = {}): Observable<WatchEvent> {
    return watch$(
      {
        env: this.env,
        channel: () => this.channel.get(),
        drop: () => this.channel.drop(),
        list: (prefix) => this.list(prefix),
        isClosed: () => this.closed,
        requestTimeoutMs: this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
        retryDeadlineMs: this.options.retryDeadlineMs ?? CLIENT_RETRY_DEADLINE_MS,
      },
      target,
      options,
    );
  }

  /** A write with the next request tag: every retry of it carries the same one. */
  private async write(fields: Record<string, unknown>): Promise<OkReply> {
    const tag = await this.nextTag();
    try {
      return await this.request({ ...fields, client: tag.client, req: tag.req });
    } catch (error) {
      throw error instanceof KvError && error.code === 'CONFLICT' ? ConflictError.from(error) : error;
    } finally {
      this.unsettled.delete(tag.req);
      while (this.windowWaiters.length > 0 && this.windowOpen()) this.windowWaiters.shift()!.resolve(this.issueTag());
    }
  }

  /** The next request number, once this client's oldest unsettled write is less than the window behind it. */
  private nextTag(): RequestTag | Promise<RequestTag> {
    if (this.closed) throw new KvError('UNAVAILABLE', 'the client is closed', NOTHING_APPLIED);
    if (this.windowWaiters.length === 0 && this.windowOpen()) return this.issueTag();
    return new Promise((resolve, reject) => this.windowWaiters.push({ resolve, reject }));
  }

  private windowOpen(): boolean {
    const oldest = this.unsettled.values().next();
    return oldest.done === true || this.nextReq - oldest.value < REQUEST_TAG_WINDOW;
  }

  private issueTag(): RequestTag {
    const req = this.nextReq++;
    this.unsettled.add(req);
    return { client: this.id, req };
  }

  /** The hub's names and services. */
  status(): ReturnType<HubClient['status']> {
    return this.hub.status();
  }

  /**
   * Sends any request to the primary (for tools that speak the protocol directly),
   * following the view as the class comment says.
   */
  async request(fields: Record<string, unknown>): Promise<OkReply> {
    const deadline = this.env.clock.now() + (this.options.retryDeadlineMs ?? CLIENT_RETRY_DEADLINE_MS);
    const backoffDelay = backoff(this.env);
    // Whether the last try reached the primary's connection (tries run one at a time).
    let sent = false;
    // Once a try of a write may have been applied, the request's outcome stays unknown
    // whatever later tries say: a later NOT_FOUND or NOT_PRIMARY speaks only of itself.
    let mayBeApplied: KvError | undefined;
    const tries$ = defer(async () => {
      sent = false;
      const channel = await this.channel.get();
      // A connection this client is closing (after an error) is not used again: the
      // next try waits its backoff and dials anew.
      if (!channel.connection.isOpen) throw new KvError('UNAVAILABLE', 'the connection to the primary is closing');
      sent = true;
      return channel.request(fields);
    }).pipe(
      retry({
        delay: (error: unknown, attempt) => {
          const kvError = toKvError(error);
          // Whoever answered may not be (or no longer be) the primary: the next request looks
          // `kv` up again, whether this one is retried or not.
          if (kvError.code === 'NOT_PRIMARY' || kvError.code === 'UNAVAILABLE') this.channel.drop();
          if (sent && !isRead(fields) && kvError.code === 'UNAVAILABLE' && kvError.details['applied'] !== false) mayBeApplied ??= kvError;
          if (!this.closed && this.retryable(kvError, sent, fields) && this.env.clock.now() < deadline) return backoffDelay(kvError, attempt);
          // A CONFLICT or BAD_REQUEST is definite even then: the primary answers a tag it
          // applied with the first reply, so this try found nothing applied under it.
          if (mayBeApplied && kvError !== mayBeApplied && !DEFINITE_CODES.has(kvError.code)) {
            const outcome = new KvError('UNAVAILABLE', `${mayBeApplied.message}; the write may have been applied (the last try: ${kvError.code}: ${kvError.message})`);
            return throwError(() => outcome);
          }
          return throwError(() => kvError);
        },
      }),
    );
    return firstValueFrom(tries$);
  }

  /**
   * Whether a failed request may be sent again: it was surely not applied, it is a read,
   * or it is a tagged write (applied at most once, whatever became of the first try).
   */
  private retryable(error: KvError, sent: boolean, fields: Record<string, unknown>): boolean {
    if (!sent) return error.code === 'UNAVAILABLE' || error.code === 'NOT_FOUND';
    if (error.code === 'NOT_PRIMARY') return true;
    if (error.code !== 'UNAVAILABLE') return false;
    // The node said it applied nothing (no view yet, taking over, queue full).
    if (error.details['applied'] === false) return true;
    // The tag is older than the primary remembers: no retry can tell the outcome.
    if (error.details['expired'] === true) return false;
    return isRead(fields) || (fields['client'] !== undefined && fields['req'] !== undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    const closing = new KvError('UNAVAILABLE', 'the client is closed', NOTHING_APPLIED);
    for (const waiter of this.windowWaiters.splice(0)) waiter.reject(closing);
    await this.channel.close();
    await this.hub.close();
  }

  /** Looks the primary up and connects to it: on first use, and after the connection dropped. */
  private async connect(): Promise<RpcChannel> {
    // While the hub cannot be reached, the primary it named last is tried again: the
    // cluster goes on serving without its hub.
    const address = await this.hub.lookup(this.options.service ?? KV_SERVICE).then(
      (found) => (this.lastAddress = found.address),
      (error: unknown) => {
        if (this.lastAddress !== undefined && error instanceof KvError && error.code === 'UNAVAILABLE') return this.lastAddress;
        throw error;
      },
    );
    const connection = await this.env.transport.connect(address, { maxPayload: CLIENT_REPLY_FRAME_BYTES_MAX });
    return new RpcChannel(connection, this.env.clock, this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
  }
}

function isRead(fields: Record<string, unknown>): boolean {
  return fields['op'] === 'get' || fields['op'] === 'list';
}
