#!/usr/bin/env node
/**
 * pbkv: the command line.
 *   pbkv put KEY VALUE [--json]   store VALUE (a string; with --json, parsed as JSON)
 *   pbkv get KEY                  print the value (strings as they are, others as JSON)
 *   pbkv del KEY                  delete KEY
 *   pbkv status                   the hub's names and services
 * --hub URL or PBKV_HUB picks the hub (default ws://127.0.0.1:7400).
 * Exit codes: 0 done, 1 the request failed or the key was not found, 2 bad usage.
 */
import { parseArgs } from 'node:util';
import { KvClient } from '../client/client.js';
import { DEFAULT_HUB_PORT } from '../constants.js';
import { KvError } from '../errors.js';
import type { Json } from '../protocol/messages.js';

const USAGE = `usage: pbkv [--hub URL] put KEY VALUE [--json] | get KEY | del KEY | status`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      hub: { type: 'string', default: process.env['PBKV_HUB'] ?? `ws://127.0.0.1:${DEFAULT_HUB_PORT}` },
      json: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '10000' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const [command, key, ...rest] = positionals;
  const arity: Record<string, number> = { put: 2, get: 1, del: 1, status: 0 };
  if (command === undefined || !(command in arity)) throw new UsageError(USAGE);
  if (positionals.length - 1 !== arity[command]) throw new UsageError(USAGE);

  const client = new KvClient({ hubUrl: values.hub!, requestTimeoutMs: Number(values.timeout) });
  try {
    switch (command) {
      case 'put': {
        await client.put(key!, parseValue(rest[0]!, values.json!));
        console.log('OK');
        return 0;
      }
      case 'get': {
        const value = await client.get(key!);
        if (value === undefined) {
          console.error(`(not found) ${key}`);
          return 1;
        }
        console.log(typeof value === 'string' ? value : JSON.stringify(value));
        return 0;
      }
      case 'del': {
        console.log((await client.del(key!)) ? 'deleted' : '(not found)');
        return 0;
      }
      default: {
        const { names, services } = await client.status();
        for (const [service, node] of Object.entries(services)) console.log(`service ${service} -> ${node}`);
        for (const [name, address] of Object.entries(names)) console.log(`node    ${name.padEnd(8)} ${address}`);
        return 0;
      }
    }
  } finally {
    await client.close();
  }
}

function parseValue(text: string, asJson: boolean): Json {
  if (!asJson) return text;
  try {
    return JSON.parse(text) as Json;
  } catch {
    throw new UsageError(`--json: "${text}" is not valid JSON`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`pbkv: ${(error as Error).message}`);
      process.exitCode = 2;
    } else if (error instanceof KvError) {
      console.error(`pbkv: ${error.code}: ${error.message}`);
      process.exitCode = 1;
    } else {
      console.error(`pbkv: ${(error as Error).message}`);
      process.exitCode = 1;
    }
  },
);
