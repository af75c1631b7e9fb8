/**
 * Command lines for people at a wscat prompt (PROTOCOL.md, "Text commands"): a frame
 * that does not start with `{` becomes the fields of the equivalent JSON request.
 */
import { KvError } from '../errors.js';

/** Each command's arguments; the last one of `put` takes the rest of the line. */
const COMMANDS: Record<string, { args: string[]; restOfLine?: boolean }> = {
  put: { args: ['key', 'value'], restOfLine: true },
  get: { args: ['key'] },
  del: { args: ['key'] },
  help: { args: [] },
  lookup: { args: ['service'] },
  resolve: { args: ['name'] },
  status: { args: [] },
};

export const HELP_TEXT = [
  'put KEY VALUE   store VALUE (the rest of the line, as a string) under KEY',
  'get KEY         read KEY',
  'del KEY         delete KEY',
  'help            this text',
  'JSON frames: {"id": 1, "op": "put", "key": "k", "value": <any JSON but null>}',
].join('\n');

export function parseTextCommand(line: string): Record<string, unknown> | KvError {
  const trimmed = line.replace(/[\r\n]+$/, '').trimStart();
  const match = /^(\S+)\s*(.*)$/s.exec(trimmed);
  if (!match) return new KvError('BAD_REQUEST', 'empty command (try "help")');
  const op = match[1]!.toLowerCase();
  const command = COMMANDS[op];
  if (!command) return new KvError('BAD_REQUEST', `unknown command "${match[1]}" (try "help")`);

  const fields: Record<string, unknown> = { op, id: null };
  let rest = match[2]!;
  for (const [index, name] of command.args.entries()) {
    const last = index === command.args.length - 1;
    if (last && command.restOfLine) {
      fields[name] = rest;
      rest = '';
    } else {
      const word = /^(\S+)\s*(.*)$/s.exec(rest);
      if (!word) break;
      fields[name] = word[1];
      rest = word[2]!;
    }
    if (fields[name] === '') delete fields[name];
  }
  const usage = `usage: ${[op, ...command.args.map((a) => a.toUpperCase())].join(' ')}`;
  if (command.args.some((name) => fields[name] === undefined)) return new KvError('BAD_REQUEST', usage);
  if (rest.trim() !== '') return new KvError('BAD_REQUEST', `${usage} (unexpected "${rest.trim()}")`);
  return fields;
}
