// What each operation accepts as its body, read from the OpenAPI registry, so a 415 names what to send instead.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Env } from 'hono';

/** `method routePath` (Hono's `/:id` form) → the request body's media types, in the order the route declares. */
export function bodyMediaTypes<E extends Env>(
  app: OpenAPIHono<E>,
): (method: string, routePath: string) => string[] {
  let byRoute: Map<string, string[]> | undefined;
  return (method, routePath) => {
    byRoute ??= new Map(
      app.openAPIRegistry.definitions.flatMap((definition) => {
        if (definition.type !== 'route') return [];
        const content = definition.route.request?.body?.content;
        if (!content) return [];
        const path = definition.route.path.replaceAll(/\/{(.+?)}/g, '/:$1');
        return [[`${definition.route.method.toUpperCase()} ${path}`, Object.keys(content)]];
      }),
    );
    return byRoute.get(`${method} ${routePath}`) ?? [];
  };
}
