/**
 * A node's answers to clients: on the primary, reads and writes through its role; on any
 * other node NOT_PRIMARY naming the primary of the view it holds (or UNAVAILABLE before
 * it holds one). Replies are built as text: a batch's replies are many, and each is small.
 */
import { PRIMARY_ADDRESS_TTL_MS } from '../constants.js';
import type { Clock } from '../env/environment.js';
import { KvError, NOTHING_APPLIED, assertNever } from '../errors.js';
import type { HubClient } from '../hub/hub-client.js';
import type { Answer, ClientRequest, RequestId, WriteOp } from '../protocol/messages.js';
import { okReply } from '../protocol/reply.js';
import { HELP_TEXT } from '../protocol/text-commands.js';
import type { Store } from '../storage/store.js';
import type { PrimaryRole } from './primary-role.js';
import type { RoleState } from './role.js';

export interface ClientServiceOptions {
  name: string;
  clock: Clock;
  store: Store;
  hub: HubClient;
  /** The node's role now (the object it holds, not a copy). */
  role(): RoleState;
}

export class ClientService {
  private primaryAddress: { at: number; name: string; address: Promise<string | undefined> } | undefined;

  constructor(private readonly options: ClientServiceOptions) {}

  handle(request: ClientRequest): Answer | Promise<Answer> {
    switch (request.type) {
      case 'get':
        return this.get(request.id, request.key);
      case 'put':
        return this.write(request.id, { kind: 'put', key: request.key, valueJson: request.valueJson, tag: request.tag });
      case 'del':
        return this.write(request.id, { kind: 'del', key: request.key, tag: request.tag });
      case 'help':
        return request.asText ? `${HELP_TEXT}\n` : okReply(request.id, { help: HELP_TEXT });
      default:
        return assertNever(request);
    }
  }

  /**
   * Answered as text with the stored JSON spliced in: at once, unless the last write to
   * the key is not yet on every replica; then what was read waits for it, so a read never
   * returns what a failover could lose.
   */
  private get(id: RequestId, key: string): Answer | Promise<Answer> {
    const state = this.options.role();
    if (state.kind !== 'leading') return this.notPrimary(state);
    const { primary } = state;
    const refused = primary.readError();
    if (refused) throw refused;
    const json = primary.pipeline.read(key, () => this.options.store.readJson(key));
    return json instanceof Promise ? json.then((read) => this.found(id, read, primary)) : this.found(id, json, primary);
  }

  private found(id: RequestId, json: string | undefined, primary: PrimaryRole): Answer {
    // A lease may have lapsed while the read waited for replicas.
    const refused = primary.readError();
    if (refused) throw refused;
    const idJson = idText(id);
    return json === undefined ? `{"id":${idJson},"ok":true,"found":false}` : `{"id":${idJson},"ok":true,"found":true,"value":${json}}`;
  }

  private write(id: RequestId, op: WriteOp): Promise<Answer> {
    const state = this.options.role();
    if (state.kind !== 'leading') return this.notPrimary(state);
    const { primary } = state;
    const refused = primary.writeError();
    if (refused) return Promise.reject(refused);
    const idJson = idText(id);
    return primary.pipeline.submit(op).then((found) => (op.kind === 'del' ? `{"id":${idJson},"ok":true,"found":${found}}` : `{"id":${idJson},"ok":true}`));
  }

  /**
   * NOT_PRIMARY with the primary's address. The address is asked of the hub at most once
   * per PRIMARY_ADDRESS_TTL_MS, whatever the number of clients: a flood of requests at a
   * replica must not become a flood of hub requests that crowds out the node's own.
   */
  private async notPrimary(state: Exclude<RoleState, { kind: 'leading' }>): Promise<never> {
    const { name, clock, hub } = this.options;
    if (state.kind === 'unassigned') throw new KvError('UNAVAILABLE', `${name} has no view yet; retry shortly`, NOTHING_APPLIED);
    const { view } = state;
    if (view.primary === name) throw new KvError('UNAVAILABLE', `${name} is taking over as the primary of view ${view.epoch}; retry shortly`, NOTHING_APPLIED);
    const now = clock.now();
    const cached = this.primaryAddress;
    if (!cached || cached.name !== view.primary || now - cached.at > PRIMARY_ADDRESS_TTL_MS) {
      this.primaryAddress = { at: now, name: view.primary, address: hub.resolve(view.primary).catch(() => undefined) };
    }
    const primary = await this.primaryAddress!.address;
    throw new KvError('NOT_PRIMARY', `${name} is not the primary; send requests to ${view.primary} (view ${view.epoch})`, {
      ...(primary ? { primary } : {}),
    });
  }
}

function idText(id: RequestId): string {
  return typeof id === 'number' ? String(id) : JSON.stringify(id);
}
