#!/usr/bin/env node
/** Starts the directory hub: node dist/tools/hub.js [--host H] [--port P] [--secret S] */
import { parseArgs } from 'node:util';
import { DEFAULT_HUB_PORT } from '../src/constants.js';
import { DirectoryHub } from '../src/hub/hub.js';
import { onShutdown } from './shutdown.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: String(DEFAULT_HUB_PORT) },
    secret: { type: 'string', default: process.env['PBKV_SECRET'] },
    trace: { type: 'boolean', default: false },
  },
});

const hub = new DirectoryHub({
  host: values.host!,
  port: Number(values.port),
  ...(values.secret ? { secret: values.secret } : {}),
});
if (values.trace) hub.events$.subscribe((event) => console.log(JSON.stringify({ node: 'hub', at: Date.now(), ...event })));
await hub.listen();
console.log(JSON.stringify({ event: 'ready', name: 'hub', url: hub.url }));
onShutdown(() => hub.close());
