/**
 * The checks that watch a run as it goes, on the disks and on the wire, against one ledger
 * of what the primaries committed and how far each disk got:
 *   I1  a write is acknowledged only once every replica of the view had applied it;
 *   I2  replicas apply the primary's writes, in its order, at its seqs, nothing else (so a
 *       batch that failed on the primary, I3, or a forged one, I4, is caught too);
 *   I4  no disk goes back to an older epoch;
 *   I5  nothing in the simulated code throws where nobody catches it;
 *   I7  once a primary of a view has answered a client, no node of an older view does; no
 *       write is applied twice, and a primary commits every write with its request tag.
 * And once the world has stopped, the one check of the whole client history: it must be
 * linearizable, so no acknowledged write was lost across any failover (I6).
 */
import { config as rxjsConfig } from 'rxjs';
import type { View, WriteOp } from '../protocol/messages.js';
import type { ReplicationState } from '../storage/store.js';
import { tagName, type DiskWatcher, type RecordingStore, type SimCluster } from './cluster.js';
import { checkLinearizable, type HistoryEntry } from './linearizability.js';
import { thrown, type Fail, type Trace, type Verdict } from './trace.js';
import type { SimProcess } from './world.js';

export function isAtOrPast(a: ReplicationState, b: ReplicationState): boolean {
  return a.epoch > b.epoch || (a.epoch === b.epoch && a.seq >= b.seq);
}

/** A write as one line, tag included, for the ledger and the messages. */
function encode(op: WriteOp): string {
  const tag = op.tag ? ` [${tagName(op.tag)}]` : '';
  switch (op.kind) {
    case 'put':
      return `${op.incr ? 'incr' : 'put'} ${op.key}=${op.valueJson}${op.expiresAt === undefined ? '' : ` ~${op.expiresAt}`}${tag}`;
    case 'del':
      return `del ${op.key}${op.expiredAt === undefined ? '' : ` expired@${op.expiredAt}`}${tag}`;
    case 'clear':
      return `clear ${JSON.stringify(op.prefix)} ${op.keys.length} keys${tag}`;
  }
}

/** The truth the disks and replies are checked against, and the fault injector reads. */
export class WriteLedger {
  /**
   * What primaries committed, by seq. A deposed primary's unacknowledged writes and its
   * successor's share seqs: both are kept, with their epochs.
   */
  readonly committed = new Map<number, { epoch: number; op: string }[]>();
  /** Where each put's value was committed (the scenario never puts one value twice). */
  readonly valueAt = new Map<string, ReplicationState>();
  /** The newest position a primary acknowledged a write at. */
  ackedMax: ReplicationState = { epoch: 0, seq: 0 };
  /** How far each node's disk ever got, by applying or by restoring. */
  private readonly highWater = new Map<string, ReplicationState>();

  /** Undefined for a node whose disk never applied or restored anything. */
  reached(node: string): ReplicationState | undefined {
    return this.highWater.get(node);
  }

  raise(node: string, state: ReplicationState): void {
    const high = this.highWater.get(node);
    if (!high || isAtOrPast(state, high)) this.highWater.set(node, state);
  }

  /** A primary committed `ops` from seq `first` on. */
  commit(epoch: number, first: number, ops: readonly WriteOp[]): void {
    ops.forEach((op, index) => {
      const seq = first + index;
      this.committed.set(seq, [...(this.committed.get(seq) ?? []), { epoch, op: encode(op) }]);
      if (op.kind === 'put') this.valueAt.set(op.valueJson, { epoch, seq });
    });
  }

  /** A primary acknowledged the put it committed `at`. */
  acknowledged(at: ReplicationState): void {
    if (isAtOrPast(at, this.ackedMax)) this.ackedMax = at;
  }
}

/** Checks every batch a disk applies (I2, I4, I7) and keeps the ledger. */
export function checkDisks(ledger: WriteLedger, trace: Trace, fail: Fail): DiskWatcher {
  return {
    applying(node, disk, epoch, first, ops, asPrimary, marks) {
      const last = first + ops.length - 1;
      trace.log(`${node} applies ${first}-${last} epoch ${epoch}${asPrimary ? ' as primary' : ''}`);
      if (first !== disk.state.seq + 1) fail('I2', `${node} applied seqs ${first}-${last} on top of seq ${disk.state.seq}`);
      if (epoch < disk.state.epoch) fail('I4', `${node} applied epoch ${epoch} over its epoch ${disk.state.epoch}`);
      checkAppliedOnce(node, disk, epoch, first, ops, asPrimary, marks, fail);
      if (asPrimary) ledger.commit(epoch, first, ops);
      else checkReplicated(ledger, node, epoch, first, ops, fail);
      ledger.raise(node, { epoch, seq: last });
    },
    restored(node, _disk, state) {
      trace.log(`${node} restored a snapshot at (${state.epoch}, ${state.seq})`);
      ledger.raise(node, state);
    },
  };
}

/**
 * At most once (I7): a tag or a put's value already in this disk's history, or twice in
 * one batch, is a write applied twice. Every client here tags every write, so a primary
 * committing one without its tag is a fault too (its own expiry deletes aside).
 */
function checkAppliedOnce(node: string, disk: RecordingStore, epoch: number, first: number, ops: readonly WriteOp[], asPrimary: boolean, marks: readonly (readonly string[])[], fail: Fail): void {
  const inBatch = new Set<string>();
  ops.forEach((op, index) => {
    // The primary's expiry deletes are its own writes: no client asked for them.
    const expiryDelete = op.kind === 'del' && op.expiredAt !== undefined;
    if (asPrimary && !op.tag && !expiryDelete) fail('I7', `${node} committed "${encode(op)}" at seq ${first + index} without its request tag`);
    for (const mark of marks[index]!) {
      if (disk.holds(mark) || inBatch.has(mark)) fail('I7', `${node} applied ${encode(op)} at seq ${first + index} (epoch ${epoch}), a write its history holds already`);
      inBatch.add(mark);
    }
  });
}

/**
 * I2: a replica applies what a primary committed at that seq, in that epoch or before (a
 * batch of several is applied in the epoch of its last part).
 */
function checkReplicated(ledger: WriteLedger, node: string, epoch: number, first: number, ops: readonly WriteOp[], fail: Fail): void {
  ops.forEach((op, index) => {
    const seq = first + index;
    const candidates = ledger.committed.get(seq) ?? [];
    if (!candidates.some((entry) => entry.op === encode(op) && entry.epoch <= epoch)) {
      fail('I2', `${node} applied "${encode(op)}" at seq ${seq} (epoch ${epoch}), which no primary committed there: ${candidates.map((entry) => `epoch ${entry.epoch}: ${entry.op}`).join('; ') || 'nothing'}`);
    }
  });
}

/**
 * Checked on the wire, as the nodes reply to clients:
 * I1: when a primary sends "ok" for a write, every replica of a view it held has applied
 * (at some point) the seq the write was committed at;
 * I7: once a primary of some view has answered a client, no node holding an older view
 * answers one (the leases guarantee it: the new primary waits for them to run out).
 */
export function checkReplies(cluster: SimCluster, ledger: WriteLedger, fail: Fail): void {
  // A reply names no key or value: the write it answers is found by connection and id.
  const writes = new Map<string, { op: string; valueJson: string | undefined }>();
  let newestServing: { epoch: number; node: string } | undefined;
  cluster.network.sent$.subscribe((frame) => {
    const { from, to, connection } = frame;
    const clientSide = (process: SimProcess) => process.name.startsWith('c');
    if (clientSide(from) && !clientSide(to)) {
      const request = frame.json as { id?: unknown; op?: unknown; value?: unknown };
      if (request.op === 'put' || request.op === 'del' || request.op === 'incr') {
        writes.set(`${connection}:${String(request.id)}`, { op: request.op, valueJson: request.op === 'put' ? JSON.stringify(request.value) : undefined });
      }
      return;
    }
    if (!clientSide(to) || clientSide(from) || from.name === 'hub') return;
    const reply = frame.json as { id?: unknown; ok?: unknown; version?: unknown };
    const key = `${connection}:${String(reply.id)}`;
    const write = writes.get(key);
    writes.delete(key);
    if (reply.ok !== true) return;
    const view = cluster.nodes.find((handle) => handle.process === from)?.node?.servingView;
    if (!view || view.primary !== from.name) return fail('I7', `${from.name} answered a client while it is not the primary of the view it holds`);
    if (newestServing && view.epoch < newestServing.epoch) {
      return fail('I7', `${from.name} (view ${view.epoch}) answered a client after ${newestServing.node}, primary of view ${newestServing.epoch}, did`);
    }
    if (!newestServing || view.epoch > newestServing.epoch) newestServing = { epoch: view.epoch, node: from.name };
    if (write === undefined) return;
    const what = write.valueJson === undefined ? `the ${write.op} at version ${String(reply.version)}` : `the put of ${write.valueJson}`;
    const at = write.valueJson === undefined ? committedAt(ledger, reply.version, view) : ledger.valueAt.get(write.valueJson);
    if (!at) return fail('I1', `${from.name} acknowledged ${what}, which it never applied`);
    checkAcknowledgedWrite(cluster, ledger, from.name, view, at, what, fail);
  });
}

/**
 * Where a write acknowledged at `version` by the primary of `view` was committed: the
 * newest epoch up to the view's that a primary committed that seq in.
 */
function committedAt(ledger: WriteLedger, version: unknown, view: View): ReplicationState | undefined {
  if (typeof version !== 'number') return undefined;
  const epochs = (ledger.committed.get(version) ?? []).map((entry) => entry.epoch).filter((epoch) => epoch <= view.epoch);
  return epochs.length === 0 ? undefined : { epoch: Math.max(...epochs), seq: version };
}

/**
 * I1. The reply leaves a moment after the write was acknowledged, and the view may have
 * changed in between: the write was acknowledged under some view from the epoch it was
 * committed in to the one the primary serves under now; all of that view's replicas must
 * have applied it.
 */
function checkAcknowledgedWrite(cluster: SimCluster, ledger: WriteLedger, primary: string, serving: View, at: ReplicationState, what: string, fail: Fail): void {
  ledger.acknowledged(at);
  const applied = (replica: string) => isAtOrPast(ledger.reached(replica) ?? { epoch: 0, seq: 0 }, at);
  const views = [...cluster.views.values()].filter((candidate) => candidate.epoch >= at.epoch && candidate.epoch <= serving.epoch && candidate.primary === primary);
  if (!views.some((candidate) => candidate.replicas.every(applied))) {
    const missing = serving.replicas.filter((replica) => !applied(replica)).map((replica) => `${replica} at ${JSON.stringify(ledger.reached(replica) ?? null)}`);
    fail('I1', `${primary} acknowledged ${what} at (${at.epoch}, ${at.seq}) before every replica of its view had it: ${missing.join(', ')} (views ${views.map((candidate) => candidate.epoch).join(', ')})`);
  }
}

/**
 * I5: an error nothing handled, anywhere in the simulated code, fails the seed where it
 * happened. Returns the release, to call once the world has stopped.
 */
export function catchUnhandled(fail: Fail): () => void {
  const unhandled = (error: unknown) => {
    const { said, where } = thrown(error);
    fail('I5', `unhandled: ${said}`, where);
  };
  process.on('unhandledRejection', unhandled);
  const previousOnUnhandledError = rxjsConfig.onUnhandledError;
  rxjsConfig.onUnhandledError = unhandled;
  return () => {
    process.off('unhandledRejection', unhandled);
    rxjsConfig.onUnhandledError = previousOnUnhandledError;
  };
}

export type LinearizabilityVerdict = 'ok' | 'undecided' | 'failed';
/**
 * Whether the history also holds to the stronger promise that a key once seen expired is
 * never live again ('held'), or needed it to be ('reappeared': a gap the design leaves,
 * kv-model.ts), or was not checked (the history failed the model, or the search undecided).
 */
export type StrictExpiryVerdict = 'held' | 'reappeared' | 'undecided' | 'not checked';

export interface HistoryVerdict {
  linearizability: LinearizabilityVerdict;
  strictExpiry: StrictExpiryVerdict;
  /** For 'reappeared': the strict check's explanation. */
  reappeared: string | undefined;
}

/**
 * I6, once the world has stopped. A run that broke a check already is not searched: its
 * verdict is that first broken check. A history is held to the design's model and to the
 * strict expiry model: a reappearance fails the seed only if `strictExpiry`. The strict
 * model only takes states away from the design's (kv-model.ts), so a history it accepts
 * the design's accepts too: it is searched first, and the design's model only when the
 * strict one does not accept, which saves most seeds a second search.
 */
export function judgeHistory(history: readonly HistoryEntry[], verdict: Verdict, trace: Trace, options: { strictExpiry: boolean }): HistoryVerdict {
  const notChecked = (linearizability: LinearizabilityVerdict): HistoryVerdict => ({ linearizability, strictExpiry: 'not checked', reappeared: undefined });
  if (verdict.violation) return notChecked('failed');
  const strict = checkLinearizable(history, { strict: true });
  if (strict.ok === true) return { linearizability: 'ok', strictExpiry: 'held', reappeared: undefined };
  const result = checkLinearizable(history);
  if (result.ok === 'undecided') {
    trace.log(`linearizability undecided on ${result.key}: ${result.reason}`);
    return notChecked('undecided');
  }
  if (result.ok === false) {
    verdict.judged('linearizability', `the history of key ${result.key} is not linearizable:\n${result.explanation}`);
    return notChecked('failed');
  }
  if (strict.ok === 'undecided') return { linearizability: 'ok', strictExpiry: 'undecided', reappeared: undefined };
  const reappeared = `key ${strict.key}, seen expired, was live again (before its expiry delete, on a clock behind):\n${strict.explanation}`;
  if (options.strictExpiry) verdict.judged('expiry', reappeared);
  return { linearizability: 'ok', strictExpiry: 'reappeared', reappeared };
}
