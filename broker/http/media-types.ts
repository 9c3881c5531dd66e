// Request bodies' media types in the OpenAPI registry: what a 415 names, and how a body taken in several is documented.
import type { OpenAPIHono, RouteConfig } from '@hono/zod-openapi';
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

/**
 * For a route whose body comes in one of several media types (JSON or a form): Hono's validators run only for the
 * type a request has when the body is marked optional, so the route is served so and its handler refuses a request
 * without one. This enters it in the document as the handler serves it, with the body required, and returns the
 * route to serve, left out of the document.
 */
export function bodyRequiredInDocument<E extends Env, R extends RouteConfig>(
  app: OpenAPIHono<E>,
  route: R,
): R & { hide: true } {
  const { middleware: _middleware, hide: _hide, ...documented } = route;
  const body = documented.request?.body;
  if (!body) throw new Error(`${route.method.toUpperCase()} ${route.path} takes no body`);
  app.openAPIRegistry.registerPath({
    ...documented,
    request: { ...documented.request, body: { ...body, required: true } },
  });
  return { ...route, hide: true };
}
