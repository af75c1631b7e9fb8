/**
 * A node's answers to clients: on the primary, reads and writes through its role; on any
 * other node NOT_PRIMARY naming the primary of the view it holds (or UNAVAILABLE before
 * it holds one). Replies are built as text: a batch's replies are many, and each is small.
 */
import { LIST_PAGE_BYTES_MAX, PRIMARY_ADDRESS_TTL_MS } from '../constants.js';
import type { Clock } from '../env/environment.js';
import { KvError, NOTHING_APPLIED, assertNever } from '../errors.js';
import type { HubClient } from '../hub/hub-client.js';
import type { Answer, ClientRequest, Entry, ListRequest, RequestId, WriteIntent } from '../protocol/messages.js';
import { okReply } from '../protocol/reply.js';
import { HELP_TEXT } from '../protocol/text-commands.js';
import { isExpired, type Store } from '../storage/store.js';
import type { PrimaryRole } from './primary-role.js';
import type { RoleState } from './role.js';

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

  constructor(private readonly options: ClientServiceOptions) {}

  handle(request: ClientRequest): Answer | Promise<Answer> {
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

function idText(id: RequestId): string {
  return typeof id === 'number' ? String(id) : JSON.stringify(id);
}

/** `entry` unless it expired at `nowMs`: an expired key is absent to every read. */
function live(entry: Entry | undefined, nowMs: number): Entry | undefined {
  return entry === undefined || isExpired(entry.expiresAt, nowMs) ? undefined : entry;
}
