/**
 * The pbkv client: finds the primary through the hub (service `kv`), keeps one connection
 * to it, and turns get/put/del into promises matched by request id. When the connection
 * drops, the next request looks the primary up again and reconnects. A write that failed
 * with UNAVAILABLE is not retried here: its outcome is unknown until it is read back.
 */
import { FRAME_BYTES_MAX, REQUEST_TIMEOUT_MS } from '../constants.js';
import { KvError } from '../errors.js';
import type { Json } from '../protocol/messages.js';
import type { Environment } from '../env/environment.js';
import { realEnvironment } from '../env/real.js';
import { HubClient } from '../hub/hub-client.js';
import { RpcChannel, type OkReply } from '../protocol/rpc-channel.js';
import { Redialer } from '../transport/redialer.js';

export interface KvClientOptions {
  /** The directory hub, ws://host:port. */
  hubUrl: string;
  /** The service to look up; `kv` unless told otherwise. */
  service?: string;
  requestTimeoutMs?: number;
  /** The network, clock and randomness (the real ones unless given). */
  env?: Environment;
}

export class KvClient {
  private readonly env: Environment;
  private readonly hub: HubClient;
  private readonly channel: Redialer<RpcChannel>;

  constructor(private readonly options: KvClientOptions) {
    this.env = options.env ?? realEnvironment;
    this.hub = new HubClient(options.hubUrl, { requestTimeoutMs: options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS, env: this.env });
    this.channel = new Redialer(() => this.connect(), { env: this.env });
  }

  /** The value stored under `key`, or undefined. */
  async get(key: string): Promise<Json | undefined> {
    const reply = await this.request({ op: 'get', key });
    if (reply['found'] === true && 'value' in reply && reply['value'] !== null) return reply['value'] as Json;
    if (reply['found'] === false) return undefined;
    throw new KvError('INTERNAL', 'malformed reply: a get answers found: false, or found: true with a value');
  }

  /** Resolves once the write is on the primary and every replica. */
  async put(key: string, value: Json): Promise<void> {
    if (value === null || value === undefined) throw new KvError('BAD_REQUEST', 'value must not be null');
    await this.request({ op: 'put', key, value });
  }

  /** Resolves with whether the key existed. */
  async del(key: string): Promise<boolean> {
    const reply = await this.request({ op: 'del', key });
    if (typeof reply['found'] !== 'boolean') throw new KvError('INTERNAL', 'malformed reply: a del answers found: true or false');
    return reply['found'];
  }

  /** The hub's names and services. */
  status(): ReturnType<HubClient['status']> {
    return this.hub.status();
  }

  /** Sends any request to the primary (for tools that speak the protocol directly). */
  async request(fields: Record<string, unknown>): Promise<OkReply> {
    const channel = await this.channel.get();
    return channel.request(fields);
  }

  async close(): Promise<void> {
    await this.channel.close();
    await this.hub.close();
  }

  /** Looks the primary up and connects to it: on first use, and after the connection dropped. */
  private async connect(): Promise<RpcChannel> {
    const { address } = await this.hub.lookup(this.options.service ?? 'kv');
    const connection = await this.env.transport.connect(address, { maxPayload: FRAME_BYTES_MAX * 2 });
    return new RpcChannel(connection, this.env.clock, this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
  }
}
