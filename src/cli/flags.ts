/**
 * The flags of a tool people run: strict (an unknown flag prints the usage and exits 2),
 * `-h`/`--help` prints the usage and exits 0, and a failure is one line, no stack.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

/** Ends the tool: exit 2 is bad usage (the usage follows); any other code is a failure to run. */
export type Fail = (message: string, code?: number) => never;

export function failWith(tool: string, usage: string): Fail {
  return (message, code = 2) => {
    console.error(`${tool}: ${message}`);
    if (code === 2) console.error(usage);
    process.exit(code);
  };
}

export function readFlags<const T extends ParseArgsOptionsConfig>(fail: Fail, usage: string, options: T) {
  let parsed;
  try {
    parsed = parseArgs({ strict: true, allowNegative: true, options: { ...options, help: { type: 'boolean', short: 'h', default: false } } });
  } catch (error) {
    return fail((error as Error).message);
  }
  if ((parsed.values as { help?: boolean }).help) {
    console.log(usage);
    process.exit(0);
  }
  return parsed.values;
}
