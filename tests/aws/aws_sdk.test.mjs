// Devices written for AWS IoT, unchanged: the real aws-iot-device-sdk 2.2.16 (v1, its thingShadow
// class) against the real doppeld with --device-auth x509, over mutual TLS with certificates that
// doppeld issued through its API. Every wait is bounded and detects a hang; none is a speed test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { Doppeld, eventually, sleep } from '../console/harness.mjs';

const require = createRequire(import.meta.url);
const awsIot = require('aws-iot-device-sdk');

let gw;
let brokerCa;  // the CA that signed the broker's own TLS certificate (devices verify the broker)

// A throwaway CA and a broker certificate for 127.0.0.1, made with openssl.
function brokerCertificate(dir) {
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'broker-ca.key', '-out',
    'broker-ca.pem', '-days', '1', '-subj', '/CN=doppel-test-broker-ca']);
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'broker.key', '-out', 'broker.csr',
    '-subj', '/CN=127.0.0.1']);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run(['x509', '-req', '-in', 'broker.csr', '-CA', 'broker-ca.pem', '-CAkey', 'broker-ca.key',
    '-CAcreateserial', '-out', 'broker.pem', '-days', '1', '-extfile', 'san.ext']);
  return { cert: join(dir, 'broker.pem'), key: join(dir, 'broker.key'), ca: join(dir, 'broker-ca.pem') };
}

const serials = new Map();  // the serial of each thing's newest certificate

// PUT /v1/twins/{id} {"certificate": true}: the device's key and certificate, written to files.
async function provision(id) {
  const r = await gw.api(`/v1/twins/${id}`, { method: 'PUT', body: { certificate: true } });
  assert.ok(r.status === 201 || r.status === 200, JSON.stringify(r.body));
  const c = r.body.certificate;
  assert.match(c.certificate_pem, /BEGIN CERTIFICATE/);
  assert.match(c.private_key_pem, /PRIVATE KEY/);
  const files = { certPath: join(gw.dir, `${id}.pem`), keyPath: join(gw.dir, `${id}.key`) };
  writeFileSync(files.certPath, c.certificate_pem);
  writeFileSync(files.keyPath, c.private_key_pem, { mode: 0o600 });
  serials.set(id, c.serial);
  return files;
}

// A thingShadow client as firmware would create one: its certificate, the broker's CA, mqtts.
// Like firmware, it listens for errors: over mqtts the SDK's MQTT client emits a reconnect attempt
// that finds the broker down (doppeld restarting) as an 'error' event, which with no listener
// is an uncaught exception that ends the test; it goes on retrying, and the test checks it
// reconnects.
function shadowClient(files, clientId) {
  const shadow = awsIot.thingShadow({
    ...files, caPath: brokerCa, clientId, host: '127.0.0.1', port: gw.brokerPort,
    protocol: 'mqtts', baseReconnectTimeMs: 250, maximumReconnectTimeMs: 1000,
    keepalive: 30, debug: false,
  });
  shadow.on('error', () => {});
  return shadow;
}

// Resolves with the next event `name` whose arguments satisfy `pick` (bounded by `ms`).
function next(emitter, name, pick = () => true, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { emitter.removeListener(name, on); reject(new Error(`no '${name}' within ${ms} ms`)); }, ms);
    function on(...args) {
      if (!pick(...args)) return;
      clearTimeout(timer);
      emitter.removeListener(name, on);
      resolve(args);
    }
    emitter.on(name, on);
  });
}

// The status event for the request `token` ('accepted' or 'rejected', and the document).
function answer(shadow, token) {
  return next(shadow, 'status', (thing, stat, clientToken) => clientToken === token)
    .then(([, stat, , doc]) => ({ stat, doc }));
}

const twin = async (id) => (await gw.api(`/v1/twins/${id}`)).body;

// Where a test is, in the log ctest shows when it fails.
const step = (what) => process.stderr.write(`[${new Date().toISOString()}] ${what}\n`);

before(async () => {
  gw = new Doppeld([]);
  const broker = brokerCertificate(gw.dir);
  brokerCa = broker.ca;
  gw.extraArgs = ['--device-auth', 'x509', '--broker-tls-cert', broker.cert,
    '--broker-tls-key', broker.key, '--reconcile-timeout-s', '60'];
  await gw.start();
});

after(async () => { if (gw) await gw.close(); });

test('a thingShadow device registers, reports, gets, converges, survives a restart, is refused a stale version, deletes', async () => {
  const files = await provision('aws-thing-1');
  const shadow = shadowClient(files, 'aws-thing-1');
  try {
    await next(shadow, 'connect');
    await new Promise((resolve, reject) => shadow.register('aws-thing-1', {}, (err) => (err ? reject(err) : resolve())));

    step('Reports: accepted');
    // Reports: accepted, and the twin has it, learned as the AWS dialect.
    let token = shadow.update('aws-thing-1', { state: { reported: { temp: 21, mode: 'eco' } } });
    assert.ok(token, 'the SDK refused to send the update');
    let a = await answer(shadow, token);
    assert.equal(a.stat, 'accepted', JSON.stringify(a.doc));
    const t1 = await twin('aws-thing-1');
    assert.equal(t1.device.dialect, 'aws');
    assert.equal(t1.reported.temp, 21);
    assert.equal(t1.connection.state, 'online');

    step('get: the state');
    // get: the state as AWS shapes it.
    token = shadow.get('aws-thing-1');
    a = await answer(shadow, token);
    assert.equal(a.stat, 'accepted');
    assert.equal(a.doc.state.reported.mode, 'eco');
    assert.equal(a.doc.version, t1.version);

    step("The operator's desired change");
    // The operator's desired change arrives as a delta; the device applies it; the twin converges.
    const delta = next(shadow, 'delta', (thing, doc) => doc.state && doc.state.mode === 'boost');
    assert.equal((await gw.api('/v1/twins/aws-thing-1/desired', {
      method: 'PATCH', body: { mode: 'boost' }, headers: { 'Content-Type': 'application/merge-patch+json' },
    })).status, 200);
    const [, d] = await delta;
    token = shadow.update('aws-thing-1', { state: { reported: d.state } });
    assert.equal((await answer(shadow, token)).stat, 'accepted');
    await eventually(async () => (await twin('aws-thing-1')).reconcile.state === 'converged',
      'the twin to converge on mode=boost');

    step('doppeld (and its broker) restarts');
    // doppeld (and its broker) restarts; the desired state changes while the device is away;
    // the device reconnects by itself, gets its shadow as firmware does, and receives the delta.
    const reconnected = next(shadow, 'connect', () => true, 60000);
    await gw.stop();
    await gw.start();
    const awayDelta = next(shadow, 'delta', (thing, doc) => doc.state && doc.state.mode === 'away', 60000);
    assert.equal((await gw.api('/v1/twins/aws-thing-1/desired', {
      method: 'PATCH', body: { mode: 'away' }, headers: { 'Content-Type': 'application/merge-patch+json' },
    })).status, 200);
    await reconnected;
    step('reconnected; get');
    const got = await answer(shadow, shadow.get('aws-thing-1'));
    assert.equal(got.stat, 'accepted');
    assert.equal(got.doc.state.delta.mode, 'away');
    const [, away] = await awayDelta;
    token = shadow.update('aws-thing-1', { state: { reported: away.state } });
    assert.equal((await answer(shadow, token)).stat, 'accepted');
    await eventually(async () => {
      const t = await twin('aws-thing-1');
      return t.reconcile.state === 'converged' && t.reported.mode === 'away';
    }, 'the twin to converge on mode=away after the restart');

    step('delete: accepted');
    // delete: accepted; the state is gone, the twin stays (its tags and commands are the operator's).
    token = shadow.delete('aws-thing-1');
    assert.equal((await answer(shadow, token)).stat, 'accepted');
    const gone = await twin('aws-thing-1');
    assert.deepEqual(gone.reported, {});
    assert.deepEqual(gone.desired, {});
  } finally {
    await new Promise((r) => shadow.end(true, r));
  }
});

test('a stale version is refused with 409 and changes nothing', async () => {
  const files = await provision('aws-thing-2');
  const shadow = shadowClient(files, 'aws-thing-2');
  try {
    await next(shadow, 'connect');
    // Without deltas the SDK never learns of the operator's change: its next update names the
    // version it saw last.
    await new Promise((resolve, reject) => shadow.register('aws-thing-2', { ignoreDeltas: true }, (err) => (err ? reject(err) : resolve())));
    let token = shadow.update('aws-thing-2', { state: { reported: { v: 1 } } });
    assert.equal((await answer(shadow, token)).stat, 'accepted');
    assert.equal((await gw.api('/v1/twins/aws-thing-2/desired', {
      method: 'PATCH', body: { v: 2 }, headers: { 'Content-Type': 'application/merge-patch+json' },
    })).status, 200);
    token = shadow.update('aws-thing-2', { state: { reported: { v: 3 } } });
    const a = await answer(shadow, token);
    assert.equal(a.stat, 'rejected');
    assert.equal(a.doc.code, 409);
    assert.equal((await twin('aws-thing-2')).reported.v, 1);
  } finally {
    await new Promise((r) => shadow.end(true, r));
  }
});

test("a device reaches only its own topics; revoked and other things' certificates get nowhere", async () => {
  const mine = await provision('aws-thing-3');
  await provision('aws-thing-4');
  const options = (files, clientId) => ({
    ...files, caPath: brokerCa, clientId, host: '127.0.0.1', port: gw.brokerPort,
    protocol: 'mqtts', baseReconnectTimeMs: 250, maximumReconnectTimeMs: 1000,
  });
  const device = awsIot.device(options(mine, 'aws-thing-3'));
  // Another thing's certificate makes a client that thing, whatever client id it asks for.
  const other = awsIot.device(options({
    certPath: join(gw.dir, 'aws-thing-4.pem'), keyPath: join(gw.dir, 'aws-thing-4.key'),
  }, 'aws-thing-3-forged'));
  const overheard = [];
  device.on('message', (topic) => { if (topic.includes('aws-thing-4')) overheard.push(topic); });
  const connected = Promise.all([next(device, 'connect'), next(other, 'connect')]);
  try {
    await connected;
    // Subscribing to another thing's topics gets nothing (Mosquitto 2.0 grants the subscription
    // and its ACL then withholds every message).
    await new Promise((resolve) => device.subscribe('$aws/things/aws-thing-4/shadow/update/accepted', { qos: 0 }, resolve));
    // Publishing to them is dropped: the other twin never changes.
    device.publish('$aws/things/aws-thing-4/shadow/update', JSON.stringify({ state: { reported: { hijacked: true } } }), { qos: 1 });
    // ... and the forged client cannot act as aws-thing-3.
    other.publish('$aws/things/aws-thing-3/shadow/update', JSON.stringify({ state: { reported: { ok: 'forged' } } }), { qos: 1 });
    // Their own topics work (and, once seen, prove the drops had time to happen).
    device.publish('$aws/things/aws-thing-3/shadow/update', JSON.stringify({ state: { reported: { ok: true } } }), { qos: 1 });
    other.publish('$aws/things/aws-thing-4/shadow/update', JSON.stringify({ state: { reported: { me: 4 } } }), { qos: 1 });
    await eventually(async () => (await twin('aws-thing-3')).reported.ok === true, 'its own report');
    await eventually(async () => (await twin('aws-thing-4')).reported.me === 4, "aws-thing-4's own report");
    await sleep(500);  // aws-thing-4's update/accepted has been published by now
    assert.equal((await twin('aws-thing-4')).reported.hijacked, undefined);
    assert.equal((await twin('aws-thing-3')).reported.ok, true);
    assert.deepEqual(overheard, []);
  } finally {
    await new Promise((r) => device.end(true, r));
    await new Promise((r) => other.end(true, r));
  }

  // The broker reported both disconnections (no last will needed): the twins are offline.
  await eventually(async () => (await twin('aws-thing-3')).connection.state === 'offline',
    "aws-thing-3's disconnection");

  // Revoked while connected: the connection ends at once, and the broker refuses the TLS
  // handshake from then on, without a restart.
  const revoked = await provision('aws-thing-5');
  const victim = awsIot.device({
    ...revoked, caPath: brokerCa, clientId: 'aws-thing-5', host: '127.0.0.1', port: gw.brokerPort,
    protocol: 'mqtts', baseReconnectTimeMs: 250, maximumReconnectTimeMs: 500,
  });
  let admitted = 0;
  victim.on('connect', () => { admitted += 1; });
  try {
    await eventually(() => admitted === 1, 'aws-thing-5 to connect');
    // It has sent nothing (the SDK sends no birth): the broker told doppeld it connected.
    await eventually(async () => (await twin('aws-thing-5')).connection.state === 'online',
      'the broker to report the connection');
    const closed = next(victim, 'close', () => true, 10000);
    assert.equal((await gw.api('/v1/twins/aws-thing-5', { method: 'PUT', body: { certificate: false } })).status, 200);
    await closed;
    await sleep(1500);  // several reconnect attempts (every 250-500 ms), none of which may succeed
    assert.equal(admitted, 1);
  } finally {
    await new Promise((r) => victim.end(true, r));
  }
  assert.equal((await twin('aws-thing-5')).connection.state, 'offline');

  // The twin's change feed tells the certificate's story: issued (with its serial), revoked.
  const feed = (await gw.api('/v1/events?twin=aws-thing-5&kind=credentials.changed')).body.events;
  assert.deepEqual(feed.map((e) => [e.credential, e.action]),
    [['certificate', 'issued'], ['certificate', 'revoked']]);
  assert.equal(feed[0].serial, serials.get('aws-thing-5'));
  assert.equal(feed[1].count, 1);
  assert.equal(feed[1].cause.source, 'api');
  const connection = (await gw.api('/v1/events?twin=aws-thing-5&kind=connection.changed')).body.events;
  assert.deepEqual(connection.map((e) => e.state), ['online', 'offline']);
});

test("the SDK's jobs class runs a command queued through the API: IN_PROGRESS, then SUCCEEDED", async () => {
  const files = await provision('aws-thing-6');
  const jobs = awsIot.jobs({
    ...files, caPath: brokerCa, clientId: 'aws-thing-6', host: '127.0.0.1', port: gw.brokerPort,
    protocol: 'mqtts', baseReconnectTimeMs: 250, maximumReconnectTimeMs: 1000,
  });
  const ran = [];
  try {
    await next(jobs, 'connect');
    // Firmware as the SDK's examples write it: subscribe to an operation, then ask for the next
    // job (that request is also how the twin learns it speaks the AWS dialect).
    let inProgressSeen = false;
    const finished = new Promise((resolve, reject) => {
      jobs.subscribeToJobs('aws-thing-6', 'reboot', (err, job) => {
        if (err) return reject(err);
        ran.push(job.id);
        job.inProgress({ step: 'rebooting' }, (e1) => {
          if (e1) return reject(e1);
          eventually(async () => {
            const c = (await gw.api(`/v1/twins/aws-thing-6/commands/${job.id}`)).body;
            return c.status === 'sent' && c.history.length > 0;
          }, 'the command to stay in progress').then(() => {
            inProgressSeen = true;
            job.succeeded({ took: '1s' }, (e2) => (e2 ? reject(e2) : resolve(job)));
          }, reject);
        });
      });
    });
    await new Promise((resolve, reject) => jobs.startJobNotifications('aws-thing-6', (err) => (err ? reject(err) : resolve())));
    await eventually(async () => (await twin('aws-thing-6')).device.dialect === 'aws', 'the twin to learn the AWS dialect');

    const queued = await gw.api('/v1/twins/aws-thing-6/commands', { method: 'POST', body: { name: 'reboot', args: { delay: 1 } } });
    assert.ok(queued.status === 201 || queued.status === 202, JSON.stringify(queued.body));
    const id = queued.body.id;
    const job = await finished;
    assert.equal(job.id, id);
    assert.deepEqual(job.document, { operation: 'reboot', args: { delay: 1 } });
    assert.ok(inProgressSeen);
    const done = await eventually(async () => {
      const c = (await gw.api(`/v1/twins/aws-thing-6/commands/${id}`)).body;
      return c.status === 'succeeded' && c;
    }, 'the API to show the command succeeded');
    assert.deepEqual(done.result, { took: '1s' });
    assert.deepEqual(ran, [id]);  // run once
  } finally {
    await new Promise((r) => jobs.end(true, r));
  }
});
