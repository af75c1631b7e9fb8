/**
 * pbkv's client entry point (`pbkv`): the client and what it shares with the servers.
 * Nothing imported from here may reach server code (node:sqlite, the node, the hub): the
 * client runs on Node versions without node:sqlite. The servers are `pbkv/server`.
 */
export { KvClient, type KvClientOptions } from './client/client.js';
export {
  ConflictError,
  type KvEntry,
  type ListEntry,
  type ListPage,
  type ListOptions,
  type PutOptions,
  type DelOptions,
  type ClearOptions,
  type IncrOptions,
  type Condition,
  type Expiry,
} from './client/data-api.js';
export { CompactedError, type WatchEvent, type WatchOptions, type WatchTarget } from './client/watch.js';
export { HubClient } from './hub/hub-client.js';
export { KV_SERVICE } from './constants.js';
export { KvError, ERROR_CODES, type ErrorCode } from './errors.js';
export type { Json } from './protocol/messages.js';
export * as limits from './constants.js';
