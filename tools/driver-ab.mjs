#!/usr/bin/env node
/**
 * The storage driver decision's A/B (docs/PERFORMANCE.md): the same batch of 100-byte puts
 * into a Keyv-shaped table (WAL, synchronous=NORMAL, random keys, prepared upsert and meta
 * row in one transaction), through a synchronous driver:
 *   node tools/driver-ab.mjs node:sqlite          # Node 22.13+ (npm's pinned Node 24: npx node ...)
 *   node tools/driver-ab.mjs better-sqlite3       # any Node, after `npm install --no-save better-sqlite3@12`
 * Prints µs per write for batches of 1, 20 and 64. Plain JavaScript, so it runs on the
 * system's Node 20 too, where better-sqlite3 is the only synchronous choice.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const driver = process.argv[2] ?? 'node:sqlite';
const writes = 20_000;
const Database = driver === 'better-sqlite3' ? (await import('better-sqlite3')).default : (await import('node:sqlite')).DatabaseSync;
const open = (file) => new Database(file);
const dir = mkdtempSync(path.join(tmpdir(), 'pbkv-driver-'));
const value = `{"value":${JSON.stringify('v'.repeat(98))}}`;
try {
  for (const size of [1, 20, 64]) {
    const db = open(path.join(dir, `${size}.sqlite`));
    db.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
      CREATE TABLE keyv(key VARCHAR(1024) PRIMARY KEY, value TEXT);
      CREATE TABLE pbkv_meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);`);
    const upsert = db.prepare('INSERT INTO keyv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
    const meta = db.prepare("INSERT INTO pbkv_meta(name, value) VALUES ('epoch', ?), ('seq', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value");
    let seq = 0;
    const started = process.hrtime.bigint();
    while (seq < writes) {
      db.exec('BEGIN IMMEDIATE');
      for (let i = 0; i < size; i += 1) upsert.run(`key${Math.floor(Math.random() * 1_000_000)}`, value);
      seq += size;
      meta.run(1, seq);
      db.exec('COMMIT');
    }
    const us = Number(process.hrtime.bigint() - started) / 1000 / seq;
    db.close();
    console.log(JSON.stringify({ driver, node: process.version, batch: size, usPerWrite: Number(us.toFixed(2)) }));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
