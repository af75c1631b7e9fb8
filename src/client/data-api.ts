/**
 * The data API as the client sees it (PROTOCOL.md, "Versions, conditional writes,
 * counters, expiry, listing"): what its methods take and return, the typed CONFLICT, and
 * the reading of replies into those shapes, checked once at this boundary.
 */
import { KvError } from '../errors.js';
import type { Json } from '../protocol/messages.js';
import { replyCount, type OkReply } from '../protocol/reply.js';

/** A key's value with the version of the write that last changed it, and its expiry if any. */
export interface KvEntry {
  value: Json;
  version: number;
  /** Unix ms. */
  expiresAt?: number;
}

/** Apply only if the key is at this version (0: only if it is absent); else a ConflictError. */
export interface Condition {
  ifVersion?: number;
}

/** When the key expires: `ttlMs` from when the primary applies the write, or `expiresAt` (Unix ms). One of them. */
export interface Expiry {
  ttlMs?: number;
  expiresAt?: number;
}

export type PutOptions = Condition & Expiry;
export type DelOptions = Condition;
export type IncrOptions = Condition & Expiry;

export interface ClearOptions {
  /** Keys deleted per clear write (the node's default and most: 10,000). */
  limit?: number;
}

export interface ListOptions {
  /** Start after this key (exclusive). */
  after?: string;
  /** Entries per page (the node's default 100; at most 1000). */
  limit?: number;
  /** false: keys and versions only. */
  values?: boolean;
}

/** One key of a list page; `value` is absent when the list asked for no values. */
export interface ListEntry {
  key: string;
  value?: Json;
  version: number;
  expiresAt?: number;
}

/**
 * A page of a list: its entries, whether more follow, and the version of the last write
 * every replica held when it was read.
 */
export interface ListPage {
  entries: ListEntry[];
  more: boolean;
  version: number;
}

/**
 * An `ifVersion` condition did not hold: nothing was written. `found` and `version` are the
 * key's state when the primary decided (version 0: absent).
 */
export class ConflictError extends KvError {
  readonly found: boolean;
  readonly version: number;

  constructor(message: string, details: { found: boolean; version: number }) {
    super('CONFLICT', message, details);
    this.found = details.found;
    this.version = details.version;
  }

  /** The typed form of a CONFLICT from the wire, whose details carry found and version. */
  static from(error: KvError): ConflictError | KvError {
    const { found, version } = error.details;
    if (typeof found !== 'boolean' || typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) {
      return new KvError('INTERNAL', `malformed reply: a CONFLICT carries found and version (${error.message})`);
    }
    return new ConflictError(error.message, { found, version });
  }
}

export function replyVersion(reply: OkReply): number {
  return replyCount(reply, 'version');
}

/** A get's or a list entry's fields as a KvEntry. */
export function entryOf(fields: Record<string, unknown>): KvEntry {
  const { value, version, expiresAt } = fields;
  if (value === undefined || value === null) throw new KvError('INTERNAL', 'malformed reply: an entry needs a value');
  return { value: value as Json, version: countField(version, 'version'), ...(expiresAt === undefined ? {} : { expiresAt: countField(expiresAt, 'expiresAt') }) };
}

export function listPageOf(reply: OkReply): ListPage {
  const { entries, more } = reply;
  if (!Array.isArray(entries) || typeof more !== 'boolean') throw new KvError('INTERNAL', 'malformed reply: a list page answers entries and more');
  return {
    entries: entries.map((entry: unknown) => {
      if (typeof entry !== 'object' || entry === null || typeof (entry as { key?: unknown }).key !== 'string') throw new KvError('INTERNAL', 'malformed reply: a list entry needs a key');
      const fields = entry as Record<string, unknown>;
      const key = fields['key'] as string;
      // Fields in the order the wire has them, so an entry prints as the node sent it.
      if (fields['value'] !== undefined) return { key, ...entryOf(fields) };
      const { version, expiresAt } = fields;
      return { key, version: countField(version, 'version'), ...(expiresAt === undefined ? {} : { expiresAt: countField(expiresAt, 'expiresAt') }) };
    }),
    more,
    version: replyVersion(reply),
  };
}

function countField(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new KvError('INTERNAL', `malformed reply: ${name} must be a non-negative integer`);
  return value;
}
