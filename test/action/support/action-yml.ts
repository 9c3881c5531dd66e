// Reads action.yml's inputs, outputs and runs section (the file keeps a simple, regular layout).
import { readFile } from 'node:fs/promises';

export interface ActionMetadata {
  inputs: Record<string, { required: boolean; default?: string; description: string }>;
  outputs: string[];
  runs: Record<string, string>;
}

export async function readActionYml(path: string): Promise<ActionMetadata> {
  const yml = await readFile(path, 'utf8');
  const section = (name: string) => {
    const start = yml.indexOf(`\n${name}:\n`);
    const rest = yml.slice(start + name.length + 3);
    const end = rest.search(/\n\S/);
    return end === -1 ? rest : rest.slice(0, end);
  };
  const inputs: ActionMetadata['inputs'] = {};
  let current: { required: boolean; default?: string; description: string } | undefined;
  for (const line of section('inputs').split('\n')) {
    const name = /^ {2}([a-z-]+):$/.exec(line);
    if (name) {
      current = { required: false, description: '' };
      inputs[name[1]!] = current;
      continue;
    }
    const field = /^ {4}(required|default|description): ?(.*)$/.exec(line);
    if (current && field) {
      const value = field[2]!.replace(/^(['"])(.*)\1$/, '$2');
      if (field[1] === 'required') current.required = value === 'true';
      else if (field[1] === 'default') current.default = value;
      else current.description = value;
    } else if (current && /^ {6}\S/.test(line)) {
      current.description += ` ${line.trim()}`;
    }
  }
  const outputs = [...section('outputs').matchAll(/^ {2}([a-z-]+):$/gm)].map((m) => m[1]!);
  const runs = Object.fromEntries(
    [...section('runs').matchAll(/^ {2}([a-z-]+): (.+)$/gm)].map((m) => [m[1]!, m[2]!]),
  );
  return { inputs, outputs, runs };
}
