/**
 * pbkv's server entry point (`pbkv/server`): nodes, the hub, whole clusters. Loading it
 * needs node:sqlite (Node 24); the client (`pbkv`) does not.
 */
export { KvNode, type KvNodeOptions } from './node/node.js';
export type { NodeTrace, TraceEvent } from './node/trace.js';
export { DirectoryHub, type HubOptions } from './hub/hub.js';
export { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from './cluster/in-process.js';
export { localClusterSpec, checkClusterSpec, type ClusterSpec, type NodeSpec } from './cluster/config.js';
export type { SyncMode } from './storage/store.js';
