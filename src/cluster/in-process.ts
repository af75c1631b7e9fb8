/** A whole cluster in one process: the hub and every node, for tests and embedding. */
import { randomBytes } from 'node:crypto';
import { DirectoryHub } from '../hub/hub.js';
import { KvNode, type KvNodeOptions } from '../node/node.js';
import type { SyncMode } from '../storage/store.js';
import { checkClusterSpec, localClusterSpec, type NodeSpec } from './config.js';

const SETTLE_DEADLINE_MS = 20_000;

export interface InProcessClusterOptions {
  replicas?: number;
  dataDir: string;
  sync?: SyncMode;
  /** The cluster secret; a random one when not given (never none: secure by default). */
  secret?: string;
  /** Give each node its own loopback address (Linux); on by default where it works. */
  ownAddresses?: boolean;
  /** Options every node gets (timeouts, limits, injected stores by name below). */
  nodeOptions?: Partial<KvNodeOptions>;
  perNode?: Record<string, Partial<KvNodeOptions>>;
  /** Start the nodes one after the other in this order (names), each fully (init, then startServices). */
  order?: string[];
  /** Called with each node before it starts (to watch its traces). */
  onNode?(node: KvNode): void;
}

export interface InProcessCluster {
  hub: DirectoryHub;
  secret: string;
  hubUrl: string;
  nodes: KvNode[];
  primary: KvNode;
  replicas: KvNode[];
  specs: NodeSpec[];
  close(): Promise<void>;
}

export async function startInProcessCluster(options: InProcessClusterOptions): Promise<InProcessCluster> {
  const spec = localClusterSpec({
    replicas: options.replicas ?? 2,
    dataDir: options.dataDir,
    sync: options.sync ?? 'normal',
    nodePortFirst: 0,
    ...(options.ownAddresses !== undefined ? { ownAddresses: options.ownAddresses } : {}),
  });
  checkClusterSpec(spec.nodes);
  const secret = options.secret ?? randomBytes(32).toString('hex');
  const hub = await new DirectoryHub({ port: 0, secret }).listen();
  const replicaNames = spec.nodes.filter((n) => n.role === 'replica').map((n) => n.name);
  const primaryName = spec.nodes.find((n) => n.role === 'primary')!.name;
  const nodes = spec.nodes.map(
    (node) =>
      new KvNode({
        name: node.name,
        role: node.role,
        hubUrl: hub.url,
        host: node.host,
        port: 0,
        sync: spec.sync,
        ...(node.dataFile ? { dataFile: node.dataFile } : {}),
        ...(node.role === 'primary' ? { replicas: replicaNames } : { primary: primaryName }),
        secret,
        ...options.nodeOptions,
        ...options.perNode?.[node.name],
      }),
  );
  const close = async () => {
    await Promise.all(nodes.map((node) => node.close()));
    await hub.close();
  };
  try {
    for (const node of nodes) options.onNode?.(node);
    if (options.order) {
      for (const name of options.order) {
        const node = nodes.find((candidate) => candidate.name === name)!;
        await node.init();
        await node.startServices();
      }
    } else {
      // The seed's lifecycle: every node up and registered, then the services start.
      for (const node of nodes) await node.init();
      for (const node of nodes) await node.startServices();
    }
    // Waits until the primary serves: the hub made the first view (once every configured
    // node heartbeated, or DEAD_AFTER_MS after the primary proposed it) and the primary
    // holds a lease from every replica of it. A partial start order leaves that to the test.
    if (!options.order || options.order.length === nodes.length) await nodes[0]!.settled(SETTLE_DEADLINE_MS);
  } catch (error) {
    await close();
    throw error;
  }
  return {
    hub,
    secret,
    hubUrl: hub.url,
    nodes,
    primary: nodes[0]!,
    replicas: nodes.slice(1),
    specs: spec.nodes,
    close,
  };
}
