import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkClusterSpec, localClusterSpec } from '../../src/cluster/config.js';

const Config = suite('cluster: configuration checks');

Config('the local cluster: n0 primary, own loopback addresses, own files, default ports', () => {
  const spec = localClusterSpec({ replicas: 2, dataDir: 'data', ownAddresses: true });
  assert.equal(spec.nodes.map((n) => [n.name, n.role, n.host, n.port, n.dataFile]), [
    ['n0', 'primary', '127.0.0.11', 7401, 'data/n0.sqlite'],
    ['n1', 'replica', '127.0.0.12', 7402, 'data/n1.sqlite'],
    ['n2', 'replica', '127.0.0.13', 7403, 'data/n2.sqlite'],
  ]);
  assert.is(spec.hubPort, 7400);
});

Config('two nodes sharing a data file, a name or an address are refused', () => {
  const { nodes } = localClusterSpec({ replicas: 1, dataDir: 'data', ownAddresses: true });
  const [n0, n1] = nodes as [typeof nodes[0], typeof nodes[0]];
  assert.throws(() => checkClusterSpec([n0, { ...n1, dataFile: './data/../data/n0.sqlite' }]), /n1 and n0 share the data file/);
  assert.throws(() => checkClusterSpec([n0, { ...n1, name: 'n0' }]), /share the name n0/);
  assert.throws(() => checkClusterSpec([n0, { ...n1, host: n0.host, port: n0.port }]), /share the address/);
  assert.throws(() => checkClusterSpec([n0, { ...n1, role: 'primary' }]), /exactly one primary/);
  checkClusterSpec([n0, { ...n1, port: 0 }, { ...n1, name: 'n2', port: 0, dataFile: 'data/n2.sqlite' }]);
});

Config.run();
