/**
 * Command lines for people at a wscat prompt (PROTOCOL.md, "Text commands"): a frame
 * that does not start with `{` becomes the fields of the equivalent JSON request.
 * A word may be double-quoted, so a key can hold spaces: put "my key" some value.
 * Inside quotes only \" and \\ are escapes (as in a POSIX shell, any other backslash
 * stays), so a Windows path or a regex needs no doubling.
 */
import { KvError } from '../errors.js';

/**
 * One argument of a command: the request field it fills, and whether it may be left out
 * (then the field takes `fallback`, or is not sent) or must be a number.
 */
interface Arg {
  name: string;
  optional?: boolean;
  fallback?: string;
  number?: boolean;
}

/** Each command's arguments; the last one of `put` takes the rest of the line. */
const COMMANDS: Record<string, { args: Arg[]; restOfLine?: boolean }> = {
  put: { args: [{ name: 'key' }, { name: 'value' }], restOfLine: true },
  get: { args: [{ name: 'key' }] },
  del: { args: [{ name: 'key' }] },
  incr: { args: [{ name: 'key' }, { name: 'by', optional: true, number: true }] },
  list: { args: [{ name: 'prefix', optional: true, fallback: '' }] },
  watch: { args: [{ name: 'prefix', optional: true, fallback: '' }] },
  help: { args: [] },
  lookup: { args: [{ name: 'service' }] },
  resolve: { args: [{ name: 'name' }] },
  status: { args: [] },
};

/** A number as JSON writes one (no hex, no Infinity, nothing empty). */
const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

export const HELP_TEXT = [
  'Commands (one per line; each but help is answered with a JSON reply):',
  '  put KEY VALUE     store VALUE under KEY; VALUE is the rest of the line, as a string',
  '  get KEY           read KEY',
  '  del KEY           delete KEY',
  '  incr KEY [BY]     add BY (1 unless given) to the number under KEY; an absent KEY counts as 0',
  '  list [PREFIX]     the first 100 keys with PREFIX (all keys without it), with values',
  '  watch [PREFIX]    the changes of keys with PREFIX (all keys without it) as they happen,',
  '                    one JSON event a frame; a new watch replaces this connection\'s last one',
  '  help              this text',
  'A KEY with spaces goes in double quotes, where \\" is a quote and \\\\ a backslash:',
  '  put "my key" some value        get "my key"        del "my key"',
  'Any other JSON value, a condition, an expiry, the next page or a request id needs a JSON frame:',
  '  {"id": 1, "op": "put", "key": "k", "value": {"list": [1, "1"]}, "ifVersion": 0, "ttlMs": 60000}',
].join('\n');

export function parseTextCommand(line: string): Record<string, unknown> | KvError {
  const trimmed = line.replace(/[\r\n]+$/, '').trimStart();
  const match = /^(\S+)\s*(.*)$/s.exec(trimmed);
  if (!match) return new KvError('BAD_REQUEST', 'empty command (try "help")');
  const op = match[1]!.toLowerCase();
  const command = COMMANDS[op];
  if (!command) return new KvError('BAD_REQUEST', `unknown command "${match[1]}" (try "help")`);

  const fields: Record<string, unknown> = { op, id: null };
  const usage = `usage: ${[op, ...command.args.map(usageOf)].join(' ')}`;
  let rest = match[2]!;
  for (const [index, arg] of command.args.entries()) {
    const last = index === command.args.length - 1;
    if (last && command.restOfLine) {
      if (rest !== '') fields[arg.name] = rest;
      rest = '';
      break;
    }
    const word = readWord(rest);
    if (word instanceof KvError) return word;
    if (word === undefined) break;
    if (arg.number && !NUMBER.test(word.word)) return new KvError('BAD_REQUEST', `${usage} (${arg.name.toUpperCase()} is a number, not ${JSON.stringify(word.word)})`);
    fields[arg.name] = arg.number ? Number(word.word) : word.word;
    rest = word.rest;
  }
  for (const arg of command.args) {
    if (fields[arg.name] !== undefined) continue;
    if (!arg.optional) return new KvError('BAD_REQUEST', usage);
    if (arg.fallback !== undefined) fields[arg.name] = arg.fallback;
  }
  if (rest.trim() !== '') return new KvError('BAD_REQUEST', `${usage} (unexpected "${rest.trim()}"; a KEY with spaces goes in double quotes)`);
  return fields;
}

function usageOf(arg: Arg): string {
  return arg.optional ? `[${arg.name.toUpperCase()}]` : arg.name.toUpperCase();
}

/**
 * The first word of `text` (a run of non-spaces, or a double-quoted string) and what
 * follows it, blanks skipped; undefined when there is none. A quoted word may be empty
 * (`get ""`): the request's own check then says why an empty key is refused.
 */
function readWord(text: string): { word: string; rest: string } | KvError | undefined {
  if (!text.startsWith('"')) {
    const word = /^(\S+)\s*(.*)$/s.exec(text);
    return word ? { word: word[1]!, rest: word[2]! } : undefined;
  }
  let word = '';
  for (let index = 1; index < text.length; index += 1) {
    const char = text[index]!;
    if (char === '\\' && (text[index + 1] === '"' || text[index + 1] === '\\')) {
      word += text[index + 1];
      index += 1;
    } else if (char === '"') {
      const after = text.slice(index + 1);
      if (after !== '' && !/^\s/.test(after)) {
        return new KvError('BAD_REQUEST', `a space must follow the closing quote of ${JSON.stringify(word)}`);
      }
      return { word, rest: after.trimStart() };
    } else {
      word += char;
    }
  }
  const preview = text.length > 40 ? `${text.slice(0, 40)}...` : text;
  return new KvError('BAD_REQUEST', `unterminated quote: ${preview} needs a closing " (write \\" for a quote inside quotes)`);
}
