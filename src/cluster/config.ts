/** The shape of a cluster, and the checks every way of starting one runs first. */
import path from 'node:path';
import { DEFAULT_HUB_PORT, DEFAULT_NODE_PORT_FIRST } from '../constants.js';
import { KvError } from '../errors.js';
import type { SyncMode } from '../storage/store.js';

export interface NodeSpec {
  name: string;
  role: 'primary' | 'replica';
  host: string;
  port: number;
  /** Undefined only with sync `memory`. */
  dataFile: string | undefined;
}

export interface ClusterSpec {
  hubHost: string;
  hubPort: number;
  /** Where the hub keeps its view across restarts (none: in memory, with sync memory). */
  hubDataFile: string | undefined;
  sync: SyncMode;
  nodes: NodeSpec[];
}

/**
 * The local cluster of `npm start`: n0 primary, n1..nN replicas. On Linux every node gets
 * its own loopback address (127.0.0.11, .12, ...) so a replica's source-address check
 * tells nodes apart; elsewhere only 127.0.0.1 exists and the ports tell them apart.
 */
export function localClusterSpec(options: {
  replicas: number;
  dataDir: string;
  sync?: SyncMode;
  hubPort?: number;
  nodePortFirst?: number;
  ownAddresses?: boolean;
}): ClusterSpec {
  const ownAddresses = options.ownAddresses ?? process.platform === 'linux';
  const portFirst = options.nodePortFirst ?? DEFAULT_NODE_PORT_FIRST;
  const sync = options.sync ?? 'normal';
  const nodes: NodeSpec[] = [];
  for (let index = 0; index <= options.replicas; index += 1) {
    const name = `n${index}`;
    nodes.push({
      name,
      role: index === 0 ? 'primary' : 'replica',
      host: ownAddresses ? `127.0.0.${11 + index}` : '127.0.0.1',
      port: portFirst === 0 ? 0 : portFirst + index,
      dataFile: sync === 'memory' ? undefined : path.join(options.dataDir, `${name}.sqlite`),
    });
  }
  checkClusterSpec(nodes);
  const hubDataFile = sync === 'memory' ? undefined : path.join(options.dataDir, 'hub.sqlite');
  return { hubHost: '127.0.0.1', hubPort: options.hubPort ?? DEFAULT_HUB_PORT, hubDataFile, sync, nodes };
}

/** Refuses a cluster in which two nodes share a name, a data file or an address. */
export function checkClusterSpec(nodes: readonly NodeSpec[]): void {
  const seen = new Map<string, string>();
  const claim = (what: string, value: string, owner: string) => {
    const previous = seen.get(`${what} ${value}`);
    if (previous !== undefined) {
      throw new KvError('BAD_REQUEST', `${owner} and ${previous} share the ${what} ${value}: every node needs its own`);
    }
    seen.set(`${what} ${value}`, owner);
  };
  if (nodes.filter((node) => node.role === 'primary').length !== 1) {
    throw new KvError('BAD_REQUEST', 'a cluster has exactly one primary');
  }
  for (const node of nodes) {
    claim('name', node.name, node.name);
    if (node.dataFile !== undefined) claim('data file', path.resolve(node.dataFile), node.name);
    if (node.port !== 0) claim('address', `${node.host}:${node.port}`, node.name);
  }
}
