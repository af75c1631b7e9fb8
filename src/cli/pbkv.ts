#!/usr/bin/env node
/**
 * pbkv: the command line (`pbkv help` prints the usage).
 * Only the options pbkv knows are options, so a value such as `-5` or `--weird` after the
 * command is taken as it is (as redis-cli and etcdctl users expect); `--` ends options.
 * Exit codes: 0 done, 1 the request failed or the key was not found, 2 bad usage, 3 a
 * condition (--if-version) did not hold.
 */
import { readFile } from 'node:fs/promises';
import { KvClient, type WatchEvent } from '../client/client.js';
import { DEFAULT_HUB_PORT, FRAME_BYTES_MAX, REQUEST_TIMEOUT_MS, STATUS_CHANGES_SHOWN, STATUS_WATCH_INTERVAL_MS } from '../constants.js';
import { KvError, assertNever } from '../errors.js';
import type { HubStatus } from '../hub/hub-client.js';
import type { NodeLoad } from '../hub/reports.js';
import type { Json, NodeHealth } from '../protocol/messages.js';

const DEFAULT_HUB_URL = `ws://127.0.0.1:${DEFAULT_HUB_PORT}`;
/** The exit code of a write whose --if-version did not hold (CONFLICT). */
const EXIT_CONFLICT = 3;

/** Each command's usage lines and what it does; `pbkv help COMMAND` prints them. */
const COMMANDS = {
  put: {
    usage: ['pbkv put KEY VALUE [--json]', 'pbkv put KEY - [--json]     (or --stdin)', 'pbkv put KEY VALUE [--if-version V] [--ttl MS] [--with-version]'],
    about: [
      'Stores VALUE under KEY; prints OK once the primary and every replica have it.',
      'VALUE is a string, kept exactly; with --json it is parsed as JSON, so 42 is a number',
      'and \'"42"\' a string. With - or --stdin, VALUE is everything on stdin, less one',
      'trailing newline. A VALUE that starts with - is a value (pbkv put t -5); after --,',
      'so is anything (pbkv put t -- --json).',
      'With --if-version V, only if KEY is at version V (0: only if KEY is absent); else',
      'nothing is written and pbkv exits 3 (CONFLICT). With --ttl MS, KEY expires MS',
      'milliseconds after the write; without it, an expiry KEY had is cleared.',
      'With --with-version, prints the write\'s version as JSON ({"version":19}) instead of OK.',
    ],
  },
  get: {
    usage: ['pbkv get KEY [--json] [--with-version]'],
    about: [
      'Prints the value of KEY: a string as it is, any other value as JSON. With --json the',
      'value is always printed as JSON, so its type shows ("42" is a string, 42 a number).',
      'With --with-version, prints the value, its version and its expiry (Unix ms) if any as',
      'one JSON object: {"value":"blue","version":17}. Prints (not found) on stderr and exits',
      '1 when KEY is absent.',
    ],
  },
  del: {
    usage: ['pbkv del KEY [--if-version V]'],
    about: [
      'Deletes KEY; prints deleted, or (not found) on stderr with exit code 1 when KEY was absent.',
      'With --if-version V, only if KEY is at version V; else nothing is deleted and pbkv exits 3.',
      'With --with-version, prints {"found":true,"version":21} (the delete\'s own version).',
    ],
  },
  incr: {
    usage: ['pbkv incr KEY [BY] [--if-version V] [--ttl MS]'],
    about: [
      'Adds BY (a number, 1 unless given; -5 subtracts) to the number under KEY and prints the',
      'new value. An absent KEY counts as 0; a value that is not a number fails (BAD_REQUEST).',
      'With --ttl MS, KEY expires MS milliseconds after the incr; without it, an expiry KEY',
      'had is kept. --if-version as for put. With --with-version, prints {"value":6,"version":20}.',
    ],
  },
  list: {
    usage: ['pbkv list [PREFIX] [--json]'],
    about: [
      'Prints the keys that start with PREFIX (every key without one), one a line, in the',
      'order of their UTF-8 bytes, a page at a time until the last. With --json, one JSON',
      'object a line: {"key":"user:1","value":{"name":"ann"},"version":12}, and "expiresAt"',
      '(Unix ms) for a key that expires. Pages are read one after another: a key written',
      'while pbkv lists may or may not be printed.',
    ],
  },
  watch: {
    usage: ['pbkv watch [PREFIX] [--from V] [--json]'],
    about: [
      'Prints each change of the keys that start with PREFIX (every key without one), one a',
      'line, as it is acknowledged, until Ctrl-C:',
      '  put user:1 {"name":"ann"} @19     (the value as JSON, then the write\'s version)',
      '  del user:3 @21',
      '  clear user: 2 keys @23            (a clear of that prefix deleted 2 watched keys)',
      'With --from V, the changes from version V on come first (V: a version a put or a list',
      'printed, + 1). With --json, one JSON object a line: {"type":"put","key":"user:1",',
      '"value":{"name":"ann"},"version":19}, {"type":"del",...}, {"type":"clear","prefix":',
      '"user:","keys":[...],"version":23}. Across a failover or a dropped connection it',
      'watches on from the last version printed + 1: no change is missed or printed twice.',
      'When changes from V are no longer kept, pbkv exits 1 saying the oldest version kept',
      '(COMPACTED): list the prefix and watch again from the list\'s version + 1.',
    ],
  },
  status: {
    usage: ['pbkv status [--json] [--watch]'],
    about: [
      'Prints what the hub knows. First the view: its epoch, primary and replicas, and how',
      'many replicas a write needs (the durability floor); when the view has fewer, a line',
      'says writes are refused and why (reads go on; writes resume when a replica rejoins).',
      'Then the services, and one line per node: its address, its role in the view (primary,',
      'replica, or candidate: outside the view, being caught up), its state as the hub sees',
      'it (in view, catching up, dead), its seq and how far it is behind the primary, its',
      'load over the last 10 s (requests per second and their p99 latency), and how the node',
      'says it is (serving, or starting or degraded and why). For a dead node the line shows',
      'how long it has been silent instead, never what it said while alive. Last, the newest',
      'view changes and why they were made. With --json, the hub\'s status as JSON. With',
      '--watch, the same table redrawn once a second until Ctrl-C (with --json, one line a',
      'second).',
    ],
  },
  help: {
    usage: ['pbkv help [COMMAND]'],
    about: ['Prints the usage of pbkv, or of one command.'],
  },
  version: {
    usage: ['pbkv version            (or --version, -v)'],
    about: ['Prints the version of pbkv.'],
  },
} as const satisfies Record<string, { usage: readonly string[]; about: readonly string[] }>;

type Command = keyof typeof COMMANDS;

const OPTIONS_HELP = [
  'Options (anywhere before --):',
  `  --hub URL          the directory hub (env PBKV_HUB; default ${DEFAULT_HUB_URL})`,
  `  --timeout-ms MS    how long to wait for each reply (default ${REQUEST_TIMEOUT_MS})`,
  '  --json             put: parse VALUE as JSON; get, list, watch, status: print JSON',
  '  --stdin            put: read VALUE from stdin (as VALUE - does)',
  '  --if-version V     put, del, incr: only if KEY is at version V (0: absent); else exit 3',
  '  --ttl MS           put, incr: KEY expires MS milliseconds after the write',
  '  --with-version     get, put, del, incr: print the result as JSON with its version',
  '  --from V           watch: the changes from version V on first',
  '  --watch            status: redraw it once a second until Ctrl-C',
  '  --                 ends the options: what follows is KEY and VALUE, whatever it looks like',
  '  -h, --help         print the usage (of the command given, if any)',
  '  -v, --version      print the version',
];

const OVERALL_HELP = [
  'usage: pbkv [options] COMMAND [ARGS]',
  '',
  'Commands:',
  '  put KEY VALUE      store VALUE (a string; with --json, parsed as JSON)',
  '  put KEY -          store everything on stdin, less one trailing newline (also: --stdin)',
  '  get KEY            print the value (with --json, as JSON so its type shows)',
  '  del KEY            delete KEY',
  '  incr KEY [BY]      add BY (default 1) to the number under KEY; print the new value',
  '  list [PREFIX]      print the keys with PREFIX, one a line (with --json, values and versions too)',
  '  watch [PREFIX]     print each change of the keys with PREFIX as it happens, until Ctrl-C',
  '  status             the view, whether writes are taken, and each node\'s role, state, seq, lag and load',
  '  help [COMMAND]     this text, or one command\'s',
  '  version            the version of pbkv',
  '',
  ...OPTIONS_HELP,
  '',
  'Exit codes: 0 done, 1 the request failed (the message says CODE: why) or the key was',
  'not found, 2 bad usage, 3 a condition (--if-version) did not hold: nothing was written',
  '(CONFLICT; the message says the version KEY is at).',
].join('\n');

function commandHelp(command: Command): string {
  const [first, ...more] = COMMANDS[command].usage;
  return [`usage: ${first}`, ...more.map((line) => `       ${line}`), '', ...COMMANDS[command].about, '', ...OPTIONS_HELP].join('\n');
}

/** Bad usage (exit 2): the message, then the usage of `command`, or the overall usage. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: Command,
  ) {
    super(message);
  }

  usage(): string {
    if (this.command === undefined) return OVERALL_HELP;
    const [first, ...more] = COMMANDS[this.command].usage;
    return [`usage: ${first}`, ...more.map((line) => `       ${line}`), `(pbkv help ${this.command} says more)`].join('\n');
  }
}

interface Invocation {
  positionals: string[];
  hubUrl: string;
  timeoutMs: number;
  json: boolean;
  stdin: boolean;
  help: boolean;
  version: boolean;
  withVersion: boolean;
  ifVersion: number | undefined;
  ttlMs: number | undefined;
  fromVersion: number | undefined;
  watch: boolean;
}

/** The options a command may take, and the commands each of them is for. */
const OPTION_COMMANDS = {
  json: ['put', 'get', 'list', 'watch', 'status'],
  stdin: ['put'],
  withVersion: ['get', 'put', 'del', 'incr'],
  ifVersion: ['put', 'del', 'incr'],
  ttlMs: ['put', 'incr'],
  fromVersion: ['watch'],
  watch: ['status'],
} as const satisfies Record<string, readonly Command[]>;

/** How each of those options is spelled on the command line. */
const OPTION_NAMES: Record<keyof typeof OPTION_COMMANDS, string> = { json: '--json', stdin: '--stdin', withVersion: '--with-version', ifVersion: '--if-version', ttlMs: '--ttl', fromVersion: '--from', watch: '--watch' };

/**
 * Reads the command line. Only known options are options: an unknown one before the
 * command is a usage error, one after the command is an argument (a key or a value).
 */
function parseCommandLine(argv: readonly string[]): Invocation {
  const invocation: Invocation = {
    positionals: [],
    hubUrl: process.env['PBKV_HUB'] || DEFAULT_HUB_URL,
    timeoutMs: REQUEST_TIMEOUT_MS,
    json: false,
    stdin: false,
    help: false,
    version: false,
    withVersion: false,
    ifVersion: undefined,
    ttlMs: undefined,
    fromVersion: undefined,
    watch: false,
  };
  let optionsEnded = false;
  for (let index = 0; index < argv.length; index += 1) {
    const token = argv[index]!;
    if (optionsEnded || !token.startsWith('-') || token === '-') {
      invocation.positionals.push(token);
      continue;
    }
    if (token === '--') {
      optionsEnded = true;
      continue;
    }
    const equals = token.startsWith('--') ? token.indexOf('=') : -1;
    const name = equals === -1 ? token : token.slice(0, equals);
    const inline = equals === -1 ? undefined : token.slice(equals + 1);
    const command = commandOf(invocation.positionals[0]);
    const valueOf = () => {
      const value = inline ?? argv[++index];
      if (value === undefined) throw new UsageError(`${name} needs a value`, command);
      return value;
    };
    const integer = (min: number, what: string) => {
      const text = valueOf();
      const value = Number(text);
      if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new UsageError(`${name} must be ${what}, not "${text}"`, command);
      return value;
    };
    const flag = (field: 'json' | 'stdin' | 'help' | 'version' | 'withVersion' | 'watch') => {
      if (inline !== undefined) throw new UsageError(`${name} takes no value`, command);
      invocation[field] = true;
    };
    switch (name) {
      case '--hub':
        invocation.hubUrl = valueOf();
        break;
      case '--timeout-ms':
      case '--timeout': {
        const text = valueOf();
        invocation.timeoutMs = Number(text);
        if (!Number.isInteger(invocation.timeoutMs) || invocation.timeoutMs <= 0) {
          throw new UsageError(`${name} must be a positive number of milliseconds, not "${text}"`, command);
        }
        break;
      }
      case '--json':
        flag('json');
        break;
      case '--stdin':
        flag('stdin');
        break;
      case '--with-version':
        flag('withVersion');
        break;
      case '--if-version':
        invocation.ifVersion = integer(0, 'a version: a whole number, 0 for an absent key');
        break;
      case '--ttl':
      case '--ttl-ms':
        invocation.ttlMs = integer(1, 'a positive whole number of milliseconds');
        break;
      case '--from':
        invocation.fromVersion = integer(1, 'a version: a whole number from 1');
        break;
      case '--watch':
        flag('watch');
        break;
      case '-h':
      case '--help':
        flag('help');
        break;
      case '-v':
      case '--version':
        flag('version');
        break;
      default:
        if (invocation.positionals.length === 0) throw new UsageError(`unknown option ${token}`);
        invocation.positionals.push(token);
    }
  }
  return invocation;
}

function commandOf(word: string | undefined): Command | undefined {
  return word !== undefined && Object.hasOwn(COMMANDS, word) ? (word as Command) : undefined;
}

async function main(argv: readonly string[]): Promise<number> {
  const invocation = parseCommandLine(argv);
  const [word, ...args] = invocation.positionals;
  const command = commandOf(word);
  if (word !== undefined && command === undefined) throw new UsageError(`unknown command "${word}"`);
  if (invocation.version) return printVersion();
  if (invocation.help) {
    console.log(command === undefined || command === 'help' ? OVERALL_HELP : commandHelp(command));
    return 0;
  }
  if (command === undefined) throw new UsageError('no command given');

  const expect = (count: number) => {
    if (args.length !== count) throw new UsageError(`${command} takes ${count === 0 ? 'no arguments' : count === 1 ? 'one argument' : `${count} arguments`}, not ${args.length}`, command);
  };
  for (const [option, commands] of Object.entries(OPTION_COMMANDS) as [keyof typeof OPTION_COMMANDS, readonly Command[]][]) {
    const given = invocation[option] !== undefined && invocation[option] !== false;
    if (given && !commands.includes(command)) throw new UsageError(`${OPTION_NAMES[option]} is for ${commands.length === 1 ? commands[0] : `${commands.slice(0, -1).join(', ')} and ${commands.at(-1)}`}, not ${command}`, command);
  }
  const { ifVersion, ttlMs } = invocation;
  switch (command) {
    case 'help': {
      if (args.length > 1) expect(1);
      const about = commandOf(args[0]);
      if (args[0] !== undefined && about === undefined) throw new UsageError(`unknown command "${args[0]}"`);
      console.log(about === undefined || about === 'help' ? OVERALL_HELP : commandHelp(about));
      return 0;
    }
    case 'version':
      expect(0);
      return printVersion();
    case 'put': {
      const fromStdin = invocation.stdin || args[1] === '-';
      if (invocation.stdin && args.length === 2) throw new UsageError('--stdin and VALUE: give one of them', command);
      expect(fromStdin && invocation.stdin ? 1 : 2);
      const text = fromStdin ? await readStdin() : args[1]!;
      const value = invocation.json ? parseJson(text) : text;
      return withClient(invocation, async (client) => {
        const version = await client.put(args[0]!, value, { ifVersion, ttlMs });
        console.log(invocation.withVersion ? JSON.stringify({ version }) : 'OK');
        return 0;
      });
    }
    case 'get':
      expect(1);
      return withClient(invocation, async (client) => {
        const entry = await client.getEntry(args[0]!);
        if (entry === undefined) {
          console.error('(not found)');
          return 1;
        }
        const { value } = entry;
        if (invocation.withVersion) console.log(JSON.stringify(entry));
        else console.log(typeof value === 'string' && !invocation.json ? value : JSON.stringify(value));
        return 0;
      });
    case 'del':
      expect(1);
      return withClient(invocation, async (client) => {
        const deleted = await client.delEntry(args[0]!, { ifVersion });
        if (invocation.withVersion) console.log(JSON.stringify(deleted));
        else if (deleted.found) console.log('deleted');
        if (deleted.found) return 0;
        console.error('(not found)');
        return 1;
      });
    case 'incr': {
      if (args.length === 0 || args.length > 2) throw new UsageError(`incr takes KEY and an optional BY, not ${args.length} arguments`, command);
      const by = args[1] === undefined ? 1 : parseNumber(args[1], command);
      return withClient(invocation, async (client) => {
        const counted = await client.incr(args[0]!, by, { ifVersion, ttlMs });
        console.log(invocation.withVersion ? JSON.stringify(counted) : String(counted.value));
        return 0;
      });
    }
    case 'list': {
      if (args.length > 1) expect(1);
      return withClient(invocation, async (client) => {
        for await (const page of client.list(args[0] ?? '', { values: invocation.json })) {
          // One write a page, not one a key.
          const lines = page.entries.map((entry) => (invocation.json ? JSON.stringify(entry) : entry.key));
          if (lines.length > 0) console.log(lines.join('\n'));
        }
        return 0;
      });
    }
    case 'watch': {
      if (args.length > 1) expect(1);
      return withClient(invocation, (client) => printChanges(client, args[0] ?? '', invocation));
    }
    case 'status':
      expect(0);
      return withClient(invocation, async (client) => {
        const print = (status: HubStatus) => {
          if (invocation.json) {
            const { names, services, nodes, view, metrics } = status;
            console.log(JSON.stringify({ services, names, nodes, ...(view ? { view } : {}), ...(metrics ? { metrics } : {}) }));
          } else for (const line of statusLines(status)) console.log(line);
        };
        if (invocation.watch) return watchStatus(client, print, invocation.json);
        print(await client.status());
        return 0;
      });
  }
}

/**
 * `status --watch`: the status once a second until SIGINT or SIGTERM (then 0). On a
 * terminal each one replaces the last (the screen is cleared); to a pipe, or with --json,
 * they follow one another. A status the hub does not answer is said and retried.
 */
function watchStatus(client: KvClient, print: (status: HubStatus) => void, json: boolean): Promise<number> {
  const redraw = process.stdout.isTTY && !json;
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const once = async () => {
      let status: HubStatus | undefined;
      let failure: string | undefined;
      try {
        status = await client.status();
      } catch (error) {
        failure = (error as Error).message;
      }
      if (stopped) return;
      if (redraw) process.stdout.write('\x1b[H\x1b[2J');
      if (!json) console.log(`pbkv status, every ${STATUS_WATCH_INTERVAL_MS / 1000} s (Ctrl-C stops)  ${new Date().toISOString()}`);
      if (status) print(status);
      else console.log(json ? JSON.stringify({ error: failure }) : `the hub did not answer: ${failure}`);
      timer = setTimeout(once, STATUS_WATCH_INTERVAL_MS);
    };
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    void once();
  });
}

/**
 * Prints each change of `prefix` until SIGINT or SIGTERM (then 0: the watch is ended with
 * unwatch as the client closes), or until the watch fails (its KvError). A line is written
 * as its event arrives: stdout to a pipe or a file is written synchronously on Linux, so a
 * slow reader slows the watch, which the node then cancels and the client resumes, rather
 * than queueing lines in memory.
 */
function printChanges(client: KvClient, prefix: string, invocation: Invocation): Promise<number> {
  return new Promise((resolve, reject) => {
    const subscription = client.watch({ prefix }, { fromVersion: invocation.fromVersion }).subscribe({
      next: (event) => console.log(invocation.json ? JSON.stringify(event) : changeLine(event)),
      error: reject,
    });
    const stop = () => {
      subscription.unsubscribe();
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/** One change as `pbkv help watch` shows it. */
function changeLine(event: WatchEvent): string {
  switch (event.type) {
    case 'put':
      return `put ${event.key} ${JSON.stringify(event.value)} @${event.version}`;
    case 'del':
      return `del ${event.key} @${event.version}`;
    case 'clear':
      return `clear ${event.prefix} ${event.keys.length === 1 ? '1 key' : `${event.keys.length} keys`} @${event.version}`;
    case 'snapshot':
      return `snapshot ${'key' in event ? event.key : event.prefix} @${event.version}`;
    default:
      return assertNever(event);
  }
}

/**
 * The hub's status for a person: the view, whether it takes writes, the services, one
 * line per node, the newest changes. A node's line reads as it is now: what the hub saw of
 * it (role, state, seq, lag) and, for a node the hub still hears, how it says it is; a
 * dead node's last word is old news, so its line says how long it has been silent.
 */
function statusLines({ names, services, nodes, view, metrics }: HubStatus): string[] {
  const lines: string[] = [];
  if (view) {
    const needs = view.minReplicas === 1 ? 'a write needs 1 replica' : `a write needs ${view.minReplicas} replicas`;
    lines.push(`view    ${view.epoch}: primary ${view.primary}, replicas ${view.replicas.join(', ') || '(none)'}; ${needs}`);
    if (view.writesRefused !== undefined) lines.push(`writes  REFUSED: ${view.writesRefused}`);
  }
  for (const [service, node] of Object.entries(services)) lines.push(`service ${service} -> ${node}`);
  const everyone = [...new Set([...Object.keys(names), ...Object.keys(view?.members ?? {})])].sort();
  const rows = everyone.map((name) => {
    const member = view?.members[name];
    const columns = [name, names[name] ?? '-'];
    if (view) {
      const role = name === view.primary ? 'primary' : view.replicas.includes(name) ? 'replica' : member && member.state !== 'dead' ? 'candidate' : '-';
      columns.push(role, member?.state ?? 'unheard', member ? `seq ${member.seq}${member.lag > 0 ? ` (${member.lag} behind)` : ''}` : '');
    }
    if (metrics) columns.push(member?.state === 'dead' ? '' : loadOf(metrics[name]));
    columns.push(member?.state === 'dead' ? silence(member.heardMsAgo) : sayings(nodes[name], name === view?.primary && view.writesRefused !== undefined));
    return columns;
  });
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]!.length))) ?? [];
  for (const row of rows) lines.push(`node    ${row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()}`);
  for (const change of view?.changes.slice(-STATUS_CHANGES_SHOWN) ?? []) {
    lines.push(`change  ${new Date(change.atMs).toISOString()} view ${change.epoch}: primary ${change.primary}: ${change.why}`);
  }
  return lines;
}

/** A node's load over the last seconds: requests per second and their p99. */
function loadOf(load: NodeLoad | undefined): string {
  if (!load) return '';
  const p99 = load.p99AllMs === null ? '' : `  p99 ${load.p99AllMs < 10 ? load.p99AllMs.toFixed(2) : load.p99AllMs.toFixed(1)} ms`;
  return `${Math.round(load.requests).toLocaleString('en-US')} req/s${p99}`;
}

/** How a node the hub hears says it is: serving, or its state and why. */
function sayings(health: NodeHealth | undefined, refusingWrites: boolean): string {
  if (!health) return '';
  const said = `${health.state}${health.reason ? `: ${health.reason}` : ''}`;
  // A primary below the floor says so itself (degraded, and why); an older one may not.
  return refusingWrites && health.state === 'serving' ? `${said} (writes refused: see above)` : said;
}

function silence(heardMsAgo: number | undefined): string {
  return heardMsAgo === undefined ? 'no heartbeat' : `no heartbeat for ${(heardMsAgo / 1000).toFixed(1)} s`;
}

async function withClient(invocation: Invocation, use: (client: KvClient) => Promise<number>): Promise<number> {
  const client = new KvClient({ hubUrl: invocation.hubUrl, requestTimeoutMs: invocation.timeoutMs });
  try {
    return await use(client);
  } finally {
    await client.close();
  }
}

async function printVersion(): Promise<number> {
  // dist/src/cli/pbkv.js -> the package's own package.json, wherever it is installed.
  const text = await readFile(new URL('../../../package.json', import.meta.url), 'utf8');
  console.log(`pbkv ${(JSON.parse(text) as { version: string }).version}`);
  return 0;
}

/**
 * All of stdin as UTF-8, less one trailing newline (what `echo` and editors add). Bounded:
 * a value is at most VALUE_BYTES_MAX, so more than a frame's worth is refused unread.
 */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > FRAME_BYTES_MAX) throw new KvError('TOO_LARGE', `stdin holds more than ${FRAME_BYTES_MAX} bytes, more than a value may`);
    chunks.push(chunk);
  }
  let text: string;
  try {
    // fatal: bytes that are not UTF-8 would otherwise become U+FFFD, a silently different value.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new UsageError('stdin is not UTF-8 text (pbkv stores text and JSON; encode binary data, e.g. as base64)', 'put');
  }
  return text.replace(/\r?\n$/, '');
}

/** A number as JSON writes one (incr's BY): -5 and 2.5 are, 0x10 and Infinity are not. */
function parseNumber(text: string, command: Command): number {
  if (!/^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(text) || !Number.isFinite(Number(text))) {
    throw new UsageError(`BY must be a number, not "${text}"`, command);
  }
  return Number(text);
}

function parseJson(text: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch {
    throw new UsageError(`--json: ${JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text)} is not valid JSON`, 'put');
  }
}

// A reader that stops early (pbkv list | head) closes the pipe: that ends pbkv quietly, as it
// ends cat, instead of with a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(0);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`pbkv: ${error.message}\n${error.usage()}`);
      process.exitCode = 2;
    } else if (error instanceof KvError) {
      console.error(`pbkv: ${error.code}: ${error.message}`);
      // A condition that did not hold is an answer, not a failure: scripts tell it apart.
      process.exitCode = error.code === 'CONFLICT' ? EXIT_CONFLICT : 1;
    } else {
      console.error(`pbkv: ${(error as Error).message}`);
      process.exitCode = 1;
    }
  },
);
