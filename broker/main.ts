// The composition root: the only broker module that touches process, sockets and signals.
import { fstatSync, statSync } from 'node:fs';
import { createBroker, createDemoTenant } from './broker.js';
import { runCli } from './cli.js';
import { type BrokerConfig, ConfigError } from './config.js';
import { closeConnectionsAfterAnswers, createHttpServer } from './http-server.js';
import { bufferedSink, createLogger } from './logger.js';

const SHUTDOWN_GRACE_MS = 10_000;
/** How long stopping waits for the database to close, and then for the process to end by itself. */
const DATABASE_CLOSE_MS = 5_000;
const EXIT_BACKSTOP_MS = 1_000;
const MAINTENANCE_MS = 10 * 60_000;
/** A signal again within this long is the same one delivered twice (to the process group and passed on). */
const REPEATED_SIGNAL_MS = 500;

/** Why the broker cannot listen, as the configuration error it is (exit 78), naming PORT or HOST. */
function listenError(error: NodeJS.ErrnoException, config: BrokerConfig): Error {
  switch (error.code) {
    case 'EADDRINUSE':
      return new ConfigError('PORT', `port ${config.port} is already in use on ${config.host}`);
    case 'EACCES':
      return new ConfigError(
        'PORT',
        `no permission to listen on port ${config.port} (ports below 1024 need privileges)`,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EADDRNOTAVAIL':
      return new ConfigError(
        'HOST',
        `cannot listen on ${config.host}: ${error.code} (not an address of this machine?)`,
      );
    default:
      return error;
  }
}

async function serve(config: BrokerConfig): Promise<number> {
  const sink = bufferedSink(process.stdout);
  const logger = createLogger(sink, config.logLevel);
  for (const { variable, parameter, didYouMean } of config.unknownSettings) {
    logger.warn('unknown setting ignored', {
      variable,
      ...(parameter ? { parameter } : {}),
      ...(didYouMean ? { did_you_mean: didYouMean } : {}),
    });
  }
  const broker = await createBroker(config, { logger, processMetrics: true });
  if ((await broker.store.tenants.list()).length === 0) {
    const demo = config.demoTenant ? await createDemoTenant(broker, config) : undefined;
    if (demo) {
      // Printed to the terminal once, like a dev server's first-run password — never to the log stream.
      process.stderr.write(
        `\nCreated tenant "${demo.name}" (audience ${demo.audience}) on this empty database.\n` +
          `Its Tenant API key is shown only now:\n\n  ${demo.key}\n\n` +
          `Try: curl -H "Authorization: Bearer ${demo.key}" ${config.publicUrl}/v1/whoami\n\n`,
      );
    } else if (!config.demoTenant) {
      logger.warn('the database has no tenants yet; create one with: oidc-broker tenant create NAME');
    }
  }

  // Fetch the issuers' keys now, so the first exchange does not wait for them (failures are retried later).
  void broker.deps.issuerKeys.warmUp();
  let stopping = false;
  const maintain = () => {
    broker.maintain().catch((error) => {
      // Cut short by stopping, as a purge of a long backlog may be: what is left goes at the next start.
      if (stopping) logger.info('maintenance stopped with the broker');
      else logger.warn('maintenance failed', { error });
    });
  };
  // Once at start too: a broker restarted more often than the interval (deploys, a crash loop) still forgets.
  maintain();
  const upkeep = setInterval(maintain, MAINTENANCE_MS);
  upkeep.unref();

  const server = createHttpServer(broker.app.fetch, {
    hostname: config.host,
    observer: { logger, metrics: broker.deps.metrics },
  });
  server.listen(config.port, config.host);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
  } catch (error) {
    await broker.close();
    throw listenError(error as NodeJS.ErrnoException, config);
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  logger.info('listening', {
    pid: process.pid,
    host: config.host,
    port,
    database: config.database.engine,
    public_url: config.publicUrl,
  });

  return new Promise<number>((resolve) => {
    /** Stops taking connections, lets in-flight requests finish, closes the database, and resolves to `code`. */
    const close = (code: number) => {
      const http = server as unknown as { closeAllConnections(): void; closeIdleConnections(): void };
      const force = setTimeout(() => {
        logger.warn('in-flight requests did not finish in time; closing connections', {
          grace_ms: SHUTDOWN_GRACE_MS,
        });
        http.closeAllConnections();
      }, SHUTDOWN_GRACE_MS);
      // A keep-alive connection whose request finishes after close() would otherwise linger until its timeout.
      const sweep = setInterval(() => http.closeIdleConnections(), 50);
      // close() stops accepting, lets in-flight requests finish, and drops idle keep-alive connections.
      server.close(async () => {
        clearTimeout(force);
        clearInterval(sweep);
        // A database that stopped answering must not keep the process from stopping.
        const closed = await Promise.race([
          broker.close().then(() => true),
          new Promise<boolean>((done) => setTimeout(done, DATABASE_CLOSE_MS, false).unref()),
        ]);
        if (!closed)
          logger.warn('the database did not close in time; stopping without it', {
            timeout_ms: DATABASE_CLOSE_MS,
          });
        logger.info('stopped');
        sink.flush();
        resolve(code);
        // Whatever the database client still holds open (a socket to a silent server) does not delay the exit.
        setTimeout(() => process.exit(code), EXIT_BACKSTOP_MS).unref();
      });
    };
    /** Ends the shutdown delay early, when one is running: a second SIGTERM, or a failed log stream (exit 1). */
    let endDelay: ((why: string, code?: number) => void) | undefined;
    const stop = (signal: string, code = 0, delaySeconds = 0) => {
      if (stopping) return;
      stopping = true;
      clearInterval(upkeep);
      logger.info('shutting down', { signal, ...(delaySeconds > 0 ? { delay_seconds: delaySeconds } : {}) });
      if (delaySeconds === 0) return close(code);
      // A load balancer (Kubernetes' endpoints) learns of the stop only now, alongside the broker, and goes on
      // sending it requests for a few seconds: they are served, while /readyz answers 503 and each connection
      // closes after its answer, until the balancer sends them all elsewhere.
      broker.drain();
      closeConnectionsAfterAnswers(server);
      const delay = setTimeout(() => {
        endDelay = undefined;
        logger.info('shutdown delay over', { delay_seconds: delaySeconds });
        close(code);
      }, delaySeconds * 1000);
      endDelay = (why, endCode = code) => {
        clearTimeout(delay);
        endDelay = undefined;
        logger.info('shutdown delay cut short', { signal: why });
        close(endCode);
      };
    };
    // A SIGTERM during the shutdown delay ends it, and the broker stops as it does without one; one within moments
    // of the first is that same signal twice (sent to the process group and passed on, as a Ctrl-C is below), and
    // any other SIGTERM changes nothing. A Ctrl-C (SIGINT) at a terminal while the broker is already stopping,
    // whether a SIGTERM or an earlier Ctrl-C began it, stops at once. The same Ctrl-C can arrive twice within
    // moments, from the terminal and from npm, which passes it on under `npm start`: that is still the first.
    let terminated = 0;
    process.on('SIGTERM', () => {
      if (!stopping) {
        terminated = Date.now();
        stop('SIGTERM', 0, config.shutdownDelaySeconds);
      } else if (Date.now() - terminated > REPEATED_SIGNAL_MS) {
        endDelay?.('SIGTERM');
      }
    });
    // The log stream failed (its reader exited: `serve | shipper` with the shipper gone). Stopped as for SIGTERM,
    // in-flight requests answered, and exit 1: a supervisor restarts the broker with a log again, where it would
    // otherwise crash on the next line, or serve with no one able to see what it does.
    // Within the shutdown delay, it ends the delay: the broker would serve on unobserved, and exit 0.
    process.stdout.on('error', (error: NodeJS.ErrnoException) => {
      if (stopping && !endDelay) return;
      process.stderr.write(
        `error: standard output, the broker's log, failed (${error.code ?? error.message}); stopping\n`,
      );
      if (endDelay) endDelay('none: the log stream failed', 1);
      else stop('none: the log stream failed', 1);
    });
    let interrupted = 0;
    process.on('SIGINT', () => {
      if (Date.now() - interrupted <= REPEATED_SIGNAL_MS) return;
      if (stopping) {
        logger.warn('stopping at once', { signal: 'SIGINT' });
        // process.exit() does not wait for the turn of the event loop that writes the buffered lines: written now
        // (a file or a pipe with room takes them at once), the log ends saying why it ends.
        sink.flush();
        process.exit(130);
      }
      interrupted = Date.now();
      stop('SIGINT');
    });
  });
}

/**
 * Whether standard output goes nowhere: /dev/null, which is also what Node puts in place of a standard output the
 * process was started without (`>&-`), so the two cannot be told apart.
 */
function stdoutDiscarded(): boolean {
  try {
    const out = fstatSync(1);
    return out.isCharacterDevice() && out.rdev === statSync('/dev/null').rdev;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EBADF';
  }
}

// A command whose reader stops early (`oidc-broker openapi | head`) has done its job, unless what it printed is
// a key shown only once: then the key is lost, and the command fails saying so, as it does when standard output
// fails in any other way (a full disk, an I/O error). Other commands fail on those too, with a message rather than
// a stack trace. The server is left alone: its standard output is the log stream.
const [command, sub] = process.argv.slice(2);
if (command !== undefined && command !== 'serve') {
  const printsKey = command === 'tenant' && (sub === 'create' || sub === 'rotate-key');
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    const closed = error.code === 'EPIPE';
    if (printsKey) {
      const why = closed
        ? 'was closed before the key was written'
        : `did not take the key (${error.message})`;
      process.stderr.write(
        `error: standard output ${why}, so it is lost; \`oidc-broker tenant rotate-key NAME\` gives the tenant a ` +
          'new one\n',
      );
      process.exit(1);
    }
    if (closed) process.exit(process.exitCode ?? 0);
    process.stderr.write(`error: standard output did not take what was written to it (${error.message})\n`);
    process.exit(1);
  });
}

const code = await runCli(process.argv.slice(2), {
  env: process.env,
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  serve,
  discardsOut: stdoutDiscarded,
});
process.exitCode = code;
// Once a command is done, nothing a library still holds open keeps the process: the PostgreSQL client leaves its
// socket open to a server that asked for a password DATABASE_URL does not give, which that server closes only after
// its authentication_timeout (a minute), and a server that never does would keep the process forever.
setTimeout(() => process.exit(code), EXIT_BACKSTOP_MS).unref();
