// The README's lists of the broker's settings, error codes and commands are the code's, and its links land.
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../broker/cli.js';
import { loadConfig } from '../../broker/config.js';
import { ERROR_TABLE } from '../../broker/errors.js';

const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');

/** The README's text from the heading `heading` to the next heading of the same or a higher level. */
function section(heading: string): string {
  const start = readme.indexOf(`\n${heading}\n`);
  expect(start, `the README has a heading ${heading}`).toBeGreaterThan(-1);
  const level = heading.indexOf(' ');
  const next = readme.slice(start + heading.length + 2).search(new RegExp(`\\n#{1,${level}} `));
  return next === -1 ? readme.slice(start) : readme.slice(start, start + heading.length + 2 + next);
}

/** The rows of the first table in `text`, as cells with their backticks kept. */
function tableRows(text: string): string[][] {
  const lines = text.split('\n');
  const first = lines.findIndex((line) => line.startsWith('|'));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .split(/(?<!\\)\|/)
        .slice(1, -1)
        .map((cell) => cell.trim()),
    );
  }
  return rows;
}

const codes = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

/** Every variable loadConfig reads from `env`, for each engine's configuration. */
function settingsRead(): string[] {
  const read = new Set<string>();
  const postgres = {
    DATABASE_URL: 'postgres://broker@db.test/oidc',
    BROKER_KEY_ENCRYPTION_KEY: 'a'.repeat(64),
  };
  for (const given of [{}, postgres] as Record<string, string>[]) {
    const env = new Proxy(given, {
      get: (target, name) => {
        if (typeof name === 'string') read.add(name);
        return target[name as string];
      },
    });
    loadConfig(env);
  }
  return [...read];
}

describe('README, Configuration', () => {
  it('lists exactly the settings the broker reads', () => {
    const documented = tableRows(section('### Configuration')).flatMap(([variable]) => codes(variable!));
    expect(documented.sort()).toEqual(settingsRead().sort());
  });
});

describe('README, Error codes', () => {
  it("lists exactly the broker's error codes, each with its status", () => {
    const documented = tableRows(section('### Error codes')).flatMap(([status, code]) =>
      codes(code!).map((name) => [name, Number(status)] as const),
    );
    expect(new Map(documented)).toEqual(
      new Map(Object.entries(ERROR_TABLE).map(([name, { status }]) => [name, status])),
    );
    expect(documented).toHaveLength(Object.keys(ERROR_TABLE).length);
  });
});

describe('README, the oidc-broker command', () => {
  it('shows every command of `oidc-broker help`, each with its options, and no other', async () => {
    let usage = '';
    const code = await runCli(['help'], {
      env: {},
      out: (text) => {
        usage += text;
      },
      err: () => {},
      serve: async () => 0,
    });
    expect(code).toBe(0);
    // A command's line: two spaces, its words, then its arguments or, after more spaces, what it does.
    const commands = usage
      .split('\n')
      .map((line) => /^ {2}([a-z][a-z-]*(?: [a-z][a-z-]*)?)(?: (.*?))?(?: {2,}|$)/.exec(line))
      .filter((match) => match !== null)
      .map((match) => ({ name: match[1]!, flags: match[2]?.match(/--[a-z-]+/g) ?? [] }));
    expect(commands.map((c) => c.name)).toContain('tenant create');

    const block = /```sh\n([\s\S]*?)```/.exec(section('### The `oidc-broker` command'))![1]!;
    const shown = block
      .split('\n')
      .filter((line) => line.startsWith('npx oidc-broker '))
      .map((line) => line.slice('npx oidc-broker '.length).replace(/\s+#.*$/, ''));
    for (const line of shown) {
      expect(
        commands.some((c) => line === c.name || line.startsWith(`${c.name} `)),
        `the README shows a command oidc-broker does not have: ${line}`,
      ).toBe(true);
    }
    for (const command of commands) {
      const lines = shown.filter((line) => line === command.name || line.startsWith(`${command.name} `));
      expect(lines, `the README does not show oidc-broker ${command.name}`).not.toEqual([]);
      for (const flag of command.flags) {
        expect(
          lines.some((line) => line.includes(flag)),
          `the README does not show oidc-broker ${command.name} ${flag}`,
        ).toBe(true);
      }
    }
  });
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const found = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6} (.+)$/.exec(line);
    if (!heading) continue;
    const slug = heading[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    found.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return found;
}

describe('README links', () => {
  it('lands every link to a heading of the README on one', () => {
    const targets = anchors(readme);
    const links = [...readme.matchAll(/\]\(#([^)\s]+)\)/g)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(10);
    expect(links.filter((link) => !targets.has(link))).toEqual([]);
  });
});

describe("README's curl examples", () => {
  it('declare Content-Type: application/json wherever they send a JSON body', () => {
    const commands = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)]
      .flatMap((block) => block[1]!.replace(/\\\n\s*/g, ' ').split('\n'))
      .filter((line) => /^\s*(\S+=\$\()?curl /.test(line));
    const sendingJson = commands.filter((line) => / -d '\{/.test(line));
    expect(sendingJson.length).toBeGreaterThan(2);
    for (const line of sendingJson) {
      // curl -d alone declares a form, which the exchange, introspection and revocation would read as one.
      expect(line, line).toContain("-H 'Content-Type: application/json'");
    }
  });
});
