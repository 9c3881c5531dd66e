// Turns every way the action can fail into one message that says what happened and what to do about it.
import type { BrokerFailure } from './broker-client.js';
import { attempts, type BrokerCall, code, explainProblem } from './explain-problem.js';
import type { IdTokenFailureDetails } from './id-token.js';
import type { ActionInputs } from './inputs.js';

/** A paragraph, a bulleted list, or a YAML snippet to paste into the workflow. */
export type Block = string | { list: string[] } | { yaml: string };

export interface Explanation {
  title: string;
  body: Block[];
}

export interface RetryInfo {
  attempts?: number;
  gaveUp?: 'attempts' | 'deadline';
  retryAfterMs?: number;
}

export type Failure =
  | { kind: 'inputs'; errors: string[] }
  | { kind: 'no-id-token' }
  /** `timedOut`: the token service did not answer within the attempt's time limit. */
  | ({ kind: 'id-token'; message: string; timedOut?: boolean } & IdTokenFailureDetails & RetryInfo)
  | (BrokerFailure & RetryInfo);

export { code };

const NOTHING_SENT =
  'Nothing was sent to the broker. Re-run the job; if it keeps happening, check https://www.githubstatus.com.';

/** What to do about a certificate from a CA the runner does not trust, wherever the action met it. */
const TRUST_THE_CA = 'make the CA trusted on the runner, e.g. by setting NODE_EXTRA_CA_CERTS to the CA file.';

export function explain(failure: Failure, inputs?: ActionInputs, call: BrokerCall = 'exchange'): Explanation {
  switch (failure.kind) {
    case 'inputs':
      return {
        title: 'The inputs of this step are invalid; nothing was sent to the broker.',
        body: [{ list: failure.errors }],
      };
    case 'no-id-token':
      return {
        title: 'This job cannot request a GitHub OIDC token: ACTIONS_ID_TOKEN_REQUEST_URL is not set.',
        body: [
          'Allow the job to request one by adding this to the job (or the workflow):',
          { yaml: 'permissions:\n  id-token: write\n  contents: read' },
          '`permissions:` replaces the default permissions, so list every other one the job needs as well ' +
            '(`contents: read` lets it check out the repository). In a reusable workflow, the job that calls it ' +
            '(`uses: ./.github/workflows/…`) must grant `id-token: write` too: a called workflow cannot have a ' +
            'permission its caller does not.',
          'Pull requests from forks never get an OIDC token, even with this permission: run this step only for ' +
            'pushes, pull requests from the same repository, or other trusted events. Runs that Dependabot triggers ' +
            'start with read-only permissions: they get one only when the workflow grants `id-token: write` itself, ' +
            'as above.',
        ],
      };
    case 'id-token':
      if (failure.tlsCode) {
        return {
          title: `The TLS connection to GitHub's OIDC token service failed: ${failure.tlsCode}.`,
          body: [
            `${oneLine(failure.message)}. The runner could not make a verified TLS connection to its token ` +
              'service (ACTIONS_ID_TOKEN_REQUEST_URL), and a retry would fail the same way.',
            "GitHub's certificates are publicly trusted, so this one usually comes from a proxy or firewall that " +
              "inspects TLS on a self-hosted runner's network, or from a GitHub Enterprise Server's own CA. If so, " +
              TRUST_THE_CA,
            'Nothing was sent to the broker.',
          ],
        };
      }
      if (failure.timedOut) {
        return {
          title: oneLine(failure.message),
          body: [
            "It usually answers in well under a second, so GitHub's service or the network between this runner " +
              'and it is in trouble; a self-hosted runner may also need HTTPS_PROXY or NO_PROXY set for it. ' +
              `${retried(failure)}${NOTHING_SENT}`,
          ],
        };
      }
      return {
        title: 'GitHub did not issue an OIDC token for this job.',
        body: [
          `The runner's token service answered: ${code(excerpt(oneLine(failure.message)))}`,
          // The job has id-token: write: without it the runner would not offer the service at all.
          `${failure.retryable ? 'The service or the network to it is in trouble (on a self-hosted runner, check HTTPS_PROXY and NO_PROXY). ' : ''}${retried(failure)}${NOTHING_SENT}`,
        ],
      };
    case 'proxy':
      return {
        title: `The proxy setting ${failure.variable} cannot be used, so nothing was sent.`,
        body: [
          failure.message,
          "The runner's environment sets it (https_proxy, http_proxy and no_proxy, or the same in upper case; " +
            "on a self-hosted runner, usually in the runner's .env file or the job's `env:`). Set it to the " +
            "proxy's URL, or unset it where the runner connects directly.",
        ],
      };
    case 'tunnel':
      return tunnel(failure);
    case 'proxy-unreachable':
      return proxyUnreachable(failure);
    case 'network':
      return network(failure);
    case 'unexpected':
      return unexpected(failure, call, inputs);
    case 'problem':
      return explainProblem(failure, inputs, call);
  }
}

function tunnel(f: Extract<Failure, { kind: 'tunnel' }>): Explanation {
  const host = f.target.slice(0, f.target.lastIndexOf(':'));
  // How credentials go into the setting; the proxy's own address, and never the credentials it holds.
  const example = f.proxy.replace('//', '//user:p%40ss@');
  if (f.status >= 500) {
    return {
      title: `The proxy ${f.proxy} (${f.variable}) could not open a tunnel to ${f.target}: HTTP ${f.status}.`,
      body: [
        `${attempts(f)} The proxy could not reach ${code(host)} itself: check that it is up and that the proxy's ` +
          "network reaches it. If it keeps happening, tell the proxy's administrator.",
      ],
    };
  }
  const what: Record<number, string> = {
    407: f.withCredentials
      ? `The proxy did not accept the user name and password that ${f.variable} holds. Correct them in its URL, ` +
        `percent-encoded, e.g. ${example}.`
      : `The proxy asks for credentials, and ${f.variable} holds none. Add them to its URL, percent-encoded, e.g. ` +
        `${example}.`,
    403:
      `The proxy does not let this runner reach ${code(host)}. Ask the proxy's administrator to add it to the ` +
      `proxy's allow-list, or, if the runner can reach it without the proxy, add it to NO_PROXY.`,
  };
  return {
    title: `The proxy ${f.proxy} (${f.variable}) refused a tunnel to ${f.target}: HTTP ${f.status}.`,
    body: [
      what[f.status] ??
        `Check that ${f.variable} names the right proxy, and that the proxy's rules let this runner reach ` +
          `${code(host)}.`,
      `Nothing reached ${f.target}, and the action did not try again: the proxy would refuse the same way. ` +
        "The runner's environment sets the proxy (on a self-hosted runner, usually in the runner's .env file, " +
        "or in the job's `env:`).",
    ],
  };
}

function proxyUnreachable(f: Extract<Failure, { kind: 'proxy-unreachable' }>): Explanation {
  const host = f.target.slice(0, f.target.lastIndexOf(':'));
  return {
    title: `Could not reach the proxy ${f.proxy} (${f.variable}) to open a tunnel to ${f.target}: ${f.code ?? f.message}.`,
    body: [
      `${f.code ? `${f.message}. ` : ''}${attempts(f)}`,
      `Nothing reached ${code(host)}. Check that ${f.variable} names this runner's proxy and that the proxy is up; ` +
        `if the runner can reach ${code(host)} without it, add that host to NO_PROXY. The runner's environment ` +
        "sets the proxy (on a self-hosted runner, usually in the runner's .env file, or in the job's `env:`).",
      ...(f.tls ? [`If the proxy's certificate comes from a private CA, ${TRUST_THE_CA}`] : []),
    ],
  };
}

function network(f: Extract<Failure, { kind: 'network' }>): Explanation {
  const tried = attempts(f);
  if (f.tls) {
    return {
      title: `The TLS connection to ${f.url} failed: ${f.code}.`,
      body: [
        `${f.message}. ${tried}`,
        `Check that \`api-url\` is the broker's address. If its certificate comes from a private CA, ${TRUST_THE_CA}`,
      ],
    };
  }
  return {
    title: f.timedOut
      ? `The broker at ${f.url} did not answer in time.`
      : `Could not reach the broker at ${f.url}: ${f.code ?? f.message}.`,
    body: [
      `${f.code ? `${f.message}. ` : ''}${tried}`,
      'Check `api-url`, and that the broker is up and reachable from this runner (DNS, firewalls, proxies).',
    ],
  };
}

function unexpected(
  f: Extract<Failure, { kind: 'unexpected' }>,
  call: BrokerCall,
  inputs?: ActionInputs,
): Explanation {
  const title = `Unexpected answer from ${f.url}: HTTP ${f.status} with content type ${code(f.contentType)}.`;
  const notShown = 'Its body is not shown, as it could contain a credential.';
  if (f.status >= 300 && f.status < 400) {
    return {
      title,
      body: [
        `It redirects${f.location ? ` to ${code(f.location)}` : ''}, which this action does not follow because the ` +
          "request carries a credential. Set `api-url` to the broker's base URL exactly, e.g. " +
          '`https://agent.api.stepsecurity.io/v1`.',
      ],
    };
  }
  if (f.status >= 500) {
    // The broker answers its own 5xx as problem+json: an error page is a gateway's, in front of the broker.
    return {
      title,
      body: [
        `${notShown} ${attempts(f)}`,
        'A load balancer or reverse proxy in front of the broker answers like this when the broker behind it is ' +
          'down or cannot be reached from it. ' +
          (call === 'exchange' ? 'Re-run the job later; if' : 'If') +
          " it keeps happening, tell the broker's operator. Should `api-url` not be the broker's base URL " +
          '(ending in `/v1`), correct it.',
      ],
    };
  }
  const tried = f.status === 408 || f.status === 429 ? ` ${attempts(f)}` : '';
  return {
    title,
    body: [
      `${notShown}${tried}`,
      "This is not an answer of the token broker: check that `api-url` is the broker's base URL (ending in " +
        '`/v1`). A proxy or load balancer in front of the broker can also answer like this.',
      ...(f.issuedToken === undefined
        ? []
        : [
            inputs?.revoke === false
              ? 'It carried an access token all the same, masked here, which is not revoked (`revoke: false`): ' +
                'it stays valid until it expires.'
              : 'It carried an access token all the same, masked here: the post step revokes it when the job ends.',
          ]),
    ],
  };
}

/**
 * A failure the action did not expect (an exception, not an answer): most often a file the runner gave the step
 * that is gone, else a bug. `token`: the main step had a token from the broker, and whether post will revoke it.
 */
export function explainCrash(error: unknown, token?: { expiresAt: string; saved: boolean }): Explanation {
  const message = oneLine(error instanceof Error ? error.message : String(error));
  const body: Block[] = [
    /^Missing file at path: /.test(message)
      ? 'The runner creates that file (GITHUB_OUTPUT, GITHUB_STATE or GITHUB_ENV, under RUNNER_TEMP) before the ' +
        'step starts; it is gone, usually because an earlier step of the job deleted it (e.g. by emptying ' +
        'RUNNER_TEMP). Let such a step leave `_runner_file_commands` in RUNNER_TEMP alone, then re-run the job.'
      : 'Re-run the job; if it happens again, report it with this message.',
  ];
  if (token) {
    body.push(
      token.saved
        ? `The broker had issued a token (valid until ${token.expiresAt}); the post step revokes it when the job ends.`
        : `The broker had issued a token, which is not revoked when the job ends: it stays valid until ${token.expiresAt}.`,
    );
  }
  return { title: `oidc-auth failed unexpectedly: ${message}`, body };
}

/** How often a failure that a retry could have got past was tried, or nothing for one that was final at once. */
function retried(f: RetryInfo): string {
  return f.gaveUp ? `${attempts(f)} ` : '';
}

/** The start of a long text: an error page's is enough to tell what answered. */
function excerpt(text: string, max = 300): string {
  const chars = Array.from(text);
  return chars.length > max ? `${chars.slice(0, max).join('')}…` : text;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** The plain-text form, for the step's error annotation and log. */
export function formatExplanation(e: Explanation): string {
  const blocks = e.body.map((block) => {
    if (typeof block === 'string') return block;
    if ('list' in block) return block.list.map((item) => `  - ${item}`).join('\n');
    return block.yaml
      .split('\n')
      .map((line) => `    ${line}`)
      .join('\n');
  });
  return [e.title, ...blocks].join('\n');
}
