/** The heartbeat fields the floor and the status added, as the hub parses them from a frame. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseHubFrame } from '../../src/protocol/parse.js';

const beat = (extra: Record<string, unknown>) => JSON.stringify({ id: 1, op: 'heartbeat', name: 'n0', epoch: 0, seq: 0, viewEpoch: 0, ...extra });

const Frames = suite('hub: heartbeat frames');

Frames('config.minReplicas is taken from 0 to the replicas configured, and may be left out', () => {
  for (const [minReplicas, expected] of [[0, 0], [2, 2], [undefined, undefined]] as const) {
    const parsed = parseHubFrame(beat({ config: { primary: 'n0', replicas: ['n1', 'n2'], ...(minReplicas !== undefined ? { minReplicas } : {}) } }));
    assert.ok(parsed.ok, `minReplicas ${minReplicas}`);
    assert.is(parsed.ok && parsed.request.type === 'heartbeat' ? parsed.request.config?.minReplicas : 'not a heartbeat', expected);
  }
  for (const minReplicas of [3, -1, 1.5, '1', null]) {
    const parsed = parseHubFrame(beat({ config: { primary: 'n0', replicas: ['n1', 'n2'], minReplicas } }));
    assert.ok(!parsed.ok && parsed.error.code === 'BAD_REQUEST', `minReplicas ${JSON.stringify(minReplicas)} is refused`);
    assert.match(!parsed.ok ? parsed.error.message : '', /config.minReplicas must be an integer from 0 to the 2 replicas configured/);
  }
});

Frames('a heartbeat may carry the node\'s health, checked as a report is', () => {
  const parsed = parseHubFrame(beat({ state: 'degraded', reason: 'n1 refuses appends' }));
  assert.equal(parsed.ok && parsed.request.type === 'heartbeat' ? parsed.request.health : undefined, { state: 'degraded', reason: 'n1 refuses appends' });
  const none = parseHubFrame(beat({}));
  assert.is(none.ok && none.request.type === 'heartbeat' ? none.request.health : 'not a heartbeat', undefined);
  const wrong = parseHubFrame(beat({ state: 'sleeping' }));
  assert.is(!wrong.ok && wrong.error.code, 'BAD_REQUEST');
});

Frames.run();
