/**
 * What a store remembers of the clients that tag their writes, so a retried write is
 * applied at most once and gets its first reply (PROTOCOL.md, "Retries applied at most
 * once"). Per client: its highest request number applied, the seq of its last write, and
 * what became of its last REQUEST_TAG_WINDOW requests, one result each, newest first:
 * `.` not applied (a gap: that request failed, or has not arrived yet), else what its
 * reply said (messages.ts, SESSION_RESULT): the seq it was applied at, which is its
 * version, and a del's `found`, an incr's value, a clear's count and `more`.
 *
 * Sessions change only with the writes themselves, in the same transaction, on every node
 * alike: a replica derives them from the ops it applies (results, not requests), as the
 * primary did. The least recently written client is forgotten first once
 * CLIENT_SESSIONS_MAX are kept, so every node forgets the same one; the order is the seq of
 * each client's last write.
 */
import { CLIENT_SESSIONS_MAX, REQUEST_TAG_WINDOW } from '../constants.js';
import type { ClientSession, RequestTag, WriteOp } from '../protocol/messages.js';

export type { ClientSession } from '../protocol/messages.js';

/** What became of a tagged write this store has seen. */
export type TagCheck =
  /** Never applied here: apply it. */
  | { kind: 'new' }
  /** Applied at `seq`: its reply's fields beyond id and ok, `version` and the rest (`"version":17`). */
  | { kind: 'applied'; reply: string; seq: number }
  /** Older than the window: whether it was applied is not known any more. */
  | { kind: 'stale'; oldest: number };

/**
 * One tagged write of a batch as the sessions see it: its tag, its seq and its result. A
 * batch's sessions are derived from these alone, so a store can log them and derive the
 * sessions again later (sqlite-store.ts folds its log of them into rows now and then).
 */
export interface TaggedResult {
  client: string;
  req: number;
  seq: number;
  result: string;
}

/** The tagged writes of a batch applied at seqs first, first+1, ..., in order. */
export function taggedResults(first: number, ops: readonly WriteOp[]): TaggedResult[] {
  const tagged: TaggedResult[] = [];
  for (let index = 0; index < ops.length; index += 1) {
    const op = ops[index]!;
    if (op.tag !== undefined) tagged.push({ client: op.tag.client, req: op.tag.req, seq: first + index, result: resultOf(op, first + index) });
  }
  return tagged;
}

/** What one batch does to the sessions: rows to write, in the order of their last write, and clients forgotten. */
export interface SessionChanges {
  changed: ClientSession[];
  forgotten: string[];
}

const NOT_APPLIED = '.';

const NEW: TagCheck = Object.freeze({ kind: 'new' });

/** One client's session as a batch changes it, op by op, while its requests rise in order. */
interface Draft {
  current: ClientSession | undefined;
  newest: number;
  /** The batch's results so far, oldest first, with gaps (reversed once, at the end). */
  results: string[];
  /** The seq of the client's last op in the batch. */
  seq: number;
  inOrder: boolean;
}

/** What the session keeps of an op applied at `seq` (messages.ts, SESSION_RESULT). */
export function resultOf(op: WriteOp, seq: number): string {
  switch (op.kind) {
    case 'put':
      return op.incr ? `i${seq}:${op.valueJson}` : `p${seq}`;
    case 'del':
      return `${op.found ? 't' : 'f'}${seq}`;
    case 'clear':
      return `c${seq}:${op.deleted}:${op.more ? 1 : 0}`;
  }
}

/** The reply's fields (after id and ok) for `op` applied at `seq`: what replyFields(resultOf(op, seq)) reads back, built at once. */
export function replyOf(op: WriteOp, seq: number): string {
  switch (op.kind) {
    case 'put':
      return op.incr ? `"value":${op.valueJson},"version":${seq}` : `"version":${seq}`;
    case 'del':
      return `"found":${op.found},"version":${seq}`;
    case 'clear':
      return `"deleted":${op.deleted},"more":${op.more},"version":${seq}`;
  }
}

/** A reply's fields as `result` recorded them (after id and ok). */
export function replyFields(result: string): { reply: string; seq: number } {
  const mark = result[0];
  const colon = result.indexOf(':');
  const seq = Number(colon < 0 ? result.slice(1) : result.slice(1, colon));
  switch (mark) {
    case 'p':
      return { reply: `"version":${seq}`, seq };
    case 't':
    case 'f':
      return { reply: `"found":${mark === 't'},"version":${seq}`, seq };
    case 'i':
      return { reply: `"value":${result.slice(colon + 1)},"version":${seq}`, seq };
    default: {
      const [deleted, more] = result.slice(colon + 1).split(':');
      return { reply: `"deleted":${deleted},"more":${more === '1'},"version":${seq}`, seq };
    }
  }
}

export interface SessionLimits {
  sessionsMax: number;
  window: number;
}

export class ClientSessions {
  /** Least recently written first: a Map keeps insertion order, and a write re-inserts. */
  private sessions = new Map<string, ClientSession>();

  constructor(private readonly limits: SessionLimits = { sessionsMax: CLIENT_SESSIONS_MAX, window: REQUEST_TAG_WINDOW }) {}

  get size(): number {
    return this.sessions.size;
  }

  get(client: string): ClientSession | undefined {
    return this.sessions.get(client);
  }

  /** Every session, least recently written first: what a snapshot carries. */
  all(): ClientSession[] {
    return [...this.sessions.values()];
  }

  check(tag: RequestTag): TagCheck {
    const session = this.sessions.get(tag.client);
    if (!session || tag.req > session.req) return NEW;
    const age = session.req - tag.req;
    if (age >= this.limits.window) return { kind: 'stale', oldest: session.req - this.limits.window + 1 };
    const result = session.results[age];
    // Below a session's first request lies nothing it saw: a client's first writes may
    // arrive out of order after a reconnect.
    if (result === undefined || result === NOT_APPLIED) return NEW;
    return { kind: 'applied', ...replyFields(result) };
  }

  /**
   * What applying `ops` at seqs first, first+1, ... changes: computed before the batch
   * commits, taken by `commit` once it has.
   */
  plan(first: number, ops: readonly WriteOp[]): SessionChanges {
    return this.planResults(taggedResults(first, ops));
  }

  /** What a batch's tagged writes, in seq order, change (plan, from what a log of them kept). */
  planResults(tagged: readonly TaggedResult[]): SessionChanges {
    // One pass over the batch, one draft per client. Its requests usually rise past the
    // session's newest, in order: then the new results (with the requests they skipped as
    // gaps) go in front of the old ones, one array per client and batch.
    const { window } = this.limits;
    const drafts = new Map<string, Draft>();
    for (const { client, req, seq, result } of tagged) {
      let draft = drafts.get(client);
      if (draft === undefined) {
        const current = this.sessions.get(client);
        draft = { current, newest: current?.req ?? 0, results: [], seq: 0, inOrder: true };
        drafts.set(client, draft);
      }
      draft.seq = seq;
      if (!draft.inOrder) continue;
      if (req <= draft.newest) {
        draft.inOrder = false;
        continue;
      }
      // Below a new session's first request lies nothing: no gap there.
      const skipped = draft.current === undefined && draft.results.length === 0 ? 0 : Math.min(req - draft.newest - 1, window);
      for (let gap = 0; gap < skipped; gap += 1) draft.results.push(NOT_APPLIED);
      draft.results.push(result);
      draft.newest = req;
    }
    const changed: ClientSession[] = [];
    let added = 0;
    for (const [client, draft] of drafts) {
      const { current } = draft;
      const next = draft.inOrder
        ? { client, req: draft.newest, seq: draft.seq, results: newestFirst(draft.results, current?.results, window) }
        : this.recordEach(current, client, tagged);
      if (next === current) continue;
      changed.push(next!);
      if (!current) added += 1;
    }
    changed.sort((a, b) => a.seq - b.seq);
    const forgotten: string[] = [];
    let excess = this.sessions.size + added - this.limits.sessionsMax;
    for (const client of this.sessions.keys()) {
      if (excess <= 0) break;
      if (drafts.has(client)) continue;
      forgotten.push(client);
      excess -= 1;
    }
    return { changed, forgotten };
  }

  /** The batch `changes` were planned for has committed. */
  commit(changes: SessionChanges): void {
    for (const client of changes.forgotten) this.sessions.delete(client);
    for (const session of changes.changed) {
      this.sessions.delete(session.client);
      this.sessions.set(session.client, session);
    }
  }

  /** Replaces every session (a restore, or a store opening): least recently written first. */
  replace(sessions: readonly ClientSession[]): void {
    this.sessions = new Map(sessions.map((session) => [session.client, session]));
  }

  /** A copy holding the same sessions (a crashed memory store's survivor). */
  copy(): ClientSessions {
    const copy = new ClientSessions(this.limits);
    copy.sessions = new Map(this.sessions);
    return copy;
  }

  /** The session after each write in turn: for requests that arrive out of order. */
  private recordEach(current: ClientSession | undefined, client: string, tagged: readonly TaggedResult[]): ClientSession | undefined {
    let session = current;
    for (const write of tagged) {
      if (write.client === client) session = this.record(session, client, write.req, write.result, write.seq) ?? session;
    }
    return session;
  }

  /** The session after request `req` was applied at `seq`; undefined if it is past the window. */
  private record(current: ClientSession | undefined, client: string, req: number, result: string, seq: number): ClientSession | undefined {
    const { window } = this.limits;
    if (!current) return { client, req, seq, results: [result] };
    if (req > current.req) {
      const gap = new Array<string>(Math.min(req - current.req - 1, window)).fill(NOT_APPLIED);
      return { client, req, seq, results: [result, ...gap, ...current.results].slice(0, window) };
    }
    const age = current.req - req;
    if (age >= window) return undefined;
    const results = [...current.results];
    while (results.length < age) results.push(NOT_APPLIED);
    results[age] = result;
    return { client, req: current.req, seq, results };
  }
}

/** The batch's results (oldest first) in front of the session's (newest first), at most `window`. */
function newestFirst(added: string[], before: readonly string[] | undefined, window: number): string[] {
  const results = added.reverse();
  if (before) for (let index = 0; index < before.length && results.length < window; index += 1) results.push(before[index]!);
  return results.length > window ? results.slice(0, window) : results;
}
