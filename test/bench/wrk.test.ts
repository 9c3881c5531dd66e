// The bench runs wrk under bash to read its CPU time, and stops it with SIGINT once its tokens are used up.
import { describe, expect, it } from 'vitest';
import { spawnTimed } from '../../bench/wrk.js';

/**
 * A command like wrk: it prints a line, runs until SIGINT, then prints its summary and exits 0. Perl (Debian's
 * perl-base, always installed) exits within a millisecond of the signal, which is what made bash lose the status.
 */
const UNTIL_INTERRUPTED = [
  '-e',
  '$| = 1; $SIG{INT} = sub { print "summary\\n"; exit 0 }; print "running\\n"; sleep 60;',
];

async function interruptOnceRunning() {
  const run = spawnTimed('perl', UNTIL_INTERRUPTED);
  run.onStdout((chunk) => {
    if (chunk.includes('running')) run.interrupt();
  });
  return run.done;
}

describe('a command run by the bench under bash', () => {
  it("reports the command's own exit status and output after an interrupt, however quickly it exits", async () => {
    // Signalled through bash, a command that exited before bash looked again came back as 130 now and then.
    for (let i = 0; i < 300; i++) {
      const run = await interruptOnceRunning();
      expect(run.code, `run ${i + 1}`).toBe(0);
      expect(run.stdout).toBe('running\nsummary\n');
    }
    // 300 runs of bash and perl: about 2 s on an idle machine, far longer on one busy with other tests.
  }, 120_000);

  it('is no error to interrupt a command that has already exited on its own', async () => {
    const run = spawnTimed('perl', ['-e', '$| = 1; print "done\\n"; exit 0;']);
    const exited = run.done;
    let late: unknown;
    run.onStdout(() => {
      // Once bash has reaped it, as when wrk's --duration ends just as its tokens run out.
      setTimeout(() => {
        try {
          run.interrupt();
        } catch (error) {
          late = error;
        }
      }, 200);
    });
    expect((await exited).code).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(late).toBeUndefined();
  });

  it("passes the command's exit status through and reads the CPU time it used", async () => {
    // Busy for 300 ms of its own CPU time, not of wall time: on a loaded machine it gets less than all of it.
    const busy =
      'const used = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e3; }; ' +
      'const end = used() + 300; while (used() < end); process.exit(3);';
    const run = await spawnTimed(process.execPath, ['-e', busy]).done;
    expect(run.code).toBe(3);
    expect(run.cpuSeconds).toBeGreaterThanOrEqual(0.25);
    expect(run.stderr).not.toMatch(/^pid /m);
  });
});
