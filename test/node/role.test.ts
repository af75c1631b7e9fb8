import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { View } from '../../src/protocol/messages.js';
import type { PrimaryRole } from '../../src/node/primary-role.js';
import type { ReplicaApplier } from '../../src/node/replica-applier.js';
import { nextRole, servingView, type RoleEvent, type RoleState } from '../../src/node/role.js';

// The objects a state holds are only carried by the transitions, never called: stand-ins do.
const applier = { name: 'applier' } as unknown as ReplicaApplier;
const freshApplier = { name: 'fresh applier' } as unknown as ReplicaApplier;
const view = (epoch: number, primary: string): View => ({ epoch, primary, replicas: ['n0', 'n1', 'n2'].filter((name) => name !== primary) });
const primaryOf = (active: View) => ({ activeView: active }) as unknown as PrimaryRole;

const v1 = view(1, 'n0');
const v2 = view(2, 'n1');
const v3 = view(3, 'n0');
const leadingV1 = primaryOf(v1);

const Role = suite('node: role state transitions (pure, for the node named n0)');

const table: Array<[string, RoleState, RoleEvent, RoleState]> = [
  ['the first view heard makes an unassigned node follow it, not yet serving under it',
    { kind: 'unassigned', applier }, { type: 'heard', view: v2 },
    { kind: 'following', view: v2, adopted: undefined, applier }],
  ['a newer view heard while following changes what is fenced at once, not what is served',
    { kind: 'following', view: v2, adopted: v2, applier }, { type: 'heard', view: v3 },
    { kind: 'following', view: v3, adopted: v2, applier }],
  ['taking on a view naming another primary keeps following',
    { kind: 'following', view: v2, adopted: undefined, applier }, { type: 'adopt', view: v2 },
    { kind: 'following', view: v2, adopted: undefined, applier }],
  ['taking on a view naming this node starts taking over with the same applier',
    { kind: 'following', view: v3, adopted: v2, applier }, { type: 'adopt', view: v3 },
    { kind: 'taking-over', view: v3, adopted: v2, applier }],
  ['a view heard while taking over is fenced at once',
    { kind: 'taking-over', view: v1, adopted: undefined, applier }, { type: 'heard', view: v2 },
    { kind: 'taking-over', view: v2, adopted: undefined, applier }],
  ['taking over done: leading',
    { kind: 'taking-over', view: v1, adopted: undefined, applier }, { type: 'took-over', primary: leadingV1 },
    { kind: 'leading', view: v1, primary: leadingV1 }],
  ['taking over failed: following again, the applier kept',
    { kind: 'taking-over', view: v1, adopted: undefined, applier }, { type: 'gave-up' },
    { kind: 'following', view: v1, adopted: undefined, applier }],
  ['a later view naming this node again keeps leading (the role takes it on)',
    { kind: 'leading', view: v3, primary: leadingV1 }, { type: 'adopt', view: v3 },
    { kind: 'leading', view: v3, primary: leadingV1 }],
  ['a view naming another primary deposes the leader: stepping down, having served under its last view',
    { kind: 'leading', view: v2, primary: leadingV1 }, { type: 'adopt', view: v2 },
    { kind: 'stepping-down', view: v2, adopted: v1, deposed: leadingV1 }],
  ['stepped down: following with a fresh applier',
    { kind: 'stepping-down', view: v2, adopted: v1, deposed: leadingV1 }, { type: 'stepped-down', applier: freshApplier },
    { kind: 'following', view: v2, adopted: v1, applier: freshApplier }],
  ['a view taken on is served under by a follower',
    { kind: 'following', view: v2, adopted: v1, applier }, { type: 'adopted', view: v2 },
    { kind: 'following', view: v2, adopted: v2, applier }],
  ['a leader serves under the view its role took on (nothing to record)',
    { kind: 'leading', view: v3, primary: leadingV1 }, { type: 'adopted', view: v3 },
    { kind: 'leading', view: v3, primary: leadingV1 }],
];

for (const [name, state, event, expected] of table) {
  Role(name, () => {
    const before = JSON.stringify(state);
    assert.equal(nextRole(state, event, 'n0'), expected);
    assert.is(JSON.stringify(state), before, 'the state given is not changed');
  });
}

const impossible: Array<[string, RoleState, RoleEvent]> = [
  ['an older or equal view heard', { kind: 'following', view: v2, adopted: v2, applier }, { type: 'heard', view: v1 }],
  ['took over without taking over', { kind: 'following', view: v2, adopted: v2, applier }, { type: 'took-over', primary: leadingV1 }],
  ['stepped down while leading', { kind: 'leading', view: v1, primary: leadingV1 }, { type: 'stepped-down', applier }],
  ['a view taken on while stepping down', { kind: 'stepping-down', view: v2, adopted: v1, deposed: leadingV1 }, { type: 'adopt', view: v2 }],
  ['a view taken on before any was heard', { kind: 'unassigned', applier }, { type: 'adopt', view: v1 }],
];

for (const [name, state, event] of impossible) {
  Role(`impossible, so an assertion stops the node: ${name}`, () => {
    assert.throws(() => nextRole(state, event, 'n0'), /assertion failed/);
  });
}

Role('the view served under: none before one is taken on, the role\'s active view while leading', () => {
  assert.is(servingView({ kind: 'unassigned', applier }), undefined);
  assert.is(servingView({ kind: 'following', view: v2, adopted: undefined, applier }), undefined);
  assert.is(servingView({ kind: 'stepping-down', view: v2, adopted: v1, deposed: leadingV1 }), v1);
  assert.is(servingView({ kind: 'leading', view: v3, primary: leadingV1 }), v1, 'not the newest view heard, which the role may not have taken on yet');
});

Role.run();
