/**
 * pbkv as a Keyv 6 storage adapter (`pbkv/keyv`; keyv is an optional peer dependency):
 *
 *   const keyv = createKeyv({ hubUrl: 'ws://127.0.0.1:7400', namespace: 'cache' });
 *   const keyv = new Keyv({ store: new KeyvPbkv({ hubUrl }) });
 *
 * Keys: Keyv hands a store its keys as the caller wrote them and sets the store's
 * `namespace`; the pbkv key is `namespace:key` (just `key` without a namespace), so any
 * pbkv client reads a Keyv key by that name. `clear()` deletes the namespace's keys only,
 * with pbkv's clear of the prefix `namespace:`; without a namespace it refuses (it would
 * delete every key of the cluster), as Keyv's own adapters refuse a clear they cannot
 * keep to one namespace.
 *
 * Values, one of two ways (`values`):
 *   json        with Keyv's `serialization: false` (createKeyv sets both): Keyv passes the
 *               value itself, and it is stored as the pbkv value, so `pbkv get cache:k`
 *               prints what `keyv.set('k', ...)` wrote. It must be a value JSON keeps as it
 *               is: not null or undefined, no Buffer, Date, Map, BigInt, undefined field or
 *               non-finite number (BAD_REQUEST says which). A value any pbkv client wrote
 *               reads back as it is, strings included.
 *   serialized  (the default, for Keyv's default serialization, compression, encryption):
 *               Keyv's text is stored as a pbkv string. A value another pbkv client wrote
 *               that is not a string reads back as it is; a plain string does not parse.
 * Expiry is pbkv's own: `ttlMs` from the primary's clock, so the cluster expires the key
 * (an expiry already past deletes the key). Reads carry the key's `expiresAt` as Keyv's
 * `expires`.
 */
import { EventEmitter } from 'node:events';
import { Keyv, keyvStorageCapability, type KeyvStorageAdapter, type KeyvStorageCapability, type KeyvStorageEntry, type KeyvStorageGetResult, type KeyvValue } from 'keyv';
import { KvClient, type KvClientOptions } from './client/client.js';
import type { ListEntry } from './client/data-api.js';
import { KvError } from './errors.js';
import type { Json } from './protocol/messages.js';

/** What a pbkv value holds for Keyv: the value itself, or Keyv's serialized text (see above). */
export type KeyvPbkvValues = 'json' | 'serialized';

/** The cluster's hub (a client is made, and closed by disconnect()), or a client to use. */
export type KeyvPbkvConnection = KvClientOptions | { client: KvClient };

export type KeyvPbkvOptions = KeyvPbkvConnection & {
  /** Keyv's namespace when Keyv has none of its own. */
  namespace?: string | undefined;
  /** 'serialized' unless told: what Keyv stores unless given `serialization: false`. */
  values?: KeyvPbkvValues;
};

/** KeyvPbkv's options but `values` (createKeyv picks json), and Keyv's default ttl (ms). */
export type CreateKeyvOptions = KeyvPbkvConnection & { namespace?: string | undefined; ttl?: number };

/** Between a namespace and a key: `cache:user:1` is key `user:1` of namespace `cache`. */
export const NAMESPACE_SEPARATOR = ':';

/**
 * Keyv's adapter contract but its emitter part, which EventEmitter provides: Node types
 * listeners() as Function[] where Keyv's emitter type says listener functions, so the
 * whole contract does not type-check against EventEmitter (Keyv calls on() alone).
 */
type StorageAdapter = Pick<KeyvStorageAdapter, 'namespace' | 'capabilities' | 'get' | 'getMany' | 'has' | 'hasMany' | 'set' | 'setMany' | 'delete' | 'deleteMany' | 'clear' | 'iterator' | 'disconnect'>;

export class KeyvPbkv extends EventEmitter implements StorageAdapter {
  namespace: string | undefined;
  readonly client: KvClient;
  readonly values: KeyvPbkvValues;
  /** A client this store made is closed by disconnect(); one it was given belongs to the giver. */
  private readonly ownsClient: boolean;
  private disconnected: Promise<void> | undefined;

  constructor(options: KeyvPbkvOptions) {
    super();
    const { namespace, values, ...connection } = options;
    this.namespace = namespace;
    this.values = values ?? 'serialized';
    this.ownsClient = !('client' in connection);
    this.client = 'client' in connection ? connection.client : new KvClient(connection);
  }

  /** Declares Keyv 6's contract (an absolute `expires` on set), so Keyv uses this store as it is. */
  get capabilities(): KeyvStorageCapability {
    return keyvStorageCapability(this);
  }

  async get<Value>(key: string): Promise<KeyvStorageGetResult<Value>> {
    const entry = await this.client.getEntry(this.keyOf(key));
    return entry && this.decode<Value>(entry);
  }

  async getMany<Value>(keys: string[]): Promise<Array<KeyvStorageGetResult<Value | undefined>>> {
    return Promise.all(keys.map((key) => this.get<Value>(key)));
  }

  async has(key: string): Promise<boolean> {
    return (await this.client.getEntry(this.keyOf(key))) !== undefined;
  }

  async hasMany(keys: string[]): Promise<boolean[]> {
    return Promise.all(keys.map((key) => this.has(key)));
  }

  /** `expires`: Unix ms, as Keyv computed it; kept as a ttl so the primary's clock judges it. */
  async set(key: string, value: unknown, expires?: number): Promise<boolean> {
    const stored = this.encode(value);
    const name = this.keyOf(key);
    if (expires === undefined) {
      await this.client.put(name, stored);
      return true;
    }
    const ttlMs = Math.ceil(expires - Date.now());
    // Already past (a setRaw of an old entry, a slow write): it must not live on.
    if (ttlMs <= 0) await this.client.del(name);
    else await this.client.put(name, stored, { ttlMs });
    return true;
  }

  async setMany<Value>(entries: KeyvStorageEntry<Value>[]): Promise<boolean[]> {
    return this.settle(await Promise.allSettled(entries.map(({ key, value, expires }) => this.set(key, value, expires))), false);
  }

  async delete(key: string): Promise<boolean> {
    return this.client.del(this.keyOf(key));
  }

  async deleteMany(keys: string[]): Promise<boolean[]> {
    return this.settle(await Promise.allSettled(keys.map((key) => this.delete(key))), false);
  }

  /** Deletes this namespace's keys, and nothing else. */
  async clear(): Promise<void> {
    if (!this.namespace) {
      throw new KvError('BAD_REQUEST', 'KeyvPbkv: clear() without a namespace would delete every key of the cluster; give Keyv (or KeyvPbkv) a namespace');
    }
    await this.client.clear(this.prefix());
  }

  /** [key, value] for each key of the namespace (every key of the cluster without one), a page at a time. */
  async *iterator<Value>(): AsyncGenerator<Array<string | Awaited<Value> | undefined>, void> {
    const prefix = this.prefix();
    for await (const page of this.client.list(prefix)) {
      for (const entry of page.entries) yield [entry.key.slice(prefix.length), this.decode(listed(entry)) as Awaited<Value>];
    }
  }

  /** Closes the client this store made (not one it was given); a second call waits for the first. */
  disconnect(): Promise<void> {
    this.disconnected ??= this.ownsClient ? this.client.close() : Promise.resolve();
    return this.disconnected;
  }

  private prefix(): string {
    return this.namespace ? `${this.namespace}${NAMESPACE_SEPARATOR}` : '';
  }

  private keyOf(key: string): string {
    return `${this.prefix()}${key}`;
  }

  /** What Keyv handed set(), as the pbkv value to store (the header comment's mapping). */
  private encode(value: unknown): Json {
    if (this.values === 'serialized') {
      if (typeof value === 'string') return value;
      throw new KvError('BAD_REQUEST', "KeyvPbkv (values: 'serialized') got a value Keyv did not serialize: Keyv has serialization: false, so give KeyvPbkv values: 'json' too (createKeyv does both)");
    }
    if (!isEnvelope(value)) {
      throw new KvError('BAD_REQUEST', "KeyvPbkv (values: 'json') got serialized text: give Keyv serialization: false (createKeyv does), or KeyvPbkv values: 'serialized'");
    }
    const problem = jsonProblem(value.value);
    if (problem !== undefined) throw new KvError('BAD_REQUEST', `KeyvPbkv (values: 'json') stores values as JSON, and ${problem}; store it with Keyv's serialization (values: 'serialized')`);
    return value.value as Json;
  }

  /** A pbkv entry as Keyv reads it: serialized text as it is, anything else as an envelope. */
  private decode<Value>(entry: { value: Json; expiresAt?: number }): KeyvStorageGetResult<Value> {
    if (this.values === 'serialized' && typeof entry.value === 'string') return entry.value;
    const envelope: KeyvValue<Value> = { value: entry.value as Value };
    if (entry.expiresAt !== undefined) envelope.expires = entry.expiresAt;
    return envelope;
  }

  /**
   * Each result, or `failed` where its promise failed: Keyv hears of every failure as an
   * `error` event. Without a listener the first failure is thrown, so none goes unheard.
   */
  private settle<T>(results: PromiseSettledResult<T>[], failed: T): T[] {
    const errors = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
    if (errors.length > 0 && this.listenerCount('error') === 0) throw errors[0];
    for (const error of errors) this.emit('error', error);
    return results.map((result) => (result.status === 'fulfilled' ? result.value : failed));
  }
}

/**
 * A Keyv whose values pbkv stores as themselves (values: 'json', Keyv's serialization off),
 * so every pbkv client reads what it wrote. `ttl`: Keyv's default time to live (ms).
 */
export function createKeyv(options: CreateKeyvOptions): Keyv {
  const { ttl, ...store } = options;
  return new Keyv({ store: new KeyvPbkv({ ...store, values: 'json' }), serialization: false, ...(ttl === undefined ? {} : { ttl }) });
}

function isEnvelope(value: unknown): value is KeyvValue<unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.hasOwn(value, 'value');
}

function listed(entry: ListEntry): { value: Json; expiresAt?: number } {
  if (entry.value === undefined) throw new KvError('INTERNAL', `malformed reply: ${entry.key} was listed without its value`);
  return { value: entry.value, ...(entry.expiresAt === undefined ? {} : { expiresAt: entry.expiresAt }) };
}

/**
 * Why `value` would not read back the same from JSON (as pbkv keeps values), or undefined.
 * Nesting is walked with a stack, not recursion: a deep value cannot overflow it.
 */
export function jsonProblem(value: unknown): string | undefined {
  if (value === null || value === undefined) return `a value cannot be ${value}`;
  const pending: { value: unknown; path: string }[] = [{ value, path: 'the value' }];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { value: item, path } = next;
    switch (typeof item) {
      case 'string':
      case 'boolean':
        continue;
      case 'number':
        if (Number.isFinite(item)) continue;
        return `${path} is ${item}, which JSON has no number for`;
      case 'object': {
        if (item === null) continue;
        if (Array.isArray(item)) {
          item.forEach((element, index) => pending.push({ value: element, path: `${path}[${index}]` }));
          continue;
        }
        const prototype = Object.getPrototypeOf(item) as unknown;
        if (prototype !== Object.prototype && prototype !== null) return `${path} is a ${(item as object).constructor?.name ?? 'non-plain object'}, which JSON turns into something else`;
        for (const [field, element] of Object.entries(item)) pending.push({ value: element, path: `${path}.${field}` });
        continue;
      }
      default:
        return `${path} is ${typeof item === 'undefined' ? 'undefined' : `a ${typeof item}`}, which JSON leaves out or cannot hold`;
    }
  }
  return undefined;
}
