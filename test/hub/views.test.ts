/**
 * The view keeper's rules, one row each: a row is phases of virtual time in which the
 * nodes it names heartbeat every HEARTBEAT_INTERVAL_MS (those it leaves out are silent: dead
 * or stopped) and the keeper ticks every VIEW_TICK_INTERVAL_MS, each phase ending with what
 * the view must then be. Time is the simulator's (src/sim/world.ts): nothing real passes.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DEAD_AFTER_MS, HEARTBEAT_INTERVAL_MS, UNREACHABLE_REPORT_FRESH_MS, VIEW_TICK_INTERVAL_MS } from '../../src/constants.js';
import { MemoryViewStore, ViewKeeper, type SavedViews, type ViewChange, type ViewStore } from '../../src/hub/views.js';
import type { HeartbeatRequest, View, ViewConfig } from '../../src/protocol/messages.js';
import { SimWorld } from '../../src/sim/world.js';

/** What a node says in each of its heartbeats during a phase (its position stays until a later phase moves it). */
interface Says {
  epoch?: number;
  seq?: number;
  config?: ViewConfig;
  /** From the primary: 'all' is every replica of the view it holds. */
  synced?: 'all' | string[];
  caughtUp?: string[];
  unreachable?: string[];
  behind?: string;
  /** Say it in the first beat of the phase only. */
  once?: boolean;
}

interface Expected {
  primary: string;
  replicas: string[];
  minReplicas?: number;
  /** The last change's reason. */
  why?: RegExp;
  /** Whether the hub counts on each named node to hold every acknowledged write. */
  trusted?: Record<string, boolean>;
  /** What status says of writes: refused (and why), or undefined for taken. */
  writesRefused?: RegExp | undefined;
}

interface Phase {
  /** What the phase is, for the failure message. */
  what: string;
  ms: number;
  /** The nodes that heartbeat during the phase; the others are silent. */
  beats: Record<string, Says>;
  /** The hub restarts first: a new keeper on the same saved state. */
  hubRestarts?: boolean;
  /** The view at the end of the phase; null: none yet. */
  expect: Expected | null;
}

interface Row {
  rule: string;
  phases: Phase[];
}

const CONFIG: ViewConfig = { primary: 'n0', replicas: ['n1', 'n2'] };
const THREE: Expected = { primary: 'n0', replicas: ['n1', 'n2'] };
/** Long enough for a silent node to be called dead and the view to change. */
const DEATH_MS = DEAD_AFTER_MS + 2 * VIEW_TICK_INTERVAL_MS;

/** The configured view {n0; n1, n2} at seq 5, every replica reported synced. */
function established(config: ViewConfig = CONFIG): Phase {
  const names = [config.primary, ...config.replicas];
  return {
    what: 'the configured view, every replica synced',
    ms: 2 * DEAD_AFTER_MS,
    beats: Object.fromEntries(names.map((name) => [name, name === config.primary ? { seq: 5, config, synced: 'all' } : { seq: 5 }])),
    expect: { primary: config.primary, replicas: config.replicas },
  };
}

/** A keeper driven by virtual time and the heartbeats of a row. */
class Harness {
  readonly world = new SimWorld(1);
  readonly clock = this.world.process('hub', 'hub').clock;
  keeper: ViewKeeper;
  readonly told: ViewChange[] = [];
  private readonly positions = new Map<string, { epoch: number; seq: number }>();
  /** The epoch of the view each node was last given. */
  private readonly holds = new Map<string, number>();

  constructor(
    readonly store: ViewStore = new MemoryViewStore(),
    private readonly onChange: (change: ViewChange) => void = () => undefined,
  ) {
    this.keeper = this.newKeeper();
  }

  restartHub(): void {
    this.keeper = this.newKeeper();
  }

  async run(phase: Phase): Promise<void> {
    const steps = Math.ceil(phase.ms / VIEW_TICK_INTERVAL_MS);
    const beatEvery = HEARTBEAT_INTERVAL_MS / VIEW_TICK_INTERVAL_MS;
    for (let step = 0; step < steps; step += 1) {
      await this.world.run(this.world.nowMs + VIEW_TICK_INTERVAL_MS);
      if (step % beatEvery === 0) {
        for (const [name, says] of Object.entries(phase.beats)) this.beat(name, says, step === 0);
      }
      this.keeper.tick();
    }
  }

  beat(name: string, says: Says, first: boolean): View | undefined {
    const position = { ...(this.positions.get(name) ?? { epoch: 0, seq: 0 }), ...definedOnly({ epoch: says.epoch, seq: says.seq }) };
    this.positions.set(name, position);
    const speaks = first || !says.once;
    const view = this.keeper.view;
    const beat: HeartbeatRequest = {
      type: 'heartbeat',
      id: 1,
      name,
      ...position,
      viewEpoch: this.holds.get(name) ?? 0,
      config: says.config,
      synced: speaks ? (says.synced === 'all' ? view?.replicas : says.synced) : undefined,
      caughtUp: speaks ? says.caughtUp : undefined,
      behind: speaks ? says.behind : undefined,
      unreachable: speaks ? says.unreachable : undefined,
    };
    const given = this.keeper.heartbeat(beat);
    if (given) this.holds.set(name, given.epoch);
    return given;
  }

  private newKeeper(): ViewKeeper {
    return new ViewKeeper(this.clock, this.store, DEAD_AFTER_MS, (change) => {
      this.told.push(change);
      this.onChange(change);
    });
  }
}

function definedOnly<T extends Record<string, unknown>>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as Partial<T>;
}

function check(harness: Harness, phase: Phase, where: string): void {
  const view = harness.keeper.view;
  if (phase.expect === null) {
    assert.is(view, undefined, `${where}: no view yet`);
    return;
  }
  const expected = phase.expect;
  assert.ok(view, `${where}: a view`);
  assert.equal({ primary: view.primary, replicas: [...view.replicas].sort() }, { primary: expected.primary, replicas: [...expected.replicas].sort() }, `${where}: the view (last change: ${harness.keeper.history.at(-1)?.why})`);
  if (expected.minReplicas !== undefined) assert.is(view.minReplicas, expected.minReplicas, `${where}: the floor`);
  if (expected.why) assert.match(harness.keeper.history.at(-1)?.why ?? '', expected.why, `${where}: why`);
  for (const [name, trusted] of Object.entries(expected.trusted ?? {})) assert.is(harness.keeper.trusted(name), trusted, `${where}: ${name} ${trusted ? 'is' : 'is not'} trusted`);
  if ('writesRefused' in expected) {
    const refused = harness.keeper.writesRefused();
    if (expected.writesRefused === undefined) assert.is(refused, undefined, `${where}: writes are taken`);
    else assert.match(refused ?? '', expected.writesRefused, `${where}: writes are refused, saying why`);
  }
}

const ROWS: Row[] = [
  {
    rule: 'the first view is the configured one once every configured node is heard, with the floor at 1',
    phases: [{ what: 'all three beat', ms: 500, beats: { n0: { config: CONFIG }, n1: {}, n2: {} }, expect: { ...THREE, minReplicas: 1, why: /configured roles/, writesRefused: undefined } }],
  },
  {
    rule: 'the first view waits dead-after for a configured node, then goes on without it',
    phases: [
      { what: 'n2 silent, not yet dead-after', ms: DEAD_AFTER_MS - 2 * VIEW_TICK_INTERVAL_MS, beats: { n0: { config: CONFIG }, n1: {} }, expect: null },
      { what: 'n2 silent past dead-after', ms: 4 * VIEW_TICK_INTERVAL_MS, beats: { n0: { config: CONFIG }, n1: {} }, expect: { primary: 'n0', replicas: ['n1'] } },
    ],
  },
  {
    rule: 'a configured node ahead of the configured primary is the first primary (nobody is rolled back)',
    phases: [{ what: 'n1 holds more', ms: 500, beats: { n0: { config: CONFIG }, n1: { seq: 9 }, n2: { seq: 3 } }, expect: { primary: 'n1', replicas: ['n0', 'n2'], why: /n1 holds the most advanced store/ } }],
  },
  {
    rule: 'the floor: 0 for a cluster configured without replicas',
    phases: [
      { what: 'n0 alone configured', ms: 500, beats: { n0: { config: { primary: 'n0', replicas: [] } } }, expect: { primary: 'n0', replicas: [], minReplicas: 0, writesRefused: undefined } },
    ],
  },
  {
    rule: 'the floor set by the proposal is kept by every later view',
    phases: [
      { what: 'floor 2', ms: 2 * DEAD_AFTER_MS, beats: { n0: { config: { ...CONFIG, minReplicas: 2 }, synced: 'all' }, n1: {}, n2: {} }, expect: { ...THREE, minReplicas: 2 } },
      { what: 'n2 dies', ms: DEATH_MS, beats: { n0: { synced: 'all' }, n1: {} }, expect: { primary: 'n0', replicas: ['n1'], minReplicas: 2, writesRefused: /view \d+ has 1 replica and a write needs at least 2/ } },
    ],
  },
  {
    rule: 'a dead replica leaves the view',
    phases: [
      established(),
      { what: 'n2 silent', ms: DEATH_MS, beats: { n0: { synced: 'all' }, n1: {} }, expect: { primary: 'n0', replicas: ['n1'], why: /n2 missed heartbeats/, writesRefused: undefined } },
    ],
  },
  {
    rule: 'a dead primary is replaced by the most advanced in-view replica known to hold every acknowledged write',
    phases: [
      established(),
      { what: 'n0 silent; n2 ahead of n1', ms: DEATH_MS, beats: { n1: { seq: 6 }, n2: { seq: 7 } }, expect: { primary: 'n2', replicas: ['n1'], why: /n0 missed heartbeats.*n2 holds \(0, 7\), the most of the view/ } },
    ],
  },
  {
    rule: 'a replica not yet reported synced is passed over, however advanced',
    phases: [
      { ...established(), beats: { n0: { seq: 5, config: CONFIG, synced: ['n1'] }, n1: { seq: 5 }, n2: { seq: 5 } }, expect: { ...THREE, trusted: { n1: true, n2: false } } },
      { what: 'n0 silent; the unsynced n2 ahead', ms: DEATH_MS, beats: { n1: { seq: 5 }, n2: { seq: 9 } }, expect: { primary: 'n1', replicas: ['n2'] } },
    ],
  },
  {
    rule: 'a candidate the primary reports caught up joins, untrusted until reported synced',
    phases: [
      { what: 'n2 not started', ms: 2 * DEAD_AFTER_MS, beats: { n0: { seq: 5, config: CONFIG, synced: 'all' }, n1: { seq: 5 } }, expect: { primary: 'n0', replicas: ['n1'] } },
      { what: 'n2 starts, not caught up', ms: 1_000, beats: { n0: { synced: 'all' }, n1: {}, n2: { seq: 2 } }, expect: { primary: 'n0', replicas: ['n1'] } },
      { what: 'n2 caught up', ms: 2 * VIEW_TICK_INTERVAL_MS, beats: { n0: { synced: ['n1'], caughtUp: ['n2'] }, n1: {}, n2: { seq: 5 } }, expect: { ...THREE, why: /n2 caught up/, trusted: { n1: true, n2: false } } },
      { what: 'n2 reported synced', ms: 500, beats: { n0: { synced: 'all' }, n1: {}, n2: {} }, expect: { ...THREE, trusted: { n2: true } } },
    ],
  },
  {
    rule: 'a primary that came back behind where it stood is replaced, and gets no view meanwhile',
    phases: [
      established(),
      { what: 'n0 back empty', ms: 500, beats: { n0: { seq: 0 }, n1: {}, n2: {} }, expect: { primary: 'n1', replicas: ['n2'], why: /n0 came back behind where it stood/ } },
    ],
  },
  {
    rule: 'a primary that finds a replica of its view ahead of it is replaced',
    phases: [
      established(),
      { what: 'n2 holds more than n0 (n0 lost writes)', ms: 500, beats: { n0: { synced: 'all' }, n1: {}, n2: { seq: 8 } }, expect: THREE },
      { what: 'n0 finds n2 ahead of it', ms: 500, beats: { n0: { behind: 'n2', synced: 'all' }, n1: {}, n2: {} }, expect: { primary: 'n2', replicas: ['n1'], why: /n0 came back behind/ } },
    ],
  },
  {
    rule: 'a replica the primary reports unreachable leaves the view while that report is fresh',
    phases: [
      established(),
      { what: 'n0 cannot reach n2', ms: 500, beats: { n0: { synced: 'all', unreachable: ['n2'] }, n1: {}, n2: {} }, expect: { primary: 'n0', replicas: ['n1'], why: /n0 had no answer from n2/ } },
    ],
  },
  {
    rule: 'a stale unreachable report is not acted on: its primary is about to be replaced, and the next view needs that replica',
    phases: [
      established(),
      // Reported while the restarted hub decides nothing yet, then n0 dies: when the hub may
      // decide again, the report is older than UNREACHABLE_REPORT_FRESH_MS.
      { what: 'the hub restarts; n0 reports n2 unreachable, then dies', ms: HEARTBEAT_INTERVAL_MS, hubRestarts: true, beats: { n0: { synced: 'all', unreachable: ['n2'] }, n1: {}, n2: { seq: 6 } }, expect: THREE },
      { what: 'n0 silent', ms: DEAD_AFTER_MS + UNREACHABLE_REPORT_FRESH_MS, beats: { n1: {}, n2: {} }, expect: { primary: 'n2', replicas: ['n1'], why: /n0 missed heartbeats/ } },
    ],
  },
  {
    rule: 'a restarted hub loads the view and calls nobody dead before it has been up for dead-after',
    phases: [
      established(),
      { what: 'the hub restarts; n0 never beats again', ms: DEAD_AFTER_MS - VIEW_TICK_INTERVAL_MS, hubRestarts: true, beats: { n1: {}, n2: {} }, expect: { ...THREE, trusted: { n1: true, n2: true } } },
      { what: 'the hub has been up past dead-after', ms: 4 * VIEW_TICK_INTERVAL_MS, beats: { n1: {}, n2: {} }, expect: { primary: 'n1', replicas: ['n2'], why: /n0 missed heartbeats/ } },
    ],
  },
  {
    rule: 'a restarted hub still does not trust a replica that came back behind and was not reported synced since',
    phases: [
      established(),
      { what: 'n2 comes back empty, then refills without being reported synced', ms: 1_000, beats: { n0: { synced: ['n1'] }, n1: {}, n2: { seq: 0 } }, expect: { ...THREE, trusted: { n2: false } } },
      { what: 'n2 ahead of n1 now', ms: 500, beats: { n0: { synced: ['n1'] }, n1: {}, n2: { seq: 9 } }, expect: { ...THREE, trusted: { n2: false } } },
      { what: 'the hub restarts; n0 is gone', ms: DEATH_MS, hubRestarts: true, beats: { n1: {}, n2: {} }, expect: { primary: 'n1', replicas: ['n2'] } },
    ],
  },
  {
    rule: 'the floor: a view left with fewer replicas refuses writes, and status says why',
    phases: [
      established(),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [], writesRefused: /^view \d+ has 0 replicas and a write needs at least 1 to be acknowledged .*a replica rejoins/ } },
    ],
  },
  {
    rule: 'a primary left alone that dies is replaced by the last replica to leave, which holds every acknowledged write',
    phases: [
      established(),
      { what: 'n2 dies', ms: DEATH_MS, beats: { n0: { synced: 'all' }, n1: {} }, expect: { primary: 'n0', replicas: ['n1'] } },
      { what: 'n1 dies', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [], trusted: { n1: false } } },
      { what: 'n0 dies; n1 and n2 come back', ms: DEATH_MS, beats: { n1: {}, n2: { seq: 9 } }, expect: { primary: 'n1', replicas: [], why: /n1 holds \(0, 5\), the most of those that left/, trusted: { n1: true, n2: false } } },
    ],
  },
  {
    rule: 'the last replica to leave is not promoted if it came back behind where it stood',
    phases: [
      established(),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n0 dies; n1 comes back empty', ms: DEATH_MS, beats: { n1: { seq: 0 } }, expect: { primary: 'n0', replicas: [], trusted: { n1: false } } },
      { what: 'n1 refills: still not promoted', ms: DEATH_MS, beats: { n1: { seq: 9 } }, expect: { primary: 'n0', replicas: [] } },
    ],
  },
  {
    rule: 'a replica that left before it was reported synced is not promoted',
    phases: [
      { what: 'n2 not started', ms: 2 * DEAD_AFTER_MS, beats: { n0: { seq: 5, config: CONFIG, synced: 'all' }, n1: { seq: 5 } }, expect: { primary: 'n0', replicas: ['n1'] } },
      { what: 'n2 caught up, never synced', ms: 500, beats: { n0: { synced: ['n1'], caughtUp: ['n2'] }, n1: {}, n2: { seq: 5 } }, expect: { ...THREE, trusted: { n2: false } } },
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: ['n1'] } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n0 dies; n2 comes back', ms: DEATH_MS, beats: { n2: {} }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n1 comes back', ms: DEATH_MS, beats: { n1: {}, n2: {} }, expect: { primary: 'n1', replicas: [] } },
    ],
  },
  {
    rule: 'once the view is back at the floor, those that left before are no longer promoted: they lack what was acknowledged since',
    phases: [
      established(),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n2 comes back and catches up', ms: 500, beats: { n0: { caughtUp: ['n2'] }, n2: {} }, expect: { primary: 'n0', replicas: ['n2'], writesRefused: undefined } },
      { what: 'n2 synced, writes acknowledged', ms: 500, beats: { n0: { seq: 8, synced: 'all' }, n2: { seq: 8 } }, expect: { primary: 'n0', replicas: ['n2'], trusted: { n2: true } } },
      { what: 'n2 dies', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n0 dies; n1 comes back', ms: DEATH_MS, beats: { n1: {} }, expect: { primary: 'n0', replicas: [], trusted: { n1: false } } },
      { what: 'n2 comes back', ms: DEATH_MS, beats: { n1: {}, n2: {} }, expect: { primary: 'n2', replicas: [] } },
    ],
  },
  {
    rule: 'a candidate joining a view below the floor is trusted at once (nothing was acknowledged in it): if the primary dies before reporting it synced, it takes over',
    phases: [
      established(),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n2 comes back and catches up', ms: 500, beats: { n0: { caughtUp: ['n2'] }, n2: {} }, expect: { primary: 'n0', replicas: ['n2'], trusted: { n2: true } } },
      { what: 'n0 dies before it reports n2 synced', ms: DEATH_MS, beats: { n2: {} }, expect: { primary: 'n2', replicas: [], why: /the most of the view/ } },
    ],
  },
  {
    rule: 'so is one that came back behind (a lost disk) and caught up again in such a view',
    phases: [
      established(),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n2 comes back empty', ms: 500, beats: { n0: {}, n2: { seq: 0 } }, expect: { primary: 'n0', replicas: [], trusted: { n2: false } } },
      { what: 'n2 caught up', ms: 500, beats: { n0: { caughtUp: ['n2'] }, n2: { seq: 5 } }, expect: { primary: 'n0', replicas: ['n2'], trusted: { n2: true } } },
      { what: 'n0 dies', ms: DEATH_MS, beats: { n2: {} }, expect: { primary: 'n2', replicas: [] } },
    ],
  },
  {
    rule: 'with the floor at 0, nobody outside a lone primary\'s view is promoted (they may lack what it acknowledged alone)',
    phases: [
      established({ ...CONFIG, minReplicas: 0 }),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [], writesRefused: undefined } },
      { what: 'n0 dies; n1 comes back', ms: DEATH_MS, beats: { n1: {} }, expect: { primary: 'n0', replicas: [] } },
    ],
  },
  {
    rule: 'a restarted hub still knows who left holding every acknowledged write',
    phases: [
      established(),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'the hub restarts; n0 is gone, n2 is back', ms: DEATH_MS, hubRestarts: true, beats: { n2: {} }, expect: { primary: 'n2', replicas: [], why: /those that left/ } },
    ],
  },
  {
    rule: 'the replaced primary of a view below the floor is itself one that left holding everything',
    phases: [
      established(),
      { what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: 'all' } }, expect: { primary: 'n0', replicas: [] } },
      { what: 'n0 dies; n1 comes back', ms: DEATH_MS, beats: { n1: {} }, expect: { primary: 'n1', replicas: [] } },
      { what: 'n1 dies; n0 comes back', ms: DEATH_MS, beats: { n0: {} }, expect: { primary: 'n0', replicas: [] } },
    ],
  },
];

const Views = suite('hub: the view keeper\'s rules');

for (const row of ROWS) {
  Views(row.rule, async () => {
    const harness = new Harness();
    for (const [index, phase] of row.phases.entries()) {
      if (phase.hubRestarts) harness.restartHub();
      await harness.run(phase);
      check(harness, phase, `phase ${index + 1} (${phase.what})`);
    }
  });
}

Views('a primary that came back behind gets no view until it is replaced', async () => {
  const harness = new Harness();
  await harness.run(established());
  // The first beat from the empty n0 decides at once: n0 is not handed the view it would write in.
  const given = harness.beat('n0', { seq: 0 }, true);
  assert.is(given?.primary, 'n1', 'n0 is told the view that replaced it');
  const alone = new Harness();
  await alone.run({ what: 'n0 alone', ms: 2 * DEAD_AFTER_MS, beats: { n0: { seq: 5, config: { primary: 'n0', replicas: [] } } }, expect: null });
  assert.is(alone.beat('n0', { seq: 0 }, true), undefined, 'with nobody to replace it, it gets no view');
});

Views('a view change is saved once, whole, before anyone is told of it', async () => {
  const saves: SavedViews[] = [];
  const store = new MemoryViewStore();
  const recording: ViewStore = { load: () => store.load(), save: (saved) => (saves.push(saved), store.save(saved)) };
  // What the store holds at the moment each change is told.
  const toldSaved: (SavedViews | undefined)[] = [];
  const harness = new Harness(recording, () => toldSaved.push(store.load()));
  await harness.run({ what: 'n2 not started', ms: 2 * DEAD_AFTER_MS, beats: { n0: { seq: 5, config: CONFIG, synced: 'all' }, n1: { seq: 5 } }, expect: null });
  await harness.run({ what: 'n2 starts', ms: 500, beats: { n0: { synced: 'all' }, n1: {}, n2: { seq: 5 } }, expect: null });
  const before = saves.length;
  harness.beat('n0', { synced: ['n1'], caughtUp: ['n2'] }, true);
  harness.keeper.tick();
  assert.is(harness.keeper.view?.replicas.join(), 'n1,n2', 'n2 joined');
  assert.is(saves.length - before, 1, 'one save for the change');
  const told = toldSaved.at(-1);
  assert.is(told?.view.epoch, harness.keeper.view?.epoch, 'the saved view is the one told');
  assert.equal(told?.joined, ['n2'], 'saved with the joiner untrusted: a hub restarted now would not promote it');
  await harness.run({ what: 'n1 and n2 die', ms: DEATH_MS, beats: { n0: { synced: ['n1'] } }, expect: null });
  assert.equal(toldSaved.at(-1)?.lastLeft, ['n1'], 'saved with who left holding everything');
  assert.is(toldSaved.at(-1)?.view.replicas.length, 0);
});

Views('status: each member\'s state, seq and lag, and how long a dead one has been silent', async () => {
  const harness = new Harness();
  await harness.run(established());
  await harness.run({ what: 'n2 silent, n1 behind', ms: DEATH_MS, beats: { n0: { seq: 9, synced: 'all' }, n1: { seq: 7 } }, expect: { primary: 'n0', replicas: ['n1'] } });
  const status = harness.keeper.status();
  assert.equal({ ...status['n1'], heardMsAgo: undefined }, { state: 'in view', epoch: 0, seq: 7, lag: 2, heardMsAgo: undefined, trusted: true });
  assert.is(status['n2']?.state, 'dead');
  assert.is(status['n2']?.trusted, false, 'the dead are not counted on');
  assert.ok(status['n2']!.heardMsAgo > DEAD_AFTER_MS, `n2 silent for ${status['n2']!.heardMsAgo} ms`);
  assert.ok(status['n0']!.heardMsAgo <= HEARTBEAT_INTERVAL_MS, 'n0 heard within a beat');
});

Views.run();
