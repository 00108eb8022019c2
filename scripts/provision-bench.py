#!/usr/bin/env python3
"""Times provisioning devices with credentials through the HTTP API of a doppeld started with
--device-auth (PUT /v1/twins/{id} {"credentials": true}), with parallel clients.

  scripts/provision-bench.py --devices 10000 --clients 8 [--doppeld build/gateway/doppeld]
                             [--broker-accounts]

It starts its own doppeld (embedded Mosquitto) on loopback ports in a fresh data directory,
prints the rate, checks that the broker's password file lists every device, and stops it.
With --broker-accounts it starts a Mosquitto with the dynamic-security plugin instead and doppeld
with --broker (the accounts a cluster's nodes share), and checks the plugin's list of clients."""
import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--devices", type=int, default=10000)
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--doppeld", default="build/gateway/doppeld")
ap.add_argument("--http-port", type=int, default=28081)
ap.add_argument("--broker-port", type=int, default=28884)
ap.add_argument("--broker-accounts", action="store_true",
                help="an external Mosquitto whose dynamic-security plugin keeps the accounts")
a = ap.parse_args()

data = tempfile.mkdtemp(prefix="doppel-provision-")
DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
GATEWAY = ["-u", "doppel-gateway", "-P", "provision-bench"]
broker = None
if a.broker_accounts:
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", data + "/dynsec.json", "doppel-gateway",
                    "provision-bench"], check=True, stdout=subprocess.DEVNULL)
    with open(data + "/mosquitto.conf", "w") as f:
        f.write(f"listener {a.broker_port} 127.0.0.1\nuser root\nallow_anonymous false\nset_tcp_nodelay true\n"
                f"plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {data}/dynsec.json\n")
    broker = subprocess.Popen(["mosquitto", "-c", data + "/mosquitto.conf"],
                              stdout=subprocess.DEVNULL, stderr=open(data + "/mosquitto.log", "w"))
    time.sleep(0.5)
    args = ["--broker", f"tcp://127.0.0.1:{a.broker_port}", "--broker-username", GATEWAY[1],
            "--broker-password", GATEWAY[3]]
else:
    args = ["--broker-port", str(a.broker_port)]
gw = subprocess.Popen([a.doppeld, "--data", data, "--device-auth", "--http", f"127.0.0.1:{a.http_port}"]
                      + args, stdout=subprocess.DEVNULL, stderr=open(data + "/doppeld.log", "w"))
try:
    deadline = time.time() + 20
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", a.http_port, timeout=2)
            c.request("GET", "/readyz")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                break
        except OSError:
            pass
        if time.time() > deadline or gw.poll() is not None:
            sys.exit(f"doppeld did not become ready; see {data}/doppeld.log")
        time.sleep(0.1)

    errors = []
    done = [0]
    lock = threading.Lock()

    def work(k):
        c = http.client.HTTPConnection("127.0.0.1", a.http_port, timeout=60)
        for i in range(k, a.devices, a.clients):
            c.request("PUT", f"/v1/twins/dev-{i:07d}", json.dumps({"credentials": True}),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            body = r.read()
            if r.status not in (200, 201):
                errors.append(f"dev-{i:07d}: HTTP {r.status} {body[:200]!r}")
                return
            with lock:
                done[0] += 1

    t0 = time.time()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        print(f"  [provisioned] {done[0]}/{a.devices}", file=sys.stderr)
    elapsed = time.time() - t0
    if errors:
        sys.exit("failed: " + errors[0])
    if a.broker_accounts:
        where = "the broker's dynamic-security plugin"
        out = subprocess.run(["mosquitto_ctrl", "-p", str(a.broker_port)] + GATEWAY +
                             ["dynsec", "listClients"], check=True, capture_output=True, text=True)
        listed = sum(1 for line in out.stdout.splitlines() if line.strip().startswith("dev-"))
    else:
        where = "the password file"
        with open(data + "/mosquitto/mosquitto.passwd") as f:
            listed = sum(1 for line in f if line.startswith("dev-"))
    print(f"{a.devices} devices with credentials through {a.clients} clients: {elapsed:.1f} s, "
          f"{a.devices / elapsed:.0f}/s; {where} lists {listed}")
    if listed != a.devices:
        sys.exit(f"{where} does not list every device")
finally:
    gw.terminate()
    gw.wait()
    if broker:
        broker.terminate()
        broker.wait()
    shutil.rmtree(data, ignore_errors=True)
