/** Test helpers: temp directories, a disposal list, raw WebSocket clients, deadlines. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WebSocket } from 'ws';
import type { HubClient } from '../src/hub/hub-client.js';

/** Everything a test started, closed in reverse order after it (suite.after.each). */
export class Disposer {
  private readonly items: (() => unknown)[] = [];
  add<T>(item: T, dispose: (item: T) => unknown): T {
    this.items.push(() => dispose(item));
    return item;
  }
  async dispose(): Promise<void> {
    while (this.items.length > 0) await this.items.pop()!();
  }
}

export async function tempDir(disposer: Disposer): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'pbkv-test-'));
  return disposer.add(dir, (d) => rm(d, { recursive: true, force: true }));
}

/** Polls `check` until it returns a truthy value, failing after `deadlineMs`. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, deadlineMs = 10_000): Promise<NonNullable<T>> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const result = await check();
    if (result) return result as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Resolves with a promise's value, or fails after `deadlineMs`. */
export function within<T>(what: string, promise: Promise<T>, deadlineMs = 10_000): Promise<T> {
  let timer: NodeJS.Timeout;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${deadlineMs} ms waiting for ${what}`)), deadlineMs);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

export type Frame = Record<string, any>;

/** A WebSocket client that speaks frames directly, as wscat would. */
export class RawClient {
  private readonly received: Frame[] = [];
  private readonly waiters: (() => void)[] = [];
  closeCode: number | undefined;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      // Replies are JSON; the help of a text command is plain text, kept as { text }.
      const text = data.toString();
      let frame: Frame;
      try {
        frame = JSON.parse(text) as Frame;
      } catch {
        frame = { text };
      }
      this.received.push(frame);
      for (const wake of this.waiters.splice(0)) wake();
    });
    socket.on('close', (code) => {
      this.closeCode = code;
      for (const wake of this.waiters.splice(0)) wake();
    });
    socket.on('error', () => {});
  }

  static open(url: string, disposer: Disposer, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, { maxPayload: 64 * 1024 * 1024, ...(localAddress ? { localAddress } : {}) });
      socket.once('open', () => resolve(disposer.add(new RawClient(socket), (c) => c.close())));
      socket.once('error', reject);
    });
  }

  send(frame: Frame | string): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The next frame received (in order), within a deadline. */
  async next(deadlineMs = 10_000): Promise<Frame> {
    const end = Date.now() + deadlineMs;
    while (this.received.length === 0) {
      if (this.closeCode !== undefined) throw new Error(`connection closed (${this.closeCode})`);
      if (Date.now() > end) throw new Error('no frame within the deadline');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, end - Date.now());
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received.shift()!;
  }

  /** Sends a frame and waits for the next reply. */
  async ask(frame: Frame | string): Promise<Frame> {
    this.send(frame);
    return this.next();
  }

  /** Waits until the server closes the connection; resolves with the close code. */
  async closed(deadlineMs = 10_000): Promise<number> {
    return waitFor('the connection to close', () => this.closeCode, deadlineMs);
  }

  close(): void {
    this.socket.terminate();
  }
}

/**
 * Makes `name` the primary of a one-node view at the hub, as a configured primary's
 * heartbeats do, so that `lookup kv` names it: heartbeats until it does.
 */
export async function proposeAlone(hub: HubClient, name: string): Promise<void> {
  const beat = { name, epoch: 0, seq: 0, viewEpoch: 0, config: { primary: name, replicas: [], minReplicas: 0 }, synced: undefined, caughtUp: undefined, behind: undefined, unreachable: undefined };
  await waitFor(`a view naming ${name} primary`, async () => {
    await hub.heartbeat(beat, 5_000);
    return (await hub.lookup('kv').catch(() => undefined))?.node === name;
  });
}
