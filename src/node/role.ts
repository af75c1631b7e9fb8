/**
 * What a node is, as one state: the views it heard of and took on, and the one object
 * that acts for it (an applier taking the primary's frames, or a PrimaryRole serving).
 * The transitions are a pure function of (state, event); the node performs what they
 * call for (settling the applier, closing a deposed primary) and reports the outcome as
 * the next event. Views are taken on one at a time, in epoch order; `heard` may arrive
 * at any time, so fencing follows the newest view at once.
 *
 *   unassigned --heard--> following --adopt(names this node)--> taking-over
 *   taking-over --took-over--> leading --adopt(names another)--> stepping-down
 *   stepping-down --stepped-down--> following; taking-over --gave-up--> following
 */
import { assert } from '../errors.js';
import type { View } from '../protocol/messages.js';
import type { PrimaryRole } from './primary-role.js';
import type { ReplicaApplier } from './replica-applier.js';

export type RoleState =
  /** No view heard yet: nothing is taken or served. */
  | { readonly kind: 'unassigned'; readonly applier: ReplicaApplier }
  /** A replica of `view`, or a candidate outside it: takes the frames of its primary. */
  | { readonly kind: 'following'; readonly view: View; readonly adopted: View | undefined; readonly applier: ReplicaApplier }
  /** Named primary: what the applier was applying comes to rest before this node writes. */
  | { readonly kind: 'taking-over'; readonly view: View; readonly adopted: View | undefined; readonly applier: ReplicaApplier }
  /** The primary: serves clients through its role (which keeps the view writes wait for). */
  | { readonly kind: 'leading'; readonly view: View; readonly primary: PrimaryRole }
  /** Deposed: writes not acknowledged fail and the store comes to rest; nothing is taken meanwhile. */
  | { readonly kind: 'stepping-down'; readonly view: View; readonly adopted: View | undefined; readonly deposed: PrimaryRole };

export type RoleEvent =
  /** A view newer than any heard before: fencing follows it at once. */
  | { readonly type: 'heard'; readonly view: View }
  /** The node starts taking on `view` (the views it heard, one at a time). */
  | { readonly type: 'adopt'; readonly view: View }
  | { readonly type: 'took-over'; readonly primary: PrimaryRole }
  /** Taking over failed (the store did not come to rest): the node follows again. */
  | { readonly type: 'gave-up' }
  | { readonly type: 'stepped-down'; readonly applier: ReplicaApplier }
  /** `view` is taken on: the node serves under it. */
  | { readonly type: 'adopted'; readonly view: View };

/** The state after `event`, for the node named `self`. */
export function nextRole(state: RoleState, event: RoleEvent, self: string): RoleState {
  switch (event.type) {
    case 'heard':
      if (state.kind === 'unassigned') return { kind: 'following', view: event.view, adopted: undefined, applier: state.applier };
      assert(event.view.epoch > state.view.epoch, `view ${event.view.epoch} is newer than view ${state.view.epoch}`);
      return { ...state, view: event.view };
    case 'adopt': {
      const leads = event.view.primary === self;
      if (state.kind === 'following' && leads) return { kind: 'taking-over', view: state.view, adopted: state.adopted, applier: state.applier };
      if (state.kind === 'leading' && !leads) return { kind: 'stepping-down', view: state.view, adopted: state.primary.activeView, deposed: state.primary };
      assert(state.kind === 'following' || state.kind === 'leading', `a view is taken on while ${state.kind}`);
      return state;
    }
    case 'took-over':
      assert(state.kind === 'taking-over', `took over while ${state.kind}`);
      return { kind: 'leading', view: state.view, primary: event.primary };
    case 'gave-up':
      assert(state.kind === 'taking-over', `gave up taking over while ${state.kind}`);
      return { kind: 'following', view: state.view, adopted: state.adopted, applier: state.applier };
    case 'stepped-down':
      assert(state.kind === 'stepping-down', `stepped down while ${state.kind}`);
      return { kind: 'following', view: state.view, adopted: state.adopted, applier: event.applier };
    case 'adopted':
      assert(state.kind === 'following' || state.kind === 'leading', `a view is taken on while ${state.kind}`);
      return state.kind === 'following' ? { ...state, adopted: event.view } : state;
  }
}

/** The view this node serves under: the newest it finished taking on. */
export function servingView(state: RoleState): View | undefined {
  switch (state.kind) {
    case 'unassigned':
      return undefined;
    case 'leading':
      return state.primary.activeView;
    default:
      return state.adopted;
  }
}
