/**
 * The directory hub: the cluster's "DNS". Nodes register their names (name -> ws
 * address) and the primary registers the `kv` service (service -> node name); clients
 * and nodes look them up. Registering needs the cluster secret when one is set; lookups
 * never do. State is in memory: nodes register again when they reconnect.
 */
import { Subject } from 'rxjs';
import { CONNECTIONS_MAX } from '../constants.js';
import { KvError, assertNever } from '../errors.js';
import { newChallenge, verifyProof } from '../protocol/auth.js';
import type { HubRequest, Reply } from '../protocol/messages.js';
import { parseHubFrame } from '../protocol/parse.js';
import { okReply } from '../protocol/reply.js';
import { serveConnection } from '../protocol/serve.js';
import type { Connection, Listener } from '../transport/transport.js';
import { listen } from '../transport/ws-transport.js';

export const HUB_NAME = 'hub';
const HUB_FRAME_BYTES_MAX = 64 * 1024;

export interface HubOptions {
  host?: string;
  port?: number;
  /** When set, registering needs a session authenticated with it. */
  secret?: string;
  connectionsMax?: number;
}

export type HubEvent =
  | { event: 'registered'; name: string; address: string }
  | { event: 'service'; service: string; name: string }
  | { event: 'rejected'; op: string; code: string; message: string };

const HUB_HELP = [
  'lookup SERVICE   the node and address serving SERVICE (try: lookup kv)',
  'resolve NAME     the address of node NAME',
  'status           every name and service',
].join('\n');

/** What one connection has proved: who it is, and whether it knows the secret. */
interface Session {
  from?: string;
  challenge?: string;
  authenticated: boolean;
}

export class DirectoryHub {
  readonly events$ = new Subject<HubEvent>();
  private readonly names = new Map<string, string>();
  private readonly services = new Map<string, string>();
  private listener: Listener | undefined;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: HubOptions = {}) {}

  get url(): string {
    if (!this.listener) throw new Error('the hub is not listening');
    return this.listener.url;
  }

  async listen(): Promise<this> {
    this.listener = await listen({
      host: this.options.host ?? '127.0.0.1',
      port: this.options.port ?? 0,
      maxPayload: HUB_FRAME_BYTES_MAX,
      connectionsMax: this.options.connectionsMax ?? CONNECTIONS_MAX,
      onConnection: (connection) => this.serve(connection),
    });
    return this;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.listener?.close();
      this.events$.complete();
    })();
    return this.closing;
  }

  private serve(connection: Connection): void {
    const session: Session = { authenticated: this.options.secret === undefined };
    serveConnection<HubRequest>(connection, {
      parse: parseHubFrame,
      handle: (request) => this.handle(request, session),
      onRejected: (_id, error) =>
        this.events$.next({ event: 'rejected', op: 'frame', code: error.code, message: error.message }),
    });
  }

  private handle(request: HubRequest, session: Session): Reply {
    switch (request.type) {
      case 'lookup': {
        const name = this.services.get(request.service);
        const address = name === undefined ? undefined : this.names.get(name);
        if (name === undefined || address === undefined) {
          throw new KvError('NOT_FOUND', `no node serves "${request.service}"`);
        }
        return okReply(request.id, { node: name, address });
      }
      case 'resolve': {
        const address = this.names.get(request.name);
        if (address === undefined) throw new KvError('NOT_FOUND', `no node is named "${request.name}"`);
        return okReply(request.id, { name: request.name, address });
      }
      case 'status':
        return okReply(request.id, {
          names: Object.fromEntries(this.names),
          services: Object.fromEntries(this.services),
        });
      case 'hello': {
        session.from = request.from;
        session.authenticated = this.options.secret === undefined;
        if (session.authenticated) return okReply(request.id);
        session.challenge = newChallenge();
        return okReply(request.id, { challenge: session.challenge });
      }
      case 'auth': {
        const { secret } = this.options;
        if (secret === undefined) return okReply(request.id);
        if (!session.from || !session.challenge) throw new KvError('BAD_REQUEST', 'auth comes after hello');
        const valid = verifyProof(secret, session.challenge, session.from, HUB_NAME, request.proof);
        session.challenge = undefined;
        if (!valid) throw new KvError('UNAUTHORIZED', 'wrong cluster secret');
        session.authenticated = true;
        return okReply(request.id);
      }
      case 'register':
        this.requireRegistrant(session, request.name);
        this.names.set(request.name, request.address);
        this.events$.next({ event: 'registered', name: request.name, address: request.address });
        return okReply(request.id);
      case 'register-service':
        this.requireRegistrant(session, request.name);
        if (!this.names.has(request.name)) {
          throw new KvError('NOT_FOUND', `register the name "${request.name}" before its service`);
        }
        this.services.set(request.service, request.name);
        this.events$.next({ event: 'service', service: request.service, name: request.name });
        return okReply(request.id);
      case 'help':
        return okReply(request.id, { help: HUB_HELP });
      default:
        return assertNever(request);
    }
  }

  /** With a secret, a node registers only itself, and only once it proved the secret. */
  private requireRegistrant(session: Session, name: string): void {
    if (this.options.secret === undefined) return;
    if (!session.authenticated) throw new KvError('UNAUTHORIZED', 'registering needs the cluster secret (hello, then auth)');
    if (session.from !== name) throw new KvError('FORBIDDEN', `this session speaks for "${session.from}", not "${name}"`);
  }
}
