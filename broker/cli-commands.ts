// The operator CLI's command table: which command a command line names, and the usage text, from one entry each.
import { nearestWord } from './core/edit-distance.js';

/** A command line that names no command, or gives one arguments it does not take: exit 2, with the usage. */
export class UsageError extends Error {}

export interface Command<Io> {
  /** Its words: one, or a group and a subcommand (`tenant create`). */
  name: string;
  /** The arguments it takes, as the usage shows them; without them it refuses any. */
  args?: string;
  /** What it does, one line in the source; the usage wraps it. */
  help: string;
  /** Runs when no command is given. */
  isDefault?: true;
  /** Runs it with the arguments after its name. */
  run(io: Io, args: string[]): Promise<number>;
}

/** Where each command's help starts, and how wide it runs from there. */
const HELP_COLUMN = 42;
const HELP_WIDTH = 63;

/** The help wrapped at HELP_WIDTH into lines. */
function wrap(text: string): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last]!.length + 1 + word.length <= HELP_WIDTH) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines;
}

/** The usage text: each command with its arguments, and its help beside it, or below when they are too long. */
export function usage(commands: readonly Command<unknown>[]): string {
  const entries = commands.map((command) => {
    const synopsis = `  ${[command.name, command.args].filter(Boolean).join(' ')}`;
    const [first, ...rest] = wrap(command.help).map((line) => `${' '.repeat(HELP_COLUMN)}${line}`);
    const lines =
      synopsis.length < HELP_COLUMN
        ? [`${synopsis.padEnd(HELP_COLUMN)}${first!.trimStart()}`, ...rest]
        : [synopsis, first!, ...rest];
    return lines.join('\n');
  });
  const fallback = commands.find((c) => c.isDefault);
  const synopsis = fallback ? '[<command>]' : '<command>';
  const note = fallback ? `\nWith no command, ${fallback.name} runs.\n` : '';
  return `usage: oidc-broker ${synopsis}\n\ncommands:\n${entries.join('\n')}\n${note}`;
}

/** The command `argv` starts with, and the arguments after its name. */
export function commandOf<Io>(
  commands: readonly Command<Io>[],
  argv: string[],
): { command: Command<Io>; args: string[] } | undefined {
  if (argv.length === 0) {
    const command = commands.find((c) => c.isDefault);
    return command && { command, args: [] };
  }
  for (const command of commands) {
    const words = command.name.split(' ');
    if (words.every((word, i) => argv[i] === word)) return { command, args: argv.slice(words.length) };
  }
  return undefined;
}

/** The subcommands of `group`, none when it is a command of one word or no command. */
function subcommandsOf(commands: readonly Command<unknown>[], group: string | undefined): string[] {
  return commands
    .map((c) => c.name.split(' '))
    .filter((words) => words.length === 2 && words[0] === group)
    .map((words) => words[1]!);
}

/**
 * The command `argv` probably misspells (`tenat list`): each of its words the command's, or at most two edits from
 * it and nearer than any other. A group given without its subcommand is offered alone.
 */
function meantCommand(commands: readonly Command<unknown>[], [first, second]: string[]): string | undefined {
  const groups = [...new Set(commands.map((c) => c.name.split(' ')[0]!))];
  const group = groups.includes(first!) ? first : nearestWord(first!, groups);
  const subcommands = subcommandsOf(commands, group);
  if (group === undefined || subcommands.length === 0 || second === undefined) return group;
  const sub = subcommands.includes(second) ? second : nearestWord(second, subcommands);
  return sub && `${group} ${sub}`;
}

/** Why `argv` names no command: a group without a subcommand, or one it does not take, is named as such. */
export function notACommand(commands: readonly Command<unknown>[], argv: string[]): UsageError {
  const [group, sub] = argv;
  const subcommands = subcommandsOf(commands, group);
  const meant = meantCommand(commands, argv);
  const didYouMean = meant ? `; did you mean "${meant}"?` : '';
  if (subcommands.length === 0) return new UsageError(`unknown command "${argv.join(' ')}"${didYouMean}`);
  const list = subcommands.join(', ').replace(/, ([^,]+)$/, ' or $1');
  return new UsageError(
    sub === undefined
      ? `"${group}" needs a subcommand: ${list}`
      : `"${group} ${sub}" is not a command; "${group}" takes ${list}${didYouMean}`,
  );
}
