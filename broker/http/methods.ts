// 405 instead of 404 when the path exists under other methods, with the Allow header listing them.
import type { Env, Hono } from 'hono';
import { BrokerError } from '../errors.js';

interface Pattern {
  /** The route's path as registered (`/v1/policies/:id`). */
  path: string;
  regex: RegExp;
  method: string;
  /** Whether the path has a parameter (`:id`), which a literal segment of another route outranks. */
  parameterised: boolean;
}

const compiled = new WeakMap<object, Pattern[]>();
const refused = new WeakMap<object, Set<string>>();

function patternsOf<E extends Env>(app: Hono<E>): Pattern[] {
  let patterns = compiled.get(app);
  if (!patterns) {
    const skip = refused.get(app) ?? new Set<string>();
    patterns = app.routes
      .filter((r) => r.method !== 'ALL' && !r.path.includes('*') && !skip.has(`${r.method} ${r.path}`))
      .map((r) => ({
        path: r.path,
        method: r.method,
        parameterised: r.path.includes('/:'),
        regex: new RegExp(
          // Exactly as the router matches: a trailing slash is another path, which no route serves.
          `^${r.path.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\/:[^/]+/g, '/[^/]+')}$`,
        ),
      }));
    compiled.set(app, patterns);
  }
  return patterns;
}

/** The routes that serve `path` under some method. */
function owners<E extends Env>(app: Hono<E>, path: string): Pattern[] {
  const matching = patternsOf(app).filter((p) => p.regex.test(path));
  // A route that names the path literally owns it (/v1/oidc/policies/evaluate is no policy id).
  const literal = matching.filter((p) => !p.parameterised);
  return literal.length > 0 ? literal : matching;
}

export function allowedMethods<E extends Env>(app: Hono<E>, path: string): string[] {
  const methods = new Set(owners(app, path).map((p) => p.method));
  if (methods.has('GET')) methods.add('HEAD');
  return [...methods].sort();
}

/** The route pattern that serves `path` under other methods (a 405's), as metrics and the log name it. */
export function routeOfPath<E extends Env>(app: Hono<E>, path: string): string | undefined {
  return owners(app, path)[0]?.path;
}

/** Answers `methods` on `path` with a 405 that says why (e.g. keys are immutable); Allow lists the others. */
export function refuseMethods<E extends Env>(
  app: Hono<E>,
  methods: string[],
  path: string,
  detail: string,
): void {
  const set = refused.get(app) ?? new Set<string>();
  for (const m of methods) set.add(`${m} ${path}`);
  refused.set(app, set);
  app.on(methods, path, (c) => {
    throw new BrokerError('method_not_allowed', detail, {
      headers: { Allow: allowedMethods(app, c.req.path).join(', ') },
    });
  });
}
