// doppel-sim: runs a fleet of simulated devices against a broker, prints progress while it runs
// and a summary when it ends (after --duration-s, or on Ctrl-C).
#include <signal.h>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "simulator/fleet.h"

namespace {
volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }
}  // namespace

int main(int argc, char** argv) {
  doppel::sim::FleetOptions o;
  std::string encoding = "json";
  std::string dialect = "doppel";
  double duration_s = 0;
  double progress_s = 2;
  std::string summary_file;

  CLI::App app{
      "doppel-sim - a fleet of simulated devices for Doppel.\n\n"
      "Each device connects with its own client id and a last will, sends a birth message,\n"
      "reports temperature/battery/uptime periodically, applies deltas after --delta-delay-s and\n"
      "reports them back, and executes commands. Fractions of the fleet can misbehave."};
  app.get_formatter()->column_width(42);
  app.add_option("--devices,-n", o.devices, "number of devices")->capture_default_str();
  app.add_option("--broker,-b", o.broker, "broker URL")->capture_default_str();
  app.add_option("--prefix", o.prefix, "topic prefix")->capture_default_str();
  app.add_option("--id-prefix", o.id_prefix, "device ids are <id-prefix><6-digit index>")
      ->capture_default_str();
  app.add_option("--first-index", o.first_index, "index of the first device")
      ->capture_default_str();
  app.add_option("--encoding", encoding, "json or protobuf")
      ->capture_default_str()
      ->check(CLI::IsMember({"json", "protobuf"}));
  app.add_option("--dialect", dialect,
                 "doppel (Doppel's topics), or aws (AWS IoT's shadow topics: JSON, no birth or "
                 "will, a get on connect)")
      ->capture_default_str()
      ->check(CLI::IsMember({"doppel", "aws"}));
  app.add_option("--protobuf-fraction", o.protobuf_fraction,
                 "with --encoding json: share of devices speaking Protobuf")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--mqtt-version", o.mqtt_version, "5, or 4 for MQTT 3.1.1 (JSON only)")
      ->capture_default_str()
      ->check(CLI::IsMember({4, 5}));
  app.add_option("--interval-s", o.interval_s, "report period, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--delta-delay-s", o.delta_delay_s, "time to apply a delta")
      ->capture_default_str();
  app.add_option("--command-delay-s", o.command_delay_s, "time to execute a command")
      ->capture_default_str();
  app.add_option("--command-fail-fraction", o.command_fail_fraction,
                 "share of commands answered 'failed'")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--command-ignore-fraction", o.command_ignore_fraction,
                 "share of devices that never answer commands")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--ignore-delta-fraction", o.ignore_delta_fraction,
                 "share of devices that never apply deltas")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--silent-fraction", o.silent_fraction,
                 "share of devices that go silent (stay connected, send nothing)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--silent-after-s", o.silent_after_s, "when they go silent")
      ->capture_default_str();
  app.add_option("--silent-for-s", o.silent_for_s, "how long they stay silent (0: for good)")
      ->capture_default_str();
  app.add_option("--offline-fraction", o.offline_fraction,
                 "share of devices that drop offline (last will) and come back")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--offline-after-s", o.offline_after_s, "when they drop")->capture_default_str();
  app.add_option("--offline-for-s", o.offline_for_s, "how long they stay away (0: forever)")
      ->capture_default_str();
  app.add_option("--connect-rate", o.connect_rate, "new connections per second")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "random seed (which devices misbehave, values)")
      ->capture_default_str();
  std::string credentials_file;
  app.add_option("--credentials", credentials_file,
                 "JSON file {\"<device id>\": \"<password>\", ...}: each device logs in with its "
                 "id as username and its own password")
      ->check(CLI::ExistingFile);
  app.add_option("--password", o.password, "password for every device (username = its id)");
  app.add_option("--ca-file", o.ca_file, "for ssl:// brokers: the CA certificate to trust")
      ->check(CLI::ExistingFile);
  app.add_option("--duration-s", duration_s, "stop after this long (0: until Ctrl-C)")
      ->capture_default_str();
  app.add_option("--progress-s", progress_s, "progress line period (0: none)")
      ->capture_default_str();
  app.add_option("--summary-json", summary_file, "also write the summary to this file");
  CLI11_PARSE(app, argc, argv);
  if (!credentials_file.empty()) {
    std::ifstream in(credentials_file);
    const auto creds = doppel::twins::json::parse(in, nullptr, false);
    if (!creds.is_object()) {
      std::fprintf(stderr, "%s is not a JSON object of device id -> password\n",
                   credentials_file.c_str());
      return 2;
    }
    for (const auto& [id, password] : creds.items()) {
      if (password.is_string()) o.passwords[id] = password.get<std::string>();
    }
  }
  o.encoding =
      encoding == "protobuf" ? doppel::twins::Encoding::kProtobuf : doppel::twins::Encoding::kJson;
  o.dialect = dialect == "aws" ? doppel::twins::Dialect::kAws : doppel::twins::Dialect::kDoppel;
  if (o.dialect == doppel::twins::Dialect::kAws && o.encoding != doppel::twins::Encoding::kJson) {
    std::fprintf(stderr, "--dialect aws speaks JSON only: drop --encoding protobuf\n");
    return 2;
  }

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);

  std::printf("doppel-sim: %zu devices (%s, %s dialect) against %s, reporting every %.3gs%s\n",
              o.devices, encoding.c_str(), dialect.c_str(), o.broker.c_str(), o.interval_s,
              duration_s > 0 ? ", for a fixed duration" : "");
  std::fflush(stdout);
  doppel::sim::Fleet fleet(o);
  fleet.start();
  const auto start = std::chrono::steady_clock::now();
  auto next_progress = start + std::chrono::duration<double>(progress_s);
  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    if (duration_s > 0 && elapsed >= duration_s) break;
    if (progress_s > 0 && now >= next_progress) {
      std::printf("[%6.1fs] %s\n", elapsed, fleet.progress_line().c_str());
      std::fflush(stdout);
      next_progress = now + std::chrono::duration<double>(progress_s);
    }
  }
  fleet.stop();
  const std::string summary = fleet.summary_json();
  std::printf("doppel-sim summary:\n%s\n", summary.c_str());
  if (!summary_file.empty()) std::ofstream(summary_file) << summary << "\n";
  return 0;
}
