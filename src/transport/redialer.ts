/**
 * One connection to a peer that may come and go: pbkv's one reconnect loop, used by the
 * replica link, the hub client and the kv client. `get()` dials when there is no
 * connection (one dial at a time, shared by every caller that asks meanwhile); after
 * `keepUp()`, a connection that drops or a dial that fails is dialed again after a
 * backoff with jitter, until `close()`. `drop()` closes the connection so the next
 * `get()` dials anew.
 */
import { backoffDelayMs } from '../backoff.js';
import type { Cancel, Environment } from '../env/environment.js';
import { KvError, toKvError } from '../errors.js';

/** What the loop needs of a connection: that it can be closed, and says when it is gone. */
export interface Dialed {
  readonly closed: Promise<void>;
  close(): void;
}

export interface RedialerOptions<T> {
  env: Pick<Environment, 'clock' | 'random'>;
  /** Told of each failed dial, with the count of failures in a row. */
  onError?(error: KvError, failures: number): void;
  /** Told when a connection that was up is gone. */
  onDown?(connection: T): void;
}

export class Redialer<T extends Dialed> {
  private current: Promise<T> | undefined;
  private failures = 0;
  private keepingUp = false;
  private cancelRedial: Cancel | undefined;
  private stopped = false;

  constructor(
    private readonly dial: () => Promise<T>,
    private readonly options: RedialerOptions<T>,
  ) {}

  /** The connection, dialed now if there is none; rejects with the dial's error. */
  get(): Promise<T> {
    if (this.stopped) return Promise.reject(new KvError('UNAVAILABLE', 'the connection is closed'));
    this.current ??= this.open();
    return this.current;
  }

  /** From now on a connection is always up or being dialed. */
  keepUp(): void {
    if (this.keepingUp) return;
    this.keepingUp = true;
    if (!this.current) this.redialSoon(0);
  }

  /** Stops redialing; resolves once a dial in progress has ended and the connection has closed. */
  async close(): Promise<void> {
    this.stopped = true;
    this.cancelRedial?.();
    const current = this.current;
    this.current = undefined;
    // A dial that fails has been reported through onError; one that succeeds is closed here.
    const connection = await current?.catch(() => undefined);
    connection?.close();
    await connection?.closed;
  }

  /**
   * Closes the connection there is, if any (a dial in progress once it is up), so that the
   * next `get()` dials anew; never dials.
   */
  drop(): void {
    void this.current?.then(
      (connection) => connection.close(),
      () => undefined,
    );
  }

  private open(): Promise<T> {
    const dialed: Promise<T> = this.dial().then(
      (connection) => {
        if (this.stopped) {
          connection.close();
          throw new KvError('UNAVAILABLE', 'the connection is closed');
        }
        this.failures = 0;
        void connection.closed.then(() => this.down(dialed, connection));
        return connection;
      },
      (error: unknown) => {
        const kvError = toKvError(error);
        if (this.current === dialed) this.current = undefined;
        if (!this.stopped) {
          this.failures += 1;
          this.options.onError?.(kvError, this.failures);
          this.redialSoon(backoffDelayMs(this.failures + 1, this.options.env.random.fraction()));
        }
        throw kvError;
      },
    );
    return dialed;
  }

  private down(dialed: Promise<T>, connection: T): void {
    if (this.current !== dialed) return;
    this.current = undefined;
    if (this.stopped) return;
    this.options.onDown?.(connection);
    this.redialSoon(backoffDelayMs(1, this.options.env.random.fraction()));
  }

  private redialSoon(delayMs: number): void {
    if (!this.keepingUp || this.stopped || this.cancelRedial || this.current) return;
    this.cancelRedial = this.options.env.clock.after(delayMs, () => {
      this.cancelRedial = undefined;
      // A failed dial is reported through onError and schedules the next one itself.
      this.get().catch(() => undefined);
    });
  }
}
