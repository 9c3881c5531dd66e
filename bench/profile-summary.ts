// Summarises a V8 .cpuprofile: self time per function (mapped to TypeScript via source maps) and per area.
import { existsSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  function: string;
  /** file:line of the function, in the TypeScript source when a source map says where. */
  location: string;
  selfPercent: number;
  selfMs: number;
}

export interface ProfileSummary {
  /** Relative to the project. */
  file: string;
  /** Which samples were counted: those taken while the measured load ran, or (without a window) all of them. */
  window: 'measured load' | 'whole process';
  sampledMs: number;
  top: ProfileEntry[];
  /** Self time per broker source file, dependency package or runtime part. */
  byArea: { area: string; selfPercent: number }[];
}

/** A window of CLOCK_MONOTONIC time in microseconds, the clock V8 stamps profile samples with on Linux. */
export interface MonotonicWindow {
  startUs: number;
  endUs: number;
}

export function monotonicMicros(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

function locator(root: string) {
  const maps = new Map<string, SourceMap | undefined>();
  const mapOf = (path: string) => {
    if (!maps.has(path)) {
      const file = `${path}.map`;
      maps.set(path, existsSync(file) ? new SourceMap(JSON.parse(readFileSync(file, 'utf8'))) : undefined);
    }
    return maps.get(path);
  };
  return (frame: CallFrame): string => {
    if (!frame.url) return '';
    if (!frame.url.startsWith('file://')) return `${frame.url}:${frame.lineNumber + 1}`;
    const path = fileURLToPath(frame.url);
    const entry = mapOf(path)?.findEntry(frame.lineNumber, frame.columnNumber);
    if (entry && 'originalSource' in entry && entry.originalSource) {
      const source = entry.originalSource.startsWith('file://')
        ? fileURLToPath(entry.originalSource)
        : resolve(dirname(path), entry.originalSource);
      return `${relative(root, source)}:${entry.originalLine + 1}`;
    }
    return `${relative(root, path)}:${frame.lineNumber + 1}`;
  };
}

function areaOf(fn: string, location: string): string {
  if (!location) return fn;
  const file = location.slice(0, location.lastIndexOf(':'));
  const pkg = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  if (pkg) return pkg[1]!;
  if (file.startsWith('node:')) {
    // node:internal/crypto/sig → node:internal/crypto: one area per runtime subsystem.
    const parts = file.split('/');
    return parts.length > 2 ? parts.slice(0, -1).join('/') : file;
  }
  return file;
}

export function summariseProfile(
  file: string,
  root: string,
  window?: MonotonicWindow,
  top = 15,
): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  // Each sample stands for the interval since the previous one (V8's timeDeltas, in microseconds).
  const pick = (inside: (t: number) => boolean) => {
    const picked: { id: number; us: number }[] = [];
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      const us = profile.timeDeltas[i] ?? 0;
      t += us;
      if (inside(t)) picked.push({ id: profile.samples[i]!, us });
    }
    return picked;
  };
  const windowed = window ? pick((t) => t >= window.startUs && t <= window.endUs) : [];
  const inWindow = windowed.length > 0;
  const samples = inWindow ? windowed : pick(() => true);
  const totalUs = samples.reduce((sum, s) => sum + s.us, 0) || 1;

  const where = locator(root);
  const byFunction = new Map<string, { fn: string; location: string; us: number }>();
  const byArea = new Map<string, number>();
  for (const { id, us } of samples) {
    const frame = frames.get(id)!;
    const fn = frame.functionName || '(anonymous)';
    const location = where(frame);
    const key = `${fn}\n${location}`;
    const entry = byFunction.get(key) ?? { fn, location, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
    const area = areaOf(fn, location);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const percent = (us: number) => Math.round((us / totalUs) * 1000) / 10;
  return {
    file: relative(root, file),
    window: inWindow ? 'measured load' : 'whole process',
    sampledMs: Math.round(totalUs / 1000),
    top: [...byFunction.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({
        function: e.fn,
        location: e.location,
        selfPercent: percent(e.us),
        selfMs: Math.round(e.us / 1000),
      })),
    byArea: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([area, us]) => ({ area, selfPercent: percent(us) })),
  };
}
