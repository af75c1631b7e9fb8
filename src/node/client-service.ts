/**
 * A node's answers to clients: on the primary, reads and writes through its role; on any
 * other node NOT_PRIMARY naming the primary of the view it holds (or UNAVAILABLE before
 * it holds one). Replies are built as text: a batch's replies are many, and each is small.
 */
import { LIST_PAGE_BYTES_MAX, PRIMARY_ADDRESS_TTL_MS, WATCHES_PER_CONNECTION_MAX } from '../constants.js';
import type { Clock } from '../env/environment.js';
import { KvError, NOTHING_APPLIED, assertNever } from '../errors.js';
import type { HubClient } from '../hub/hub-client.js';
import type { Answer, ClientRequest, Entry, ListRequest, RequestId, UnwatchRequest, WatchRequest, WriteIntent } from '../protocol/messages.js';
import { okReply } from '../protocol/reply.js';
import { Followed, type Channel, type Handled } from '../protocol/serve.js';
import { HELP_TEXT } from '../protocol/text-commands.js';
import { isExpired, type Store } from '../storage/store.js';
import type { PrimaryRole } from './primary-role.js';
import type { RoleState } from './role.js';
import type { Watcher } from './watch.js';

export interface ClientServiceOptions {
  name: string;
  clock: Clock;
  store: Store;
  hub: HubClient;
  /** The node's role now (the object it holds, not a copy). */
  role(): RoleState;
}

export class ClientService {
  private primaryAddress: { at: number; name: string; address: Promise<string | undefined> } | undefined;
  /** Each connection's active watches, by their request's id: they end when it closes. */
  private readonly watchesByChannel = new Map<Channel, Map<string, Watcher>>();

  constructor(private readonly options: ClientServiceOptions) {}

  handle(request: ClientRequest, channel: Channel): Handled | Promise<Handled> {
    switch (request.type) {
      case 'get':
        return this.get(request.id, request.key);
      case 'put': {
        const { key, valueJson, ifVersion, expiry, tag } = request;
        return this.write(request.id, { kind: 'put', key, valueJson, ifVersion, expiry, tag });
      }
      case 'del':
        return this.write(request.id, { kind: 'del', key: request.key, ifVersion: request.ifVersion, tag: request.tag });
      case 'incr': {
        const { key, by, ifVersion, expiry, tag } = request;
        return this.write(request.id, { kind: 'incr', key, by, ifVersion, expiry, tag });
      }
      case 'clear':
        return this.write(request.id, { kind: 'clear', prefix: request.prefix, limit: request.limit, tag: request.tag });
      case 'list':
        return this.list(request);
      case 'watch':
        return this.watch(request, channel);
      case 'unwatch':
        return this.unwatch(request, channel);
      case 'help':
        return request.asText ? `${HELP_TEXT}\n` : okReply(request.id, { help: HELP_TEXT });
      default:
        return assertNever(request);
    }
  }

  /**
   * Answered as text with the stored JSON spliced in: at once, unless the last write to
   * the key is not yet on every replica; then what was read waits for it, so a read never
   * returns what a failover could lose.
   */
  private get(id: RequestId, key: string): Answer | Promise<Answer> {
    return this.reading(
      ({ pipeline }) => pipeline.read(key, () => live(this.options.store.read(key), pipeline.judgeNowMs())),
      (entry) => {
        const idJson = idText(id);
        if (entry === undefined) return `{"id":${idJson},"ok":true,"found":false}`;
        const expiry = entry.expiresAt === undefined ? '' : `,"expiresAt":${entry.expiresAt}`;
        return `{"id":${idJson},"ok":true,"found":true,"value":${entry.valueJson},"version":${entry.version}${expiry}}`;
      },
    );
  }

  /** A page of keys, read as a get is: answered once every replica holds what it read. */
  private list(request: ListRequest): Answer | Promise<Answer> {
    const { prefix, after, limit, values } = request;
    return this.reading(
      ({ pipeline }) => pipeline.readAll((seq) => ({ seq, page: this.options.store.list({ prefix, after, limit, values, bytesMax: LIST_PAGE_BYTES_MAX, nowMs: pipeline.judgeNowMs() }) })),
      ({ seq, page }) => {
        const entries = page.entries.map((entry) => {
          const value = entry.valueJson === undefined ? '' : `,"value":${entry.valueJson}`;
          const expiry = entry.expiresAt === undefined ? '' : `,"expiresAt":${entry.expiresAt}`;
          return `{"key":${JSON.stringify(entry.key)}${value},"version":${entry.version}${expiry}}`;
        });
        return `{"id":${idText(request.id)},"ok":true,"entries":[${entries.join(',')}],"more":${page.more},"version":${seq}}`;
      },
    );
  }

  /**
   * A read on the primary: refused unless its leases hold, and answered (after whatever it
   * waited for) only while they still do: a lease may lapse while a read waits for replicas.
   */
  private reading<T>(read: (primary: PrimaryRole) => T | Promise<T>, answer: (value: T) => Answer): Answer | Promise<Answer> {
    const state = this.options.role();
    if (state.kind !== 'leading') return this.notPrimary(state);
    const { primary } = state;
    const refused = primary.readError();
    if (refused) throw refused;
    const answered = (value: T): Answer => {
      const lapsed = primary.readError();
      if (lapsed) throw lapsed;
      return answer(value);
    };
    const value = read(primary);
    return value instanceof Promise ? value.then(answered) : answered(value);
  }

  private write(id: RequestId, intent: WriteIntent): Promise<Answer> {
    const state = this.options.role();
    if (state.kind !== 'leading') return this.notPrimary(state);
    const { primary } = state;
    const refused = primary.writeError();
    if (refused) return Promise.reject(refused);
    return primary.pipeline.submit(intent).then((reply) => `{"id":${idText(id)},"ok":true,${reply}}`);
  }

  /**
   * Starts a watch: registered, with its history taken, in one step once every replica
   * holds what this node held when it took over; the reply carries the last acknowledged
   * version, and the history and events follow it (watch.ts).
   */
  private watch(request: WatchRequest, channel: Channel): Handled | Promise<Handled> {
    const state = this.options.role();
    if (state.kind !== 'leading') return this.notPrimary(state);
    const { primary } = state;
    const refused = primary.readError();
    if (refused) throw refused;
    const watches = this.watchesOf(channel);
    const idKey = watchKey(request.id);
    // A text command's watch (id null) takes the place of the connection's earlier one.
    if (request.replaces) watches.get(idKey)?.end();
    if (watches.has(idKey)) throw new KvError('BAD_REQUEST', `a watch with id ${idText(request.id)} is active on this connection: unwatch it, or give this one another id`);
    if (watches.size >= WATCHES_PER_CONNECTION_MAX) throw new KvError('BAD_REQUEST', `a connection holds at most ${WATCHES_PER_CONNECTION_MAX} watches: unwatch one, or open another connection`);
    const begin = (): Followed => {
      // The connection may have closed, or another watch taken the id, while this one waited.
      if (!channel.isOpen) throw new KvError('UNAVAILABLE', 'the connection closed');
      if (watches.has(idKey)) throw new KvError('BAD_REQUEST', `a watch with id ${idText(request.id)} is active on this connection`);
      const watcher = primary.watches.watch({
        id: request.id,
        target: request.target,
        fromVersion: request.fromVersion,
        channel,
        onEnd: (ended) => {
          if (watches.get(idKey) === ended) watches.delete(idKey);
        },
      });
      watches.set(idKey, watcher);
      return new Followed(`{"id":${idText(request.id)},"ok":true,"watching":true,"version":${primary.watches.version}}`, () => watcher.start());
    };
    const settled = primary.pipeline.settled();
    return settled ? settled.then(begin) : begin();
  }

  /** Ends a watch of this connection; no event of it follows the reply. Unknown ids are no error (it may have been cancelled). */
  private unwatch(request: UnwatchRequest, channel: Channel): Answer {
    this.watchesByChannel.get(channel)?.get(watchKey(request.watch))?.end();
    return `{"id":${idText(request.id)},"ok":true}`;
  }

  private watchesOf(channel: Channel): Map<string, Watcher> {
    let watches = this.watchesByChannel.get(channel);
    if (!watches) {
      const created = new Map<string, Watcher>();
      this.watchesByChannel.set(channel, created);
      // complete, not next: a channel that closed already completes at once, and nothing stays behind.
      channel.closed$.subscribe({
        complete: () => {
          this.watchesByChannel.delete(channel);
          for (const watcher of [...created.values()]) watcher.end();
        },
      });
      watches = created;
    }
    return watches;
  }

  /**
   * NOT_PRIMARY with the primary's address. The address is asked of the hub at most once
   * per PRIMARY_ADDRESS_TTL_MS, whatever the number of clients: a flood of requests at a
   * replica must not become a flood of hub requests that crowds out the node's own.
   */
  private async notPrimary(state: Exclude<RoleState, { kind: 'leading' }>): Promise<never> {
    const { name, clock, hub } = this.options;
    if (state.kind === 'unassigned') throw new KvError('UNAVAILABLE', `${name} has no view yet; retry shortly`, NOTHING_APPLIED);
    const { view } = state;
    if (view.primary === name) throw new KvError('UNAVAILABLE', `${name} is taking over as the primary of view ${view.epoch}; retry shortly`, NOTHING_APPLIED);
    const now = clock.now();
    const cached = this.primaryAddress;
    if (!cached || cached.name !== view.primary || now - cached.at > PRIMARY_ADDRESS_TTL_MS) {
      this.primaryAddress = { at: now, name: view.primary, address: hub.resolve(view.primary).catch(() => undefined) };
    }
    const primary = await this.primaryAddress!.address;
    throw new KvError('NOT_PRIMARY', `${name} is not the primary; send requests to ${view.primary} (view ${view.epoch})`, {
      ...(primary ? { primary } : {}),
    });
  }
}

/** A request id as a Map key: a number and the string of its digits are different ids. */
function watchKey(id: RequestId): string {
  return typeof id === 'number' ? `n${id}` : id === null ? 'null' : `s${id}`;
}

function idText(id: RequestId): string {
  return typeof id === 'number' ? String(id) : JSON.stringify(id);
}

/** `entry` unless it expired at `nowMs`: an expired key is absent to every read. */
function live(entry: Entry | undefined, nowMs: number): Entry | undefined {
  return entry === undefined || isExpired(entry.expiresAt, nowMs) ? undefined : entry;
}
