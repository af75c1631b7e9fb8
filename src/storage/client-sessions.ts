/**
 * What a store remembers of the clients that tag their writes, so a retried write is
 * applied at most once (PROTOCOL.md, "Retries applied at most once"). Per client: its
 * highest request number applied, the seq of its last write, and what became of its last
 * REQUEST_TAG_WINDOW requests, one mark each, newest first:
 *   p  a put, applied          t / f  a del, applied; its key was found / not found
 *   .  not applied (a gap: that request failed, or has not arrived yet)
 * That is all a reply needs: a put answers ok, a del whether it found its key.
 *
 * Sessions change only with the writes themselves, in the same transaction, on every node
 * alike: a replica derives them from the ops it applies, as the primary did. The least
 * recently written client is forgotten first once CLIENT_SESSIONS_MAX are kept, so every
 * node forgets the same one; the order is the seq of each client's last write.
 */
import { CLIENT_SESSIONS_MAX, REQUEST_TAG_WINDOW } from '../constants.js';
import type { ClientSession, RequestTag, WriteOp } from '../protocol/messages.js';

export type { ClientSession } from '../protocol/messages.js';

/** What became of a tagged write this store has seen. */
export type TagCheck =
  /** Never applied here: apply it. */
  | { kind: 'new' }
  /** Applied at or before `seq`; its reply, a del's `found` included. */
  | { kind: 'applied'; found: boolean; seq: number }
  /** Older than the window: whether it was applied is not known any more. */
  | { kind: 'stale'; oldest: number };

/** What one batch does to the sessions: rows to write, in the order of their last write, and clients forgotten. */
export interface SessionChanges {
  changed: ClientSession[];
  forgotten: string[];
}

const MARK_NOT_APPLIED = '.';

const NEW: TagCheck = Object.freeze({ kind: 'new' });

/** One client's session as a batch changes it, op by op, while its requests rise in order. */
interface Draft {
  current: ClientSession | undefined;
  newest: number;
  /** The batch's marks so far, newest first, with gaps. */
  marks: string;
  /** The seq of the client's last op in the batch. */
  seq: number;
  inOrder: boolean;
}

/** A batch as plan() is given it: its ops at seqs first, first+1, ..., and whether each op's key existed. */
interface Batch {
  first: number;
  ops: readonly WriteOp[];
  found: readonly boolean[];
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
    const mark = session.results[age];
    // Below a session's first request lies nothing it saw: a client's first writes may
    // arrive out of order after a reconnect.
    if (mark === undefined || mark === MARK_NOT_APPLIED) return NEW;
    return { kind: 'applied', found: mark === 't', seq: session.seq };
  }

  /**
   * What applying `ops` at seqs first, first+1, ... changes, given whether each op's key
   * existed: computed before the batch commits, taken by `commit` once it has.
   */
  plan(first: number, ops: readonly WriteOp[], found: readonly boolean[]): SessionChanges {
    // One pass over the batch, one draft per client. Its requests usually rise past the
    // session's newest, in order: then the new marks (with the requests they skipped as
    // gaps) go in front of the old ones, one string per client and batch.
    const { window } = this.limits;
    const drafts = new Map<string, Draft>();
    for (let index = 0; index < ops.length; index += 1) {
      const op = ops[index]!;
      const tag = op.tag;
      if (tag === undefined) continue;
      let draft = drafts.get(tag.client);
      if (draft === undefined) {
        const current = this.sessions.get(tag.client);
        draft = { current, newest: current?.req ?? 0, marks: '', seq: 0, inOrder: true };
        drafts.set(tag.client, draft);
      }
      draft.seq = first + index;
      if (!draft.inOrder) continue;
      if (tag.req <= draft.newest) {
        draft.inOrder = false;
        continue;
      }
      // Below a new session's first request lies nothing: no gap there.
      const skipped = draft.current === undefined && draft.marks === '' ? 0 : Math.min(tag.req - draft.newest - 1, window);
      const mark = op.kind === 'put' ? 'p' : found[index] ? 't' : 'f';
      draft.marks = skipped > 0 ? mark + MARK_NOT_APPLIED.repeat(skipped) + draft.marks : mark + draft.marks;
      draft.newest = tag.req;
    }
    const changed: ClientSession[] = [];
    let added = 0;
    for (const [client, draft] of drafts) {
      const { current } = draft;
      const next = draft.inOrder
        ? { client, req: draft.newest, seq: draft.seq, results: (current ? draft.marks + current.results : draft.marks).slice(0, window) }
        : this.recordEach(current, client, { first, ops, found });
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

  /** The session after each op in turn: for requests that arrive out of order. */
  private recordEach(current: ClientSession | undefined, client: string, batch: Batch): ClientSession | undefined {
    const { first, ops, found } = batch;
    let session = current;
    ops.forEach((op, index) => {
      if (op.tag?.client !== client) return;
      session = this.record(session, client, op.tag.req, op.kind === 'put' ? 'p' : found[index] ? 't' : 'f', first + index) ?? session;
    });
    return session;
  }

  /** The session after request `req` was applied at `seq`; undefined if it is past the window. */
  private record(current: ClientSession | undefined, client: string, req: number, mark: string, seq: number): ClientSession | undefined {
    const { window } = this.limits;
    if (!current) return { client, req, seq, results: mark };
    if (req > current.req) {
      const gap = MARK_NOT_APPLIED.repeat(Math.min(req - current.req - 1, window));
      return { client, req, seq, results: (mark + gap + current.results).slice(0, window) };
    }
    const age = current.req - req;
    if (age >= window) return undefined;
    const results = current.results.padEnd(age, MARK_NOT_APPLIED);
    return { client, req: current.req, seq, results: results.slice(0, age) + mark + results.slice(age + 1) };
  }
}
