/**
 * One parse per server: a frame becomes a typed request or a KvError with the request's
 * id, never an exception. Field validators are shared; the op tables differ.
 */
import { VALUE_DEPTH_MAX } from '../constants.js';
import { KvError } from '../errors.js';
import type { HubRequest, Json, NodeRequest, RequestId, WriteOp } from './messages.js';
import { parseTextCommand } from './text-commands.js';

export interface Limits {
  keyBytesMax: number;
  valueBytesMax: number;
}

export type Parsed<T> = { ok: true; request: T } | { ok: false; id: RequestId; error: KvError };

type Fields = Record<string, unknown>;

/** Parses a frame sent to a node: the client ops of PROTOCOL.md and the peer ops. */
export function parseNodeFrame(text: string, limits: Limits): Parsed<NodeRequest> {
  return parseFrame(text, (fields, id) => nodeRequest(fields, id, limits));
}

/** Parses a frame sent to the directory hub. */
export function parseHubFrame(text: string): Parsed<HubRequest> {
  return parseFrame(text, hubRequest);
}

function parseFrame<T>(text: string, build: (fields: Fields, id: RequestId) => T): Parsed<T> {
  let fields: Fields;
  if (!text.trimStart().startsWith('{')) {
    const command = parseTextCommand(text);
    if (command instanceof KvError) return { ok: false, id: null, error: command };
    fields = command;
  } else {
    let decoded: unknown;
    try {
      decoded = JSON.parse(text);
    } catch {
      return { ok: false, id: null, error: new KvError('BAD_REQUEST', 'frame is not valid JSON') };
    }
    if (typeof decoded !== 'object' || decoded === null || Array.isArray(decoded)) {
      return { ok: false, id: null, error: new KvError('BAD_REQUEST', 'frame must be a JSON object') };
    }
    fields = decoded as Fields;
  }
  const id = fields['id'] ?? null;
  if (id !== null && typeof id !== 'string' && typeof id !== 'number') {
    return { ok: false, id: null, error: new KvError('BAD_REQUEST', 'id must be a string or a number') };
  }
  try {
    return { ok: true, request: build(fields, id) };
  } catch (error) {
    if (error instanceof KvError) return { ok: false, id, error };
    throw error;
  }
}

function nodeRequest(fields: Fields, id: RequestId, limits: Limits): NodeRequest {
  const op = requireOp(fields);
  switch (op) {
    case 'get':
      return { type: 'get', id, key: requireKey(fields, limits) };
    case 'del':
      return { type: 'del', id, key: requireKey(fields, limits) };
    case 'put': {
      const key = requireKey(fields, limits);
      const { value, valueJson } = requireValue(fields, limits);
      return { type: 'put', id, key, value, valueJson };
    }
    case 'help':
      return { type: 'help', id };
    case 'hello':
      return { type: 'hello', id, from: requireName(fields, 'from'), epoch: requireCount(fields, 'epoch') };
    case 'auth':
      return { type: 'auth', id, proof: requireString(fields, 'proof') };
    case 'append':
      return {
        type: 'append',
        id,
        epoch: requireCount(fields, 'epoch'),
        first: requireCount(fields, 'first'),
        ops: requireWriteOps(fields['ops']),
      };
    case 'snapshot': {
      const done = fields['done'];
      if (typeof done !== 'boolean') throw new KvError('BAD_REQUEST', 'done must be a boolean');
      return {
        type: 'snapshot',
        id,
        epoch: requireCount(fields, 'epoch'),
        seq: requireCount(fields, 'seq'),
        part: requireCount(fields, 'part'),
        entries: requireSnapshotEntries(fields['entries']),
        done,
      };
    }
    default:
      throw new KvError('BAD_REQUEST', `unknown op "${op}" (try "help")`);
  }
}

function hubRequest(fields: Fields, id: RequestId): HubRequest {
  const op = requireOp(fields);
  switch (op) {
    case 'lookup':
      return { type: 'lookup', id, service: requireName(fields, 'service') };
    case 'resolve':
      return { type: 'resolve', id, name: requireName(fields, 'name') };
    case 'status':
      return { type: 'status', id };
    case 'register':
      return { type: 'register', id, name: requireName(fields, 'name'), address: requireAddress(fields) };
    case 'register-service':
      return { type: 'register-service', id, service: requireName(fields, 'service'), name: requireName(fields, 'name') };
    case 'hello':
      return { type: 'hello', id, from: requireName(fields, 'from'), epoch: 0 };
    case 'auth':
      return { type: 'auth', id, proof: requireString(fields, 'proof') };
    case 'help':
      return { type: 'help', id };
    default:
      throw new KvError('BAD_REQUEST', `unknown op "${op}" (try "help")`);
  }
}

// ---- Field validators --------------------------------------------------------------

const NAME_BYTES_MAX = 128;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function requireOp(fields: Fields): string {
  const op = fields['op'];
  if (typeof op !== 'string') throw new KvError('BAD_REQUEST', 'op must be a string');
  return op;
}

function requireString(fields: Fields, name: string): string {
  const value = fields[name];
  if (typeof value !== 'string') throw new KvError('BAD_REQUEST', `${name} must be a string`);
  return value;
}

function requireName(fields: Fields, name: string): string {
  const value = requireString(fields, name);
  if (value.length > NAME_BYTES_MAX || !NAME_PATTERN.test(value)) {
    throw new KvError('BAD_REQUEST', `${name} must be 1-${NAME_BYTES_MAX} letters, digits, '.', '_' or '-'`);
  }
  return value;
}

function requireCount(fields: Fields, name: string): number {
  const value = fields[name];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new KvError('BAD_REQUEST', `${name} must be a non-negative integer`);
  }
  return value;
}

function requireAddress(fields: Fields): string {
  const address = requireString(fields, 'address');
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new KvError('BAD_REQUEST', 'address must be a ws:// or wss:// URL');
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new KvError('BAD_REQUEST', 'address must be a ws:// or wss:// URL');
  }
  return address;
}

function requireKey(fields: Fields, limits: Limits): string {
  const key = fields['key'];
  if (typeof key !== 'string' || key.length === 0) {
    throw new KvError('BAD_REQUEST', 'key must be a non-empty string');
  }
  // A UTF-16 length within a third of the limit cannot exceed it in UTF-8.
  if (key.length * 3 > limits.keyBytesMax && Buffer.byteLength(key, 'utf8') > limits.keyBytesMax) {
    throw new KvError('TOO_LARGE', `key is over ${limits.keyBytesMax} bytes`);
  }
  return key;
}

function requireValue(fields: Fields, limits: Limits): { value: Json; valueJson: string } {
  if (!('value' in fields) || fields['value'] === null || fields['value'] === undefined) {
    throw new KvError('BAD_REQUEST', 'value must be present and not null');
  }
  const value = fields['value'] as Json;
  if (nestedDeeperThan(value, VALUE_DEPTH_MAX)) {
    throw new KvError('TOO_LARGE', `value is nested deeper than ${VALUE_DEPTH_MAX} levels`);
  }
  const valueJson = JSON.stringify(value);
  if (valueJson.length * 3 > limits.valueBytesMax && Buffer.byteLength(valueJson, 'utf8') > limits.valueBytesMax) {
    throw new KvError('TOO_LARGE', `value is over ${limits.valueBytesMax} bytes serialized`);
  }
  return { value, valueJson };
}

/** Snapshot entries: [key, value] pairs, values kept as their JSON. */
function requireSnapshotEntries(raw: unknown): [string, string][] {
  if (!Array.isArray(raw)) throw new KvError('BAD_REQUEST', 'entries must be an array');
  return raw.map((entry): [string, string] => {
    if (
      Array.isArray(entry) && entry.length === 2 && typeof entry[0] === 'string' && entry[0].length > 0 &&
      entry[1] !== null && entry[1] !== undefined && !nestedDeeperThan(entry[1], VALUE_DEPTH_MAX)
    ) {
      return [entry[0], JSON.stringify(entry[1])];
    }
    throw new KvError('BAD_REQUEST', 'entries must be [key, value] pairs');
  });
}

/** Whether arrays and objects nest deeper than `max`, found without recursion. */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const stack: [object, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (depth > max) return true;
    for (const child of Object.values(node)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}

/**
 * Replication ops, compact on the wire: ["p", key, value] or ["d", key]. They come only
 * from an authenticated primary, but a malformed batch is still refused whole.
 */
function requireWriteOps(raw: unknown): WriteOp[] {
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new KvError('BAD_REQUEST', 'ops must be a non-empty array');
  }
  return raw.map((entry): WriteOp => {
    if (Array.isArray(entry) && typeof entry[1] === 'string' && entry[1].length > 0) {
      if (entry[0] === 'p' && entry.length === 3 && entry[2] !== null && entry[2] !== undefined && !nestedDeeperThan(entry[2], VALUE_DEPTH_MAX)) {
        return { kind: 'put', key: entry[1], valueJson: JSON.stringify(entry[2]) };
      }
      if (entry[0] === 'd' && entry.length === 2) return { kind: 'del', key: entry[1] };
    }
    throw new KvError('BAD_REQUEST', 'ops entries must be ["p", key, value] or ["d", key]');
  });
}
