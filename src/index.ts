/** pbkv's public entry point. */
export { KvClient, type KvClientOptions } from './client/client.js';
export { KvNode, KV_SERVICE, type KvNodeOptions } from './node/node.js';
export type { NodeTrace, TraceEvent } from './node/trace.js';
export { DirectoryHub, type HubOptions } from './hub/hub.js';
export { HubClient } from './hub/hub-client.js';
export { startInProcessCluster, type InProcessCluster, type InProcessClusterOptions } from './cluster/in-process.js';
export { localClusterSpec, checkClusterSpec, type ClusterSpec, type NodeSpec } from './cluster/config.js';
export { KvError, ERROR_CODES, type ErrorCode } from './errors.js';
export type { Json } from './protocol/messages.js';
export type { SyncMode } from './storage/store.js';
export * as limits from './constants.js';
