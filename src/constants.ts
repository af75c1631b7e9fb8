/**
 * Every limit and timeout of pbkv, with its unit in its name. Nodes, the hub, the
 * client and the tools take their defaults from here and pass them on explicitly
 * (ws `maxPayload`, the store's sync mode), so a limit is changed in one place.
 */

/** Largest key, in UTF-8 bytes (docs/PROTOCOL.md). */
export const KEY_BYTES_MAX = 1024;
/** Largest value, in bytes of its JSON serialization (docs/PROTOCOL.md). */
export const VALUE_BYTES_MAX = 1024 * 1024;
/**
 * Deepest nesting of arrays and objects in a value. JSON.parse takes any depth, but
 * JSON.stringify overflows the stack near 5,000 levels and SQLite's JSON functions stop
 * at 1,000: a deeper value could be taken by the primary and fail on a replica.
 */
export const VALUE_DEPTH_MAX = 512;
/** Largest client frame: answered TOO_LARGE past it, the connection stays up. */
export const FRAME_BYTES_MAX = 2 * VALUE_BYTES_MAX;
/**
 * Largest frame the client library reads from a node (ws `maxPayload`). A reply holds at
 * most one value, VALUE_BYTES_MAX, and echoes the request's id, which a request frame of
 * FRAME_BYTES_MAX bounds: twice FRAME_BYTES_MAX holds any reply a request can ask for.
 */
export const CLIENT_REPLY_FRAME_BYTES_MAX = 2 * FRAME_BYTES_MAX;
/**
 * Largest frame a node reads at all (ws `maxPayload`): a replication batch carries many
 * puts. Past it the connection is closed with 1009, as ws cannot skip a frame unread.
 */
export const PEER_FRAME_BYTES_MAX = 16 * 1024 * 1024;
/** Client connections one node (or the hub) accepts at once. */
export const CONNECTIONS_MAX = 1024;
/**
 * Peer connections (node to node, node to hub) one server accepts at once: slots of their
 * own, so clients can never starve replication. A peer connection must prove the cluster
 * secret within PEER_AUTH_TIMEOUT_MS; when the slots are full, the oldest connection that
 * has not proved it yet makes room for the new one.
 */
export const PEER_CONNECTIONS_MAX = 64;
export const PEER_AUTH_TIMEOUT_MS = 5_000;
/** The URL path peers connect to; clients use any other. */
export const PEER_PATH = '/pbkv/peer';
/**
 * A TCP connection must finish its WebSocket upgrade within this time, and at most this
 * many may be in their handshake at once (the oldest makes room for a new one), so
 * half-open connections cannot exhaust a node's file descriptors.
 */
export const HANDSHAKE_TIMEOUT_MS = 3_000;
export const HANDSHAKES_MAX = 256;
/** Requests one connection may have in flight before it is paused. */
export const CONNECTION_REQUESTS_IN_FLIGHT_MAX = 1024;
/**
 * Reply bytes one connection may have unsent before it stops being read; replies past it,
 * and requests already read, wait until the socket drains.
 */
export const CONNECTION_SEND_BUFFER_BYTES_MAX = 4 * 1024 * 1024;
/**
 * Unsent reply bytes of all of a server's connections together; past it the connection
 * with the most unsent bytes is dropped (a client that does not read its replies).
 */
export const SERVER_SEND_BUFFER_BYTES_MAX = 32 * 1024 * 1024;
/** Requests one RPC channel (a client, a link, a hub client) may have awaiting replies. */
export const RPC_PENDING_MAX = 100_000;
/** Names the hub keeps (registered nodes) and services. */
export const HUB_NAMES_MAX = 1024;
/**
 * Longest node or service name (ASCII letters, digits, '.', '_', '-': bytes and characters
 * alike). A name travels in every hello, view and heartbeat and the hub's status lists them
 * all: HUB_NAMES_MAX names of 128 bytes are 128 KiB of a HUB_FRAME_BYTES_MAX status.
 */
export const NAME_BYTES_MAX = 128;
/** The hub's own name in hello proofs (nodes prove the secret to it as to a peer). */
export const HUB_NAME = 'hub';
/** The service the view's primary serves: what clients look up. */
export const KV_SERVICE = 'kv';
/** Longest reason a node reports with its health (the hub refuses longer; the node cuts it). */
export const REPORT_REASON_LENGTH_MAX = 1024;
/** Largest frame the hub reads, and that a hub client reads from it (status lists every name). */
export const HUB_FRAME_BYTES_MAX = 1024 * 1024;
/** Writes the primary holds queued (not yet in a batch) before it answers UNAVAILABLE. */
export const WRITE_QUEUE_MAX = 100_000;
/** Bytes of keys and values those queued writes may hold (counted as opBytes does). */
export const WRITE_QUEUE_BYTES_MAX = 32 * 1024 * 1024;
/**
 * Batches the primary has applied that still wait for acks; further writes wait and batch
 * up. With the synchronous store a commit costs tens of microseconds, so overlapping the
 * next commit with the current batch's replication gains less than one larger batch does:
 * 1 measured 15% more puts at 8 x 8 than 2, and 4 fewer still (docs/PERFORMANCE.md).
 */
export const BATCHES_IN_FLIGHT_MAX = 1;
/** Writes in one batch: one SQLite transaction and one replication frame. */
export const BATCH_WRITES_MAX = 2048;
/** Bytes of keys and values in one batch. */
export const BATCH_BYTES_MAX = 8 * 1024 * 1024;
/**
 * Writes the primary keeps in memory for a replica that reconnects: the catch-up window
 * (about 20 s at 10,000 puts/s). The log holds each batch as its wire text.
 */
export const REPLICATION_LOG_ENTRIES_MAX = 200_000;
/** Memory of that log (UTF-16 text and offsets, as batchBytes counts it). */
export const REPLICATION_LOG_BYTES_MAX = 32 * 1024 * 1024;
/**
 * A snapshot for a replica the log cannot catch up travels in parts of at most this many
 * entries and bytes (values at the 1 MiB limit still fit: a part always holds one entry).
 */
export const SNAPSHOT_PART_ENTRIES_MAX = 1024;
export const SNAPSHOT_PART_BYTES_MAX = 4 * 1024 * 1024;
/** Out-of-order batches a replica holds while it waits for a gap to fill. */
export const REPLICA_PENDING_BATCHES_MAX = 1024;

/**
 * How often a store checkpoints its WAL from a connection of its own, so the checkpoint
 * (and its fsync) is not paid inside a commit; and the WAL pages past which the writer
 * checkpoints itself anyway, should the background fall behind (about 40 MB).
 */
export const CHECKPOINT_INTERVAL_MS = 1_000;
export const WAL_AUTOCHECKPOINT_PAGES = 10_000;

/**
 * Failover timing (docs/DESIGN.md, "Failover"). Nodes heartbeat the hub every
 * HEARTBEAT_INTERVAL_MS; the hub calls a node dead after DEAD_AFTER_MS without one. A
 * replica's acknowledgement grants the primary a lease of LEASE_MS from when the primary
 * sent what was acknowledged; the primary renews it at least every LEASE_RENEW_MS and
 * serves only while every replica's lease holds. A replica accepts a new primary only
 * once the lease it granted the old one has run out, and DEAD_AFTER_MS > LEASE_MS, so
 * the deposed primary has stopped serving before the new one starts.
 */
export const HEARTBEAT_INTERVAL_MS = 250;
/**
 * How long a node waits for the hub's answer to one heartbeat: four intervals, so a slow
 * hub is not given up on at once, while a dead one is noticed well within DEAD_AFTER_MS.
 */
export const HEARTBEAT_REPLY_DEADLINE_MS = HEARTBEAT_INTERVAL_MS * 4;
export const DEAD_AFTER_MS = 1_500;
export const LEASE_MS = 1_000;
export const LEASE_RENEW_MS = 250;
/** A lease with less than this left is renewed at once, busy link or not: half a lease, so one lost renewal still leaves time for the next. */
export const LEASE_RENEW_BELOW_MS = LEASE_MS / 2;
/**
 * Append frames a link keeps sent but not yet acknowledged. Two keep the replica busy
 * while the next frame gathers everything logged meanwhile (natural batching on the link).
 */
export const APPENDS_IN_FLIGHT_MAX = 2;
/**
 * How often the hub's view keeper looks at the heartbeats: twice per heartbeat interval,
 * so a node is called dead at most half an interval past DEAD_AFTER_MS.
 */
export const VIEW_TICK_INTERVAL_MS = HEARTBEAT_INTERVAL_MS / 2;
/**
 * How old the primary's last heartbeat may be for the hub to act on the replicas it called
 * unreachable in it: two intervals (one late beat is not a death). A primary silent for
 * longer may have died right after saying so, and is about to be replaced: its replicas
 * are what the next view needs, so they are not cut.
 */
export const UNREACHABLE_REPORT_FRESH_MS = 2 * HEARTBEAT_INTERVAL_MS;
/**
 * The durability floor when the first view's proposal names none: a write is acknowledged
 * only while the view holds at least this many replicas (1 whenever the cluster has any,
 * so no acknowledged write lives on one disk alone; a cluster without replicas gets 0).
 */
export const MIN_REPLICAS_DEFAULT = 1;
/** Nodes a view (or a heartbeat's lists) may name. */
export const VIEW_NODES_MAX = 16;
/** View changes the hub keeps for its status. */
export const VIEW_CHANGES_KEPT = 20;
/** View changes `pbkv status` prints (the newest); --json prints all the hub keeps. */
export const STATUS_CHANGES_SHOWN = 5;
/** `pbkv status --watch` redraws this often. */
export const STATUS_WATCH_INTERVAL_MS = 1_000;

/**
 * Request tags (docs/PROTOCOL.md, "Retries applied at most once"). A client id is at most
 * CLIENT_ID_LENGTH_MAX characters. A store remembers, per client, what became of its last
 * REQUEST_TAG_WINDOW request numbers: a retry of one of them gets its first reply, an older
 * one is refused (the client library never has a write that far behind its newest in
 * flight). At most CLIENT_SESSIONS_MAX clients are remembered; past that the client that
 * wrote least recently is forgotten, the same one on every node, as every node applies
 * the same writes in the same order (docs/DESIGN.md, "Retries applied at most once").
 */
export const CLIENT_ID_LENGTH_MAX = 64;
/**
 * Random bytes in the id the client library draws: 96 bits, so ids drawn by a billion
 * clients collide with a chance of about 10^-11 (a reused id would be answered with another
 * client's replies), written as 24 hex digits after `c-`, within CLIENT_ID_LENGTH_MAX.
 */
export const CLIENT_ID_RANDOM_BYTES = 12;
export const REQUEST_TAG_WINDOW = 256;
export const CLIENT_SESSIONS_MAX = 10_000;
/**
 * A SQLite store logs each batch's request tags in one row and folds the sessions they
 * changed into their rows now and then (src/storage/sqlite-sessions.ts): once the log holds
 * SESSION_LOG_WRITES_MAX tagged writes, or its writes changed SESSION_FOLD_CLIENTS_MAX
 * sessions, which bounds what one fold writes (at most that many rows of about 2 KB) and
 * what opening a file replays.
 */
export const SESSION_LOG_WRITES_MAX = 4_096;
export const SESSION_FOLD_CLIENTS_MAX = 64;

/** How long the primary waits for every replica to acknowledge a write. */
export const ACK_TIMEOUT_MS = 2_000;
/** How long the client library retries a request no primary answered (a failover, a restart). */
export const CLIENT_RETRY_DEADLINE_MS = 10_000;
/** How long a client waits for the reply to one request. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** How long a replica reuses the primary's address it resolved for NOT_PRIMARY replies. */
export const PRIMARY_ADDRESS_TTL_MS = 1_000;
/** How long a node keeps retrying to resolve a peer's name at the hub. */
export const RESOLVE_DEADLINE_MS = 30_000;
/** First and largest delay between two retries (resolve, reconnect). */
export const RETRY_DELAY_FIRST_MS = 25;
export const RETRY_DELAY_MAX_MS = 1_000;
/** How long a connection attempt may take. */
export const CONNECT_TIMEOUT_MS = 5_000;
/** How long a closed connection may wait for the peer's close frame before it is dropped. */
export const CLOSE_GRACE_MS = 1_000;
/**
 * Interval of WebSocket pings. Each end pings every interval and drops the connection when
 * no pong came back since its previous ping (one ping unanswered for a whole interval), so
 * a silent peer (a half-open TCP connection) is gone at most two intervals after its last
 * pong. A node's hub connection is dropped sooner: a heartbeat without a reply within
 * 4 x HEARTBEAT_INTERVAL_MS closes it (node.ts, hub-client.ts).
 */
export const KEEPALIVE_INTERVAL_MS = 10_000;

/**
 * V8's old-space limit for a node process the tools start (--max-old-space-size). What a
 * node keeps is bounded in bytes (log, write queue, send buffers), so this only stops V8
 * from letting garbage pile up: without it a primary loaded with 1M keys peaked at 250 MB
 * RSS, with it at about 160 MB (docs/PERFORMANCE.md).
 */
export const NODE_HEAP_MB_MAX = 128;
/**
 * V8's young generation for the same processes (--max-semi-space-size). Node 24's V8
 * sizes it from the old-space limit, and at 128 MB that left scavenges taking 45% of a
 * primary's time on a store of 1M keys: 15,000 gets/s where 16 MB gives 54,000, at a
 * peak RSS of 173 MB (docs/PERFORMANCE.md).
 */
export const NODE_SEMI_SPACE_MB = 16;

/** Default addresses of the local cluster (docs/PROTOCOL.md, "Defaults of npm start"). */
export const DEFAULT_HUB_PORT = 7400;
export const DEFAULT_NODE_PORT_FIRST = 7401;

/**
 * The most UTF-8 bytes one UTF-16 code unit of a string can take: a frame whose length
 * times this is within a byte limit is within it without counting its bytes.
 */
export const UTF8_BYTES_PER_UNIT_MAX = 3;

/**
 * The data API (docs/PROTOCOL.md). A list page holds at most LIST_LIMIT_MAX entries
 * (LIST_LIMIT_DEFAULT unless asked) and LIST_PAGE_BYTES_MAX bytes of values, so one reply
 * stays far below a client's frame limit. A clear deletes at most CLEAR_KEYS_MAX keys and
 * CLEAR_KEY_BYTES_MAX bytes of keys as one write: one replication op, which must fit an
 * append frame, and one transaction short enough that heartbeats and leases never wait on it.
 */
export const LIST_LIMIT_DEFAULT = 100;
export const LIST_LIMIT_MAX = 1_000;
export const LIST_PAGE_BYTES_MAX = 4 * 1024 * 1024;
export const CLEAR_KEYS_MAX = 10_000;
export const CLEAR_KEY_BYTES_MAX = 1024 * 1024;
/**
 * Expiry: the primary looks for expired keys every EXPIRY_INTERVAL_MS and deletes at most
 * EXPIRY_BATCH_MAX of them at a time (ordinary replicated deletes), so a million keys
 * expiring at once are deleted over a while, never in one long batch that stalls writes.
 * PROTOCOL.md promises a delete within about a second of expiry when few keys expire.
 */
export const EXPIRY_INTERVAL_MS = 250;
export const EXPIRY_BATCH_MAX = 1_000;

/**
 * Watches (PROTOCOL.md, "Watching changes"). One connection may hold WATCHES_PER_CONNECTION_MAX
 * watches and a node WATCHERS_MAX in all; past either a watch is refused (UNAVAILABLE,
 * nothing applied). A watcher's events wait in its queue only while its connection is over
 * its send limit (CONNECTION_SEND_BUFFER_BYTES_MAX); a queue past WATCH_QUEUE_EVENTS_MAX
 * events or WATCH_QUEUE_BYTES_MAX bytes (more than one event of the largest value) cuts the
 * watch off with a `cancelled` event, and so does the node's total past WATCH_QUEUES_BYTES_MAX
 * (the largest queue goes first): a watcher that does not read costs a bounded amount.
 */
export const WATCHES_PER_CONNECTION_MAX = 64;
export const WATCHERS_MAX = 10_000;
export const WATCH_QUEUE_EVENTS_MAX = 10_000;
export const WATCH_QUEUE_BYTES_MAX = 2 * VALUE_BYTES_MAX;
export const WATCH_QUEUES_BYTES_MAX = 16 * 1024 * 1024;

// ---- The operator's view (metrics, the status page) -----------------------------------

/**
 * The upper bounds, in ms, of the buckets of every latency histogram a node reports (one
 * more bucket counts what is past the last). Fixed, so the hub can add nodes' histograms
 * up and Prometheus can aggregate them.
 */
export const LATENCY_BUCKETS_MS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000] as const;
/** The upper bounds of the histogram of writes per batch (one more bucket: past the last). */
export const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048] as const;
/** The hub's history of each node's rates and p99, one sample a second, for the page: five minutes. */
export const METRICS_HISTORY_SAMPLES = 300;
export const METRICS_SAMPLE_INTERVAL_MS = 1_000;
/** The window, in samples, over which `status` gives each node's rates and p99. */
export const METRICS_STATUS_WINDOW_SAMPLES = 10;
/** Nodes whose reports the hub keeps (the least recently heard one makes room). */
export const METRICS_NODES_MAX = 4 * VIEW_NODES_MAX;
/** Open event streams (GET /events: the page's live updates) a hub serves at once; one more gets 503. */
export const EVENT_STREAMS_MAX = 64;
/** Bytes an event stream may have unsent; a reader that falls further behind is dropped (it reconnects). */
export const EVENT_STREAM_BUFFER_BYTES_MAX = 4 * 1024 * 1024;
