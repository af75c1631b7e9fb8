/**
 * A cluster of real processes for tests where a crash is the point: the tools' hub and a
 * primary with two replicas, each node with its own SQLite file in a temp directory, all
 * stopped by the disposer. A crash is kill -9 of a child.
 */
import * as assert from 'uvu/assert';
import { KvClient } from '../../src/client/client.js';
import { localClusterSpec, type ClusterSpec } from '../../src/cluster/config.js';
import { spawnHub, spawnNode, type ChildHandle } from '../../src/cluster/processes.js';
import { tempDir, within, type Disposer } from '../helpers.js';

export interface ProcessCluster {
  spec: ClusterSpec;
  hubUrl: string;
  file(name: string): string;
  /** Starts a node with its spec's flags (port 0: the hub is told the new address). */
  start(name: string): Promise<ChildHandle>;
  /** kill -9, resolved once the process is gone. */
  kill(name: string): Promise<void>;
  node(name: string): ChildHandle;
  /** A client, closed by the disposer. */
  client(): KvClient;
}

/** The hub and every node of a local cluster spec, started in order. */
export async function startProcessCluster(disposer: Disposer): Promise<ProcessCluster> {
  const spec = localClusterSpec({ replicas: 2, dataDir: await tempDir(disposer), hubPort: 0, nodePortFirst: 0, sync: 'normal' });
  const hub = disposer.add(await spawnHub(spec), (child) => child.stop());
  const nodes = new Map<string, ChildHandle>();
  const nodeSpec = (name: string) => spec.nodes.find((node) => node.name === name)!;
  const cluster: ProcessCluster = {
    spec,
    hubUrl: hub.url,
    file: (name) => nodeSpec(name).dataFile!,
    async start(name) {
      const child = disposer.add(await spawnNode(nodeSpec(name), spec, hub.url), (c) => c.stop());
      nodes.set(name, child);
      return child;
    },
    async kill(name) {
      const child = nodes.get(name)!;
      child.process.kill('SIGKILL');
      assert.is(await within(`${name} to die`, child.exited), null, `${name} was killed`);
    },
    node: (name) => nodes.get(name)!,
    client: () => disposer.add(new KvClient({ hubUrl: hub.url }), (client) => client.close()),
  };
  for (const node of spec.nodes) await cluster.start(node.name);
  return cluster;
}
