/**
 * One parse per server: a frame becomes a typed request or a KvError with the request's
 * id, never an exception. Field validators are shared; the op tables differ.
 */
import { BATCH_SIZE_BUCKETS, CLEAR_KEYS_MAX, LATENCY_BUCKETS_MS, CLIENT_ID_LENGTH_MAX, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, NAME_BYTES_MAX, UTF8_BYTES_PER_UNIT_MAX, REPORT_REASON_LENGTH_MAX as REASON_LENGTH_MAX, REQUEST_TAG_WINDOW, VALUE_DEPTH_MAX, VIEW_NODES_MAX } from '../constants.js';
import { ERROR_CODES, KvError, type ErrorCode } from '../errors.js';
import {
  METERED_OPS,
  NODE_STATES,
  isSessionResults,
  type ClientSession,
  type Expiry,
  type SnapshotEntry,
  type HubRequest,
  type Json,
  type MeteredOp,
  type MetricsReport,
  type NodeRequest,
  type NodeState,
  type OpCounts,
  type RequestId,
  type RequestTag,
  type ViewConfig,
  type WatchTarget,
  type WriteOp,
} from './messages.js';
import { parseTextCommand } from './text-commands.js';

export interface Limits {
  keyBytesMax: number;
  valueBytesMax: number;
}

export type Parsed<T> = { ok: true; request: T } | { ok: false; id: RequestId; error: KvError };

type Fields = Record<string, unknown>;

/** Parses a frame sent to a node: the client ops of PROTOCOL.md and the peer ops. */
export function parseNodeFrame(text: string, limits: Limits): Parsed<NodeRequest> {
  return parseFrame(text, (fields, id) => nodeRequest(fields, id, limits, text));
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
    // A person typed it: `help` then answers with plain text.
    fields = { ...command, text: true };
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

function nodeRequest(fields: Fields, id: RequestId, limits: Limits, text: string): NodeRequest {
  const op = requireOp(fields);
  switch (op) {
    case 'get':
      return { type: 'get', id, key: requireKey(fields, limits) };
    case 'del':
      return { type: 'del', id, key: requireKey(fields, limits), ifVersion: optionalVersion(fields), tag: optionalTag(fields) };
    case 'put': {
      const key = requireKey(fields, limits);
      const { value, valueJson } = requireValue(fields, limits);
      return { type: 'put', id, key, value, valueJson, ifVersion: optionalVersion(fields), expiry: optionalExpiry(fields), tag: optionalTag(fields) };
    }
    case 'incr':
      return { type: 'incr', id, key: requireKey(fields, limits), by: optionalBy(fields), ifVersion: optionalVersion(fields), expiry: optionalExpiry(fields), tag: optionalTag(fields) };
    case 'list': {
      const values = fields['values'] ?? true;
      if (typeof values !== 'boolean') throw new KvError('BAD_REQUEST', 'values must be true or false');
      const after = fields['after'];
      return {
        type: 'list',
        id,
        prefix: requirePrefix(fields, limits),
        after: after === undefined ? undefined : requireKey(fields, limits, 'after'),
        limit: optionalLimit(fields, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX),
        values,
      };
    }
    case 'clear':
      return { type: 'clear', id, prefix: requirePrefix(fields, limits), limit: optionalLimit(fields, CLEAR_KEYS_MAX, CLEAR_KEYS_MAX), tag: optionalTag(fields) };
    case 'watch':
      return { type: 'watch', id, target: requireWatchTarget(fields, limits), fromVersion: optionalFromVersion(fields), replaces: fields['text'] === true };
    case 'unwatch': {
      // A text command's unwatch names no id: it ends the connection's text watch (id null).
      const watch = fields['watch'] ?? null;
      if (watch !== null && typeof watch !== 'string' && typeof watch !== 'number') throw new KvError('BAD_REQUEST', 'watch must be the id of a watch request');
      if (watch === null && fields['text'] !== true) throw new KvError('BAD_REQUEST', 'watch must be the id of a watch request');
      return { type: 'unwatch', id, watch };
    }
    case 'help':
      return { type: 'help', id, asText: fields['text'] === true };
    case 'hello':
      return { type: 'hello', id, from: requireName(fields, 'from'), epoch: requireCount(fields, 'epoch') };
    case 'auth':
      return { type: 'auth', id, proof: requireString(fields, 'proof') };
    case 'lease':
      return { type: 'lease', id, epoch: requireCount(fields, 'epoch') };
    case 'append': {
      const ops = requireWriteOps(fields['ops']);
      for (const name in fields) if (!APPEND_FIELDS.has(name)) throw new KvError('BAD_REQUEST', `an append takes ${[...APPEND_FIELDS].join(', ')}; not ${name}`);
      const framed = opsText(text, ops.length);
      if (framed === undefined) throw new KvError('BAD_REQUEST', 'ops must be JSON arrays, one per op');
      return { type: 'append', id, epoch: requireCount(fields, 'epoch'), first: requireCount(fields, 'first'), ops, ...framed };
    }
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
        watermark: fields['watermark'] === undefined ? 0 : requireCount(fields, 'watermark'),
        done,
        sessions: fields['sessions'] === undefined ? [] : requireSessions(fields['sessions']),
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
    case 'report': {
      const { state, reason } = requireHealth(fields);
      return { type: 'report', id, name: requireName(fields, 'name'), state, reason };
    }
    case 'heartbeat': {
      const config = fields['config'];
      let proposed: ViewConfig | undefined;
      if (config !== undefined) {
        if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new KvError('BAD_REQUEST', 'config must be an object');
        const replicas = requireNames(config as Fields, 'replicas');
        const minReplicas = (config as Fields)['minReplicas'];
        if (minReplicas !== undefined && (typeof minReplicas !== 'number' || !Number.isSafeInteger(minReplicas) || minReplicas < 0 || minReplicas > replicas.length)) {
          throw new KvError('BAD_REQUEST', `config.minReplicas must be an integer from 0 to the ${replicas.length} replicas configured`);
        }
        proposed = { primary: requireName(config as Fields, 'primary'), replicas, ...(minReplicas !== undefined ? { minReplicas } : {}) };
      }
      return {
        type: 'heartbeat',
        id,
        name: requireName(fields, 'name'),
        epoch: requireCount(fields, 'epoch'),
        seq: requireCount(fields, 'seq'),
        viewEpoch: requireCount(fields, 'viewEpoch'),
        config: proposed,
        synced: fields['synced'] === undefined ? undefined : requireNames(fields, 'synced'),
        caughtUp: fields['caughtUp'] === undefined ? undefined : requireNames(fields, 'caughtUp'),
        behind: fields['behind'] === undefined ? undefined : requireName(fields, 'behind'),
        unreachable: fields['unreachable'] === undefined ? undefined : requireNames(fields, 'unreachable'),
        health: fields['state'] === undefined ? undefined : requireHealth(fields),
        metrics: fields['metrics'] === undefined ? undefined : requireMetrics(fields['metrics']),
      };
    }
    case 'hello':
      return { type: 'hello', id, from: requireName(fields, 'from'), epoch: 0 };
    case 'auth':
      return { type: 'auth', id, proof: requireString(fields, 'proof') };
    case 'help':
      return { type: 'help', id, asText: fields['text'] === true };
    default:
      throw new KvError('BAD_REQUEST', `unknown op "${op}" (try "help")`);
  }
}

// ---- Field validators --------------------------------------------------------------

/** A node's `state` and optional `reason`, as a report or a heartbeat carries them. */
function requireHealth(fields: Fields): { state: NodeState; reason: string | undefined } {
  const state = requireString(fields, 'state');
  if (!NODE_STATES.includes(state as NodeState)) throw new KvError('BAD_REQUEST', `state must be one of ${NODE_STATES.join(', ')}`);
  const reason = fields['reason'];
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > REASON_LENGTH_MAX)) {
    throw new KvError('BAD_REQUEST', `reason must be a string of at most ${REASON_LENGTH_MAX} characters`);
  }
  return { state: state as NodeState, reason };
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * A heartbeat's metrics, checked whole: known ops and error codes only, counts that are
 * safe integers, histograms of exactly the fixed buckets. The hub adds them up and serves
 * them to Prometheus, so nothing it keeps can be of another shape or unbounded.
 */
function requireMetrics(raw: unknown): MetricsReport {
  const fields = requireObject(raw, 'metrics');
  const ops: Partial<Record<MeteredOp, OpCounts>> = {};
  for (const [op, counts] of Object.entries(requireObject(fields['ops'], 'metrics.ops'))) {
    if (!(METERED_OPS as readonly string[]).includes(op)) throw new KvError('BAD_REQUEST', `metrics.ops: unknown op "${op}"`);
    ops[op as MeteredOp] = requireOpCounts(counts, `metrics.ops.${op}`);
  }
  return {
    startedAtMs: requireCount(fields, 'startedAtMs'),
    ops,
    batches: requireCount(fields, 'batches'),
    batchedWrites: requireCount(fields, 'batchedWrites'),
    batchSizes: requireBuckets(fields['batchSizes'], BATCH_SIZE_BUCKETS.length + 1, 'metrics.batchSizes'),
    connections: requireCount(fields, 'connections'),
    connectionsTotal: requireCount(fields, 'connectionsTotal'),
    watchers: requireCount(fields, 'watchers'),
    bytesIn: requireCount(fields, 'bytesIn'),
    bytesOut: requireCount(fields, 'bytesOut'),
  };
}

function requireOpCounts(raw: unknown, where: string): OpCounts {
  const fields = requireObject(raw, where);
  const errors: Partial<Record<ErrorCode, number>> = {};
  for (const [code, count] of Object.entries(requireObject(fields['errors'], `${where}.errors`))) {
    if (!(ERROR_CODES as readonly string[]).includes(code) || !isCount(count)) throw new KvError('BAD_REQUEST', `${where}.errors: "${code}" is no error code with a count`);
    errors[code as ErrorCode] = count;
  }
  const sumMs = fields['sumMs'];
  if (typeof sumMs !== 'number' || !Number.isFinite(sumMs) || sumMs < 0) throw new KvError('BAD_REQUEST', `${where}.sumMs must be a number of ms`);
  return { count: requireCount(fields, 'count'), errors, latency: requireBuckets(fields['latency'], LATENCY_BUCKETS_MS.length + 1, `${where}.latency`), sumMs };
}

function requireBuckets(raw: unknown, length: number, where: string): number[] {
  if (!Array.isArray(raw) || raw.length !== length || !raw.every(isCount)) throw new KvError('BAD_REQUEST', `${where} must be ${length} counts`);
  return raw as number[];
}

function requireObject(raw: unknown, where: string): Fields {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new KvError('BAD_REQUEST', `${where} must be an object`);
  return raw as Fields;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

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

/** Node names a view or a heartbeat lists: at most VIEW_NODES_MAX. */
function requireNames(fields: Fields, name: string): string[] {
  const value = fields[name];
  if (!Array.isArray(value) || value.length > VIEW_NODES_MAX) throw new KvError('BAD_REQUEST', `${name} must be a list of at most ${VIEW_NODES_MAX} names`);
  return value.map((_, index) => requireName(value as unknown as Fields, String(index)));
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

/** A write's request tag: `client` and `req` together, or neither. */
function optionalTag(fields: Fields): RequestTag | undefined {
  const client = fields['client'];
  const req = fields['req'];
  if (client === undefined && req === undefined) return undefined;
  return requireTag(client, req);
}

function requireTag(client: unknown, req: unknown): RequestTag {
  if (typeof client !== 'string' || client.length === 0 || client.length > CLIENT_ID_LENGTH_MAX || !isWellFormed(client)) {
    throw new KvError('BAD_REQUEST', `client must be a string of 1-${CLIENT_ID_LENGTH_MAX} characters, sent with req`);
  }
  if (typeof req !== 'number' || !Number.isSafeInteger(req) || req < 1) {
    throw new KvError('BAD_REQUEST', 'req must be a positive integer, sent with client');
  }
  return { client, req };
}

function requireKey(fields: Fields, limits: Limits, name = 'key'): string {
  const key = fields[name];
  if (typeof key !== 'string' || key.length === 0) {
    throw new KvError('BAD_REQUEST', `${name} must be a non-empty string`);
  }
  return withinKeyLimit(key, name, limits);
}

/** A key prefix: any string a key could start with, `""` (every key) included. */
function requirePrefix(fields: Fields, limits: Limits): string {
  const prefix = fields['prefix'];
  if (typeof prefix !== 'string') throw new KvError('BAD_REQUEST', 'prefix must be a string ("" for every key)');
  return withinKeyLimit(prefix, 'prefix', limits);
}

function withinKeyLimit(key: string, name: string, limits: Limits): string {
  if (!isWellFormed(key)) throw new KvError('BAD_REQUEST', NOT_UNICODE(name));
  // A UTF-16 length within a third of the limit cannot exceed it in UTF-8.
  if (key.length * UTF8_BYTES_PER_UNIT_MAX > limits.keyBytesMax && Buffer.byteLength(key, 'utf8') > limits.keyBytesMax) {
    throw new KvError('TOO_LARGE', `${name} is over ${limits.keyBytesMax} bytes`);
  }
  return key;
}

/** A watch's `key` or `prefix`: exactly one of them. */
function requireWatchTarget(fields: Fields, limits: Limits): WatchTarget {
  const hasKey = fields['key'] !== undefined;
  const hasPrefix = fields['prefix'] !== undefined;
  if (hasKey === hasPrefix) throw new KvError('BAD_REQUEST', 'watch takes a key or a prefix ("" for every key), not both');
  return hasKey ? { kind: 'key', key: requireKey(fields, limits) } : { kind: 'prefix', prefix: requirePrefix(fields, limits) };
}

/** A watch's `fromVersion`: a positive version, or undefined. */
function optionalFromVersion(fields: Fields): number | undefined {
  const from = fields['fromVersion'];
  if (from === undefined) return undefined;
  if (typeof from !== 'number' || !Number.isSafeInteger(from) || from < 1) throw new KvError('BAD_REQUEST', 'fromVersion must be a positive integer');
  return from;
}

/** `ifVersion`: a key's version (0: the key is absent), or undefined. */
function optionalVersion(fields: Fields): number | undefined {
  return fields['ifVersion'] === undefined ? undefined : requireCount(fields, 'ifVersion');
}

/** `ttlMs` (a positive integer) or `expiresAt` (Unix ms), not both; whether it is in the future is the primary's to judge. */
function optionalExpiry(fields: Fields): Expiry | undefined {
  const ttlMs = fields['ttlMs'];
  const expiresAt = fields['expiresAt'];
  if (ttlMs !== undefined && expiresAt !== undefined) throw new KvError('BAD_REQUEST', 'ttlMs and expiresAt: send one of them, not both');
  if (ttlMs !== undefined) {
    if (typeof ttlMs !== 'number' || !Number.isSafeInteger(ttlMs) || ttlMs < 1) throw new KvError('BAD_REQUEST', 'ttlMs must be a positive integer (milliseconds)');
    return { kind: 'ttl', ms: ttlMs };
  }
  if (expiresAt !== undefined) {
    if (typeof expiresAt !== 'number' || !Number.isSafeInteger(expiresAt) || expiresAt < 1) throw new KvError('BAD_REQUEST', 'expiresAt must be a time in Unix milliseconds');
    return { kind: 'at', ms: expiresAt };
  }
  return undefined;
}

/** incr's `by`: a finite number, 1 when absent. */
function optionalBy(fields: Fields): number {
  const by = fields['by'] ?? 1;
  if (typeof by !== 'number' || !Number.isFinite(by)) throw new KvError('BAD_REQUEST', 'by must be a finite number');
  return by;
}

/** A page or chunk size: 1..max, `fallback` when absent. */
function optionalLimit(fields: Fields, fallback: number, max: number): number {
  const limit = fields['limit'];
  if (limit === undefined) return fallback;
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1 || limit > max) throw new KvError('BAD_REQUEST', `limit must be an integer from 1 to ${max}`);
  return limit;
}

function requireValue(fields: Fields, limits: Limits): { value: Json; valueJson: string } {
  if (!('value' in fields) || fields['value'] === null || fields['value'] === undefined) {
    throw new KvError('BAD_REQUEST', 'value must be present and not null');
  }
  const value = fields['value'] as Json;
  const invalid = invalidValue(value, VALUE_DEPTH_MAX);
  if (invalid) throw invalid;
  const valueJson = JSON.stringify(value);
  if (valueJson.length * 3 > limits.valueBytesMax && Buffer.byteLength(valueJson, 'utf8') > limits.valueBytesMax) {
    throw new KvError('TOO_LARGE', `value is over ${limits.valueBytesMax} bytes serialized`);
  }
  return { value, valueJson };
}

/** Snapshot entries: [key, value, version, expiresAt or null], values kept as their JSON. */
function requireSnapshotEntries(raw: unknown): SnapshotEntry[] {
  if (!Array.isArray(raw)) throw new KvError('BAD_REQUEST', 'entries must be an array');
  return raw.map((entry): SnapshotEntry => {
    if (
      Array.isArray(entry) && entry.length === 4 && isWireKey(entry[0]) && entry[1] !== null && entry[1] !== undefined &&
      !invalidValue(entry[1], VALUE_DEPTH_MAX) && isSeq(entry[2]) && (entry[3] === null || isSeq(entry[3]))
    ) {
      return [entry[0], JSON.stringify(entry[1]), entry[2], entry[3]];
    }
    throw new KvError('BAD_REQUEST', 'entries must be [key, value, version, expiresAt or null]');
  });
}

/** A key as the primary sends it: a non-empty, well-formed string. */
function isWireKey(key: unknown): key is string {
  return typeof key === 'string' && key.length > 0 && isWellFormed(key);
}

function isSeq(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

const NOT_UNICODE = (what: string) => `${what} must be well-formed Unicode (no lone UTF-16 surrogates)`;

/**
 * Whether a string is well-formed UTF-16. A lone surrogate has no UTF-8 form: SQLite,
 * Buffer and TextEncoder would each store or compare it as U+FFFD, so "s\ud800" and
 * "s\ufffd" would become one key.
 */
export function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

/**
 * Why a decoded value cannot be stored as it was sent, or undefined when it can: every
 * value must survive the round trip through JSON exactly, so numbers are finite (JSON.parse
 * reads 1e400 as Infinity, which JSON.stringify writes as null) and strings, object keys
 * included, are well-formed; and nesting stays within `depthMax`. Without recursion, so
 * no value can overflow the stack.
 */
export function invalidValue(value: unknown, depthMax: number): KvError | undefined {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    switch (typeof node) {
      case 'number':
        if (!Number.isFinite(node)) return new KvError('BAD_REQUEST', 'numbers in a value must be finite (JSON has no Infinity or NaN)');
        break;
      case 'string':
        if (!isWellFormed(node)) return new KvError('BAD_REQUEST', NOT_UNICODE('strings in a value'));
        break;
      case 'object':
        if (node === null) break;
        if (depth > depthMax) return new KvError('TOO_LARGE', `value is nested deeper than ${depthMax} levels`);
        if (Array.isArray(node)) {
          for (const child of node) stack.push([child, depth + 1]);
        } else {
          for (const [name, child] of Object.entries(node)) {
            if (!isWellFormed(name)) return new KvError('BAD_REQUEST', NOT_UNICODE('object keys in a value'));
            stack.push([child, depth + 1]);
          }
        }
        break;
      case 'boolean':
        break;
      default:
        return new KvError('BAD_REQUEST', `a value cannot hold ${typeof node}`);
    }
  }
  return undefined;
}

/**
 * The ops of an append frame (replication-log.ts, encodeOp): results the primary decided.
 * A value travels as its JSON text in a JSON string, so a replica takes the text the
 * primary validated and serialized, byte for byte, without parsing, checking or
 * serializing the value again: replication frames come only from the authenticated
 * primary of the current view, and the frame's framing is what a replica checks.
 *   ["p", key, "value"]  ["p", key, "value", client, req]            a plain put
 *   ["P", key, "value", expiresAt | null, incr, client | null, req | null]   a put with expiry, or an incr's
 *   ["d", key, found]  ["d", key, found, client, req]                a del
 *   ["x", key, expiredAt]                                            an expiry delete
 *   ["c", prefix, [keys], deleted, more, client | null, req | null]  a clear
 */
/**
 * The ops of a batch as the replication log keeps it (its wire text, the elements of an
 * append's `ops`), read with the same rules a replica reads them by.
 */
export function decodeWireOps(wire: string): WriteOp[] {
  return requireWriteOps(JSON.parse(`[${wire}]`) as unknown);
}

/** The fields an append has; a replica refuses any other (the ops' text is found by its framing). */
const APPEND_FIELDS = new Set(['id', 'op', 'epoch', 'first', 'ops']);

/**
 * The text of an append's `ops` as it came, and where each of its `count` ops starts in
 * it: what the replica's log keeps instead of encoding the ops again. The frame has been
 * parsed, so it is JSON: `"ops"` followed by a colon can only be that key (a quote inside a
 * string is escaped), and the scan finds each op's end by its brackets, skipping strings
 * (values among them) whole. Undefined unless there are `count` arrays and nothing else.
 */
function opsText(text: string, count: number): { wire: string; offsets: Uint32Array } | undefined {
  let start = -1;
  for (let at = text.indexOf('"ops"'); at >= 0 && start < 0; at = text.indexOf('"ops"', at + 1)) {
    let next = skipSpace(text, at + 5);
    if (text.charCodeAt(next) !== COLON) continue;
    next = skipSpace(text, next + 1);
    if (text.charCodeAt(next) === OPEN) start = skipSpace(text, next + 1);
  }
  if (start < 0) return undefined;
  const offsets = new Uint32Array(count);
  let at = start;
  let end = start;
  for (let op = 0; op < count; op += 1) {
    if (op > 0) {
      if (text.charCodeAt(at) !== COMMA) return undefined;
      at = skipSpace(text, at + 1);
    }
    if (text.charCodeAt(at) !== OPEN) return undefined;
    offsets[op] = at - start;
    end = arrayEnd(text, at);
    if (end < 0) return undefined;
    at = skipSpace(text, end);
  }
  return text.charCodeAt(at) === CLOSE ? { wire: text.slice(start, end), offsets } : undefined;
}

const OPEN = 0x5b;
const CLOSE = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function skipSpace(text: string, at: number): number {
  let next = at;
  for (let code = text.charCodeAt(next); code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09; code = text.charCodeAt(next)) next += 1;
  return next;
}

/** Just past the array that opens at `at` (nested arrays included, strings skipped whole); -1 if it does not close. */
function arrayEnd(text: string, at: number): number {
  let depth = 0;
  let next = at;
  while (next < text.length) {
    const code = text.charCodeAt(next);
    if (code === QUOTE) {
      next = stringEnd(text, next);
      if (next < 0) return -1;
      continue;
    }
    if (code === OPEN) depth += 1;
    else if (code === CLOSE && --depth === 0) return next + 1;
    next += 1;
  }
  return -1;
}

/** Just past the string that opens at `at`: its first quote not escaped by a backslash. */
function stringEnd(text: string, at: number): number {
  for (let quote = text.indexOf('"', at + 1); quote >= 0; quote = text.indexOf('"', quote + 1)) {
    let backslashes = 0;
    while (text.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes += 1;
    if (backslashes % 2 === 0) return quote + 1;
  }
  return -1;
}

function requireWriteOps(raw: unknown): WriteOp[] {
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new KvError('BAD_REQUEST', 'ops must be a non-empty array');
  }
  return raw.map((entry): WriteOp => {
    const op = Array.isArray(entry) ? writeOp(entry as unknown[]) : undefined;
    if (op === undefined) throw new KvError('BAD_REQUEST', `ops entries must be one of the forms of replication-log.ts; got ${JSON.stringify(entry)?.slice(0, 80)}`);
    return op;
  });
}

function writeOp(entry: unknown[]): WriteOp | undefined {
  const [kind, key] = entry;
  if (kind === 'c') return clearOp(entry);
  if (!isWireKey(key)) return undefined;
  // Every op has the same fields, tagged or not: the code that handles them stays monomorphic.
  switch (kind) {
    case 'p':
      if ((entry.length !== 3 && entry.length !== 5) || !isValueText(entry[2])) return undefined;
      return { kind: 'put', key, valueJson: entry[2], expiresAt: undefined, incr: false, tag: entry.length === 5 ? requireTag(entry[3], entry[4]) : undefined };
    case 'P':
      if (entry.length !== 7 || !isValueText(entry[2]) || !(entry[3] === null || isSeq(entry[3])) || typeof entry[4] !== 'boolean') return undefined;
      return { kind: 'put', key, valueJson: entry[2], expiresAt: entry[3] ?? undefined, incr: entry[4], tag: optionalWireTag(entry[5], entry[6]) };
    case 'd':
      if ((entry.length !== 3 && entry.length !== 5) || typeof entry[2] !== 'boolean') return undefined;
      return { kind: 'del', key, found: entry[2], expiredAt: undefined, tag: entry.length === 5 ? requireTag(entry[3], entry[4]) : undefined };
    case 'x':
      if (entry.length !== 3 || !isSeq(entry[2])) return undefined;
      return { kind: 'del', key, found: true, expiredAt: entry[2], tag: undefined };
    default:
      return undefined;
  }
}

function clearOp(entry: unknown[]): WriteOp | undefined {
  const [, prefix, keys, deleted, more, client, req] = entry;
  if (entry.length !== 7 || typeof prefix !== 'string' || !isWellFormed(prefix) || !Array.isArray(keys) || typeof more !== 'boolean') return undefined;
  if (!keys.every((key) => isWireKey(key) && key.startsWith(prefix))) return undefined;
  if (typeof deleted !== 'number' || !Number.isSafeInteger(deleted) || deleted < 0 || deleted > keys.length) return undefined;
  return { kind: 'clear', prefix, keys: keys as string[], deleted, more, tag: optionalWireTag(client, req) };
}

function optionalWireTag(client: unknown, req: unknown): RequestTag | undefined {
  return client === null && req === null ? undefined : requireTag(client, req);
}

/**
 * A value's JSON text as the primary sends it: what it checked and serialized, taken as
 * it is (not parsed again); a stored value is never empty nor null.
 */
function isValueText(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value !== 'null';
}

/** Client sessions of a snapshot: [client, req, seq, results]. */
function requireSessions(raw: unknown): ClientSession[] {
  if (!Array.isArray(raw)) throw new KvError('BAD_REQUEST', 'sessions must be an array');
  return raw.map((entry): ClientSession => {
    if (Array.isArray(entry) && entry.length === 4 && isSessionResults(entry[3], REQUEST_TAG_WINDOW)) {
      const { client, req } = requireTag(entry[0], entry[1]);
      const seq = entry[2] as unknown;
      if (typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0) return { client, req, seq, results: entry[3] };
    }
    throw new KvError('BAD_REQUEST', 'sessions entries must be [client, req, seq, results]');
  });
}
