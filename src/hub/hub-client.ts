/**
 * Talks to the directory hub for a node or a client. The connection is opened lazily and
 * again after it drops; a node's registrations are replayed on every new connection, so
 * a restarted hub learns them back.
 */
import { defer, retry, throwError, timeout, type Observable } from 'rxjs';
import { backoff, backoffDelayMs } from '../backoff.js';
import { REQUEST_TIMEOUT_MS, RESOLVE_DEADLINE_MS } from '../constants.js';
import { KvError } from '../errors.js';
import { proofFor } from '../protocol/auth.js';
import { RpcChannel } from '../client/rpc.js';
import { connect } from '../transport/ws-transport.js';
import { HUB_NAME } from './hub.js';

export interface HubClientOptions {
  /** Who is speaking (a node's name); needed to register when a secret is set. */
  name?: string;
  secret?: string;
  requestTimeoutMs?: number;
}

const HUB_FRAME_BYTES_MAX = 1024 * 1024;

export class HubClient {
  private channel: Promise<RpcChannel> | undefined;
  private readonly registrations: Record<string, unknown>[] = [];
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectAttempt = 0;
  private closed = false;

  constructor(
    readonly url: string,
    private readonly options: HubClientOptions = {},
  ) {}

  /** Registers a node's name; kept and replayed after reconnects. */
  async register(name: string, address: string): Promise<void> {
    await this.remember({ op: 'register', name, address });
  }

  /** Points a service at a node; kept and replayed after reconnects. */
  async registerService(service: string, name: string): Promise<void> {
    await this.remember({ op: 'register-service', service, name });
  }

  async resolve(name: string): Promise<string> {
    const reply = await this.request({ op: 'resolve', name });
    return reply['address'] as string;
  }

  async lookup(service: string): Promise<{ node: string; address: string }> {
    const reply = await this.request({ op: 'lookup', service });
    return { node: reply['node'] as string, address: reply['address'] as string };
  }

  async status(): Promise<{ names: Record<string, string>; services: Record<string, string> }> {
    const reply = await this.request({ op: 'status' });
    return { names: reply['names'] as Record<string, string>, services: reply['services'] as Record<string, string> };
  }

  /**
   * Resolves `name`, retrying with backoff while it is not registered yet or the hub is
   * unreachable, until `deadlineMs`: then fails with UNAVAILABLE.
   */
  resolveUntil$(name: string, deadlineMs = RESOLVE_DEADLINE_MS): Observable<string> {
    return untilFound$(() => this.resolve(name), () => this.closed, `"${name}" did not register at the hub`, deadlineMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const channel = this.channel;
    this.channel = undefined;
    if (channel) (await channel.catch(() => undefined))?.close();
  }

  private async remember(fields: Record<string, unknown>): Promise<void> {
    await this.request(fields);
    this.registrations.push(fields);
  }

  private async request(fields: Record<string, unknown>): Promise<Record<string, unknown>> {
    const channel = await this.open();
    return (await channel.request(fields, this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS)) as Record<string, unknown>;
  }

  private open(): Promise<RpcChannel> {
    if (this.closed) return Promise.reject(new KvError('UNAVAILABLE', 'hub client is closed'));
    this.channel ??= this.connect().catch((error: unknown) => {
      this.channel = undefined;
      throw error;
    });
    return this.channel;
  }

  private async connect(): Promise<RpcChannel> {
    const connection = await connect(this.url, { maxPayload: HUB_FRAME_BYTES_MAX });
    const channel = new RpcChannel(connection, this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
    connection.frames$.subscribe({ complete: () => this.dropped(channel) });
    try {
      const { name, secret } = this.options;
      if (name !== undefined) {
        const hello = await channel.request({ op: 'hello', from: name });
        if (typeof hello['challenge'] === 'string') {
          if (secret === undefined) throw new KvError('UNAUTHORIZED', 'the hub wants the cluster secret');
          await channel.request({ op: 'auth', proof: proofFor(secret, hello['challenge'], name, HUB_NAME) });
        }
      }
      for (const registration of this.registrations) await channel.request(registration);
      this.reconnectAttempt = 0;
      return channel;
    } catch (error) {
      channel.close();
      throw error;
    }
  }

  /** A node's registrations must not wait for its next request to reach a new hub. */
  private dropped(channel: RpcChannel): void {
    void this.channel?.then((current) => {
      if (current === channel) this.channel = undefined;
    }, () => undefined);
    if (this.closed || this.registrations.length === 0) return;
    this.reconnectAttempt += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.open().catch(() => this.dropped(channel));
    }, backoffDelayMs(this.reconnectAttempt));
    this.reconnectTimer.unref();
  }
}

/** Retries `call` while what it asks for is not there yet (NOT_FOUND) or unreachable. */
function untilFound$<T>(call: () => Promise<T>, closed: () => boolean, failure: string, deadlineMs: number): Observable<T> {
  return defer(call).pipe(
    retry({
      delay: (error: unknown, attempt) =>
        !closed() && error instanceof KvError && (error.code === 'NOT_FOUND' || error.code === 'UNAVAILABLE')
          ? backoff(error, attempt)
          : throwError(() => error),
    }),
    timeout({
      first: deadlineMs,
      with: () => throwError(() => new KvError('UNAVAILABLE', `${failure} within ${deadlineMs} ms`)),
    }),
  );
}
