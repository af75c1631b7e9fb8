/**
 * Where a store stands in the primary's history: (epoch, seq) of the last write it holds,
 * compared epoch first. Within one epoch there is one primary and one history, and the
 * primary applies each write before any replica does, so a node at or behind the primary
 * in the same epoch holds a prefix of its history. Data only ever flows from a node that
 * is ahead: nobody is rolled back to an older or empty store.
 */
import type { ReplicationState } from '../storage/store.js';

export function isAhead(a: ReplicationState, b: ReplicationState): boolean {
  return a.epoch > b.epoch || (a.epoch === b.epoch && a.seq > b.seq);
}

export function formatPosition(state: ReplicationState): string {
  return `(epoch ${state.epoch}, seq ${state.seq})`;
}
