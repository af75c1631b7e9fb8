#!/usr/bin/env node
/**
 * The storage driver's own costs, outside the cluster (docs/PERFORMANCE.md):
 *   npm run build && node dist/tools/sqlite-micro.js [--writes 20000]
 * For batch sizes 1, 20 and 64 of 100-byte puts into a Keyv-shaped table (WAL,
 * synchronous=NORMAL, random keys): µs per write through SqliteStore on this thread
 * (node:sqlite, synchronous), and the same batches committed by a worker thread that owns
 * the write connection (the "worker" option), which adds a message round trip per batch.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { SqliteStore } from '../src/storage/sqlite-store.js';
import type { WriteOp } from '../src/protocol/messages.js';

const { values } = parseArgs({ options: { writes: { type: 'string', default: '20000' } } });
const writes = Math.min(Number(values.writes), 1_000_000);
const value = JSON.stringify('v'.repeat(98));
const dir = await mkdtemp(path.join(tmpdir(), 'pbkv-micro-'));

function batchOf(size: number): WriteOp[] {
  return Array.from({ length: size }, () => ({ kind: 'put' as const, key: `key${Math.floor(Math.random() * 1_000_000)}`, valueJson: value, expiresAt: undefined, incr: false, tag: undefined }));
}

/** The worker: owns a store, commits each batch it is sent, answers with its seq. */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.module).then(async ({ SqliteStore }) => {
  const store = await SqliteStore.open(workerData.file, 'normal');
  parentPort.on('message', async (message) => {
    if (message === 'stop') { await store.close(); parentPort.close(); return; }
    await store.apply(1, message.first, message.ops);
    parentPort.postMessage(message.first + message.ops.length - 1);
  });
  parentPort.postMessage('ready');
});`;

try {
  for (const size of [1, 20, 64]) {
    const store = await SqliteStore.open(path.join(dir, `main-${size}.sqlite`), 'normal');
    let seq = 0;
    const started = process.hrtime.bigint();
    while (seq < writes) {
      const ops = batchOf(size);
      await store.apply(1, seq + 1, ops);
      seq += ops.length;
    }
    const mainUs = Number(process.hrtime.bigint() - started) / 1000 / seq;
    await store.close();

    const worker = new Worker(WORKER, {
      eval: true,
      workerData: { module: new URL('../src/storage/sqlite-store.js', import.meta.url).href, file: path.join(dir, `worker-${size}.sqlite`) },
    });
    await new Promise((resolve) => worker.once('message', resolve));
    let workerSeq = 0;
    const workerStarted = process.hrtime.bigint();
    while (workerSeq < writes) {
      const ops = batchOf(size);
      worker.postMessage({ first: workerSeq + 1, ops });
      workerSeq = (await new Promise((resolve) => worker.once('message', resolve))) as number;
    }
    const workerUs = Number(process.hrtime.bigint() - workerStarted) / 1000 / workerSeq;
    worker.postMessage('stop');
    await new Promise((resolve) => worker.once('exit', resolve));
    console.log(JSON.stringify({ batch: size, writes: seq, mainThreadUsPerWrite: Number(mainUs.toFixed(2)), workerUsPerWrite: Number(workerUs.toFixed(2)) }));
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
