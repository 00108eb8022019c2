// doppel-bench -s aws: ingest from devices that speak AWS IoT's shadow topics against devices
// that speak Doppel's own, through the same broker, transport and doppeld, runs alternating so
// that both see the same machine. The dialect is a translation at the edge (target: a ratio of at
// least 0.9); what it adds is an answer per update (update/accepted, QoS 0, written in batches on
// doppeld's second connection, relayed: the broker loads doppeld's plugin, which publishes them
// many to a packet), and with --aws-documents a second (update/documents, measured as a third
// ratio). The load generator does not subscribe to them (the broker drops them).
#include "simulator/bench/bench.h"

namespace doppel::bench {
namespace {

// CPU time per update of each process in one run (µs), from its cores and its rate.
json cpu_per_update(const json& run) {
  json out = json::object();
  const double rate = run.value("updates_per_s", 0.0);
  if (rate <= 0 || !run.contains("cpu_cores")) return out;
  for (const auto& [name, cores] : run["cpu_cores"].items()) {
    if (name != "elapsed_s") out[name] = std::round(cores.get<double>() / rate * 1e7) / 10;
  }
  return out;
}

std::string describe_cpu(const json& per_update) {
  std::string out;
  for (const auto& [name, us] : per_update.items()) {
    out += (out.empty() ? "" : ", ") + name + " " + fmt(us.get<double>(), 1);
  }
  return out;
}

}  // namespace

json Bench::aws() {
  json own_runs = json::array();
  json aws_runs = json::array();
  json docs_runs = json::array();
  json last_aws;
  json last_own;
  const bool documents = doppeld_has_flag("--aws-documents");
  for (int i = 0; i < runs() && !g_interrupted; ++i) {
    json own = ingest_run(i, twins::Dialect::kDoppel);
    if (!own.value("ok", false)) return own;
    json aws = ingest_run(i, twins::Dialect::kAws);
    if (!aws.value("ok", false)) return aws;
    own_runs.push_back(own["updates_per_s"]);
    aws_runs.push_back(aws["updates_per_s"]);
    last_aws = std::move(aws);
    last_own = std::move(own);
    if (documents) {
      json docs = ingest_run(i, twins::Dialect::kAws, {"--aws-documents"});
      if (!docs.value("ok", false)) return docs;
      docs_runs.push_back(docs["updates_per_s"]);
    }
  }
  const double own_rate = median(own_runs);
  const double aws_rate = median(aws_runs);
  const double docs_rate = docs_runs.empty() ? 0 : median(docs_runs);
  json r = {
      {"ok", own_rate > 0 && aws_rate > 0},
      {"doppel_updates_per_s", own_rate},
      {"aws_updates_per_s", aws_rate},
      {"runs_doppel_updates_per_s", own_runs},
      {"runs_aws_updates_per_s", aws_runs},
      {"ratio_aws_to_doppel", own_rate > 0 ? std::round(aws_rate / own_rate * 1000) / 1000 : 0},
      {"aws_cpu_cores", last_aws["cpu_cores"]},
      {"broker_relay", last_aws.value("broker_relay", false)},
      {"doppel_cpu_us_per_update", cpu_per_update(last_own)},
      {"aws_cpu_us_per_update", cpu_per_update(last_aws)}};
  if (docs_rate > 0) {
    r["aws_documents_updates_per_s"] = docs_rate;
    r["runs_aws_documents_updates_per_s"] = docs_runs;
    r["ratio_aws_documents_to_doppel"] = std::round(docs_rate / own_rate * 1000) / 1000;
  }
  print_table(
      "aws (ingest, AWS shadow updates vs Doppel reports, same broker and transport, "
      "median of " +
          std::to_string(runs()) + ")",
      {{"Doppel dialect", fmt(own_rate) + " updates/s (runs " + own_runs.dump() + ")"},
       {"AWS dialect", fmt(aws_rate) + " updates/s (runs " + aws_runs.dump() + ")"},
       {"ratio AWS / Doppel", r["ratio_aws_to_doppel"].dump() + " (target >= 0.9)"},
       {"answers relayed", r["broker_relay"].get<bool>()
                               ? std::string("yes (the broker loads doppeld's plugin)")
                               : std::string("no (this doppeld has no --broker-relay)")},
       {"CPU us/update, Doppel", describe_cpu(r["doppel_cpu_us_per_update"]) + " (last run)"},
       {"CPU us/update, AWS", describe_cpu(r["aws_cpu_us_per_update"]) + " (last run)"},
       {"with --aws-documents", docs_rate > 0 ? fmt(docs_rate) + " updates/s, ratio " +
                                                    r["ratio_aws_documents_to_doppel"].dump()
                                              : "n/a"}});
  return r;
}

}  // namespace doppel::bench
