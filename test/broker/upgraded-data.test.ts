// Data an earlier version saved, as an upgrade finds it: what worked before the upgrade goes on working after it.
import { afterEach, describe, expect, it } from 'vitest';
import { startTestBroker } from '../support/broker.js';
import { openDriver } from '../support/database.js';
import { type Federation, startFederation } from '../support/federation.js';

let f: Federation;
afterEach(async () => {
  await f?.close();
});

/** Renames policy `id` to `name` filed under its lower-cased name, as a version that compared names so saved it. */
async function fileAsEarlierVersion(id: string, name: string): Promise<void> {
  const raw = openDriver(f.t.db);
  try {
    await raw.run('UPDATE trust_policies SET name = ?, name_key = ? WHERE id = ?', [
      name,
      name.toLowerCase(),
      id,
    ]);
  } finally {
    await raw.close();
  }
}

describe('trust policies an earlier version saved under names that are now one name', () => {
  it('an exchange, a dry run and the workflow snippet naming one as it is written get that one; naming neither, the exchange and the snippet are 409', async () => {
    f = await startFederation();
    await f.policy('STRASSE', {
      claims: { repository: 'acme/infra' },
      permissions: ['harden-runner:read'],
    });
    const older = await f.policy('seed', {
      claims: { repository_owner: 'acme' },
      permissions: ['harden-runner:read', 'audit-log:read'],
    });
    // As a version that compared names by lower-casing saved it, and migration 4 keeps it: filed apart.
    await fileAsEarlierVersion(older, 'Straße');

    const granted = { Straße: 'harden-runner:read, audit-log:read', STRASSE: 'harden-runner:read' };
    for (const [name, permissions] of Object.entries(granted)) {
      const res = await f.exchange(f.issuer.sign({ repository: 'acme/infra' }), { policy: name });
      expect(res.status, name).toBe(200);
      expect(((await res.json()) as { policy: string }).policy).toBe(name);

      const dryRun = await f.t.request('POST', '/v1/oidc/policies/evaluate', {
        key: f.key,
        json: { claims: f.issuer.claims({ repository: 'acme/infra' }), policy: name },
      });
      expect(((await dryRun.json()) as { decision: unknown }).decision).toMatchObject({
        allowed: true,
        policy: name,
      });

      const config = await f.t.request('GET', `/v1/oidc/config?policy=${encodeURIComponent(name)}`, {
        key: f.key,
      });
      expect(((await config.json()) as { workflow: string }).workflow).toContain(
        `permissions: ${permissions}\n`,
      );
    }

    // Written as neither is, the name names both: the refusal says how to name one.
    const res = await f.exchange(f.issuer.sign({ repository: 'acme/infra' }), { policy: 'strasse' });
    expect(res.status).toBe(409);
    const body = (await res.json()) as { detail: string };
    expect(body).toMatchObject({ code: 'ambiguous_policy', policies: ['STRASSE', 'Straße'] });
    expect(body.detail).toBe(
      'trust policies STRASSE, Straße all have the name "strasse", as names are compared ignoring case, accent encoding and invisible characters; name one exactly as it is written',
    );

    // The workflow snippet for that name would be refused so: it is refused alike, not tailored to either one, by
    // the upgraded broker that starts on the database an earlier version left.
    const upgraded = await startTestBroker({ db: f.t.db });
    try {
      const config = await upgraded.request('GET', '/v1/oidc/config?policy=strasse', { key: f.key });
      expect(config.status).toBe(409);
      expect(await config.json()).toMatchObject({
        code: 'ambiguous_policy',
        policies: ['STRASSE', 'Straße'],
        detail: body.detail,
      });
    } finally {
      await upgraded.close();
    }
  });
});

describe('namesakes an upgrade kept, looked up by name', () => {
  it('GET /v1/oidc/policies?name= lists the one written so, and both for a name written as neither is, as the exchange reads it', async () => {
    f = await startFederation();
    await f.policy('STRASSE', { claims: { repository: 'acme/infra' }, permissions: ['harden-runner:read'] });
    const older = await f.policy('seed', {
      claims: { repository: 'acme/infra' },
      permissions: ['harden-runner:read'],
    });
    await fileAsEarlierVersion(older, 'Straße');
    // The upgraded broker starts on the database an earlier version left.
    const upgraded = await startTestBroker({ db: f.t.db });
    try {
      for (const [name, listed] of [
        ['Straße', ['Straße']],
        ['STRASSE', ['STRASSE']],
        ['strasse', ['STRASSE', 'Straße']],
        ['STRAßE', ['STRASSE', 'Straße']],
      ] as const) {
        const page = await upgraded.request('GET', `/v1/oidc/policies?name=${encodeURIComponent(name)}`, {
          key: f.key,
        });
        const { policies } = (await page.json()) as { policies: { name: string }[] };
        expect(policies.map((p) => p.name).sort(), name).toEqual([...listed].sort());
      }
    } finally {
      await upgraded.close();
    }
  });
});

describe('names an earlier version saved with invisible characters, which now leave them out', () => {
  it('a lone one is found by the name it shows; one beside its visible namesake stays, each got as it is written', async () => {
    f = await startFederation();
    const pasted = await f.policy('seed-1', { claims: { repository: 'acme/infra' } });
    await fileAsEarlierVersion(pasted, 'Rollout\u200b');
    await f.policy('Deploy', { claims: { repository: 'acme/infra' }, permissions: ['harden-runner:read'] });
    const twin = await f.policy('seed-2', { claims: { repository: 'acme/infra' } });
    await fileAsEarlierVersion(twin, 'Deploy\u2060');
    // An upgraded broker starts on the database an earlier version left, and files the names anew.
    await (await startTestBroker({ db: f.t.db })).close();
    const exchange = (policy: string) => f.exchange(f.issuer.sign({ repository: 'acme/infra' }), { policy });
    for (const [asked, got] of [
      ['rollout', 'Rollout\u200b'],
      ['Deploy', 'Deploy'],
      ['Deploy\u2060', 'Deploy\u2060'],
    ]) {
      const res = await exchange(asked!);
      expect(res.status, `${asked} ${await res.clone().text()}`).toBe(200);
      expect(((await res.json()) as { policy: string }).policy).toBe(got);
    }
    const res = await exchange('deploy');
    expect(await res.json()).toMatchObject({
      code: 'ambiguous_policy',
      policies: ['Deploy', 'Deploy\u2060'],
    });
  });
});
