// doppel-microbench: Google Benchmark micro-benchmarks of the per-message hot path of a reported
// update inside doppeld — decode, apply (merge with metadata, liveness, reconcile), serialize the
// record — on one core, without broker or SQLite. Stable enough for before/after comparisons of
// code changes, where the end-to-end ingest figure varies by +-10%.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>

#include "mqtt/codec.h"
#include "twins/record.h"
#include "twins/twin_logic.h"

namespace {

using namespace doppel::twins;

const doppel::mqtt::WireCodec& codec() {
  static const doppel::mqtt::WireCodec kCodec;
  return kCodec;
}

std::string payload(int64_t n, bool device_ts) {
  json j = {{"state",
             {{"temperature", 18.0 + static_cast<double>(n % 80) / 10},
              {"battery", 100 - n % 100},
              {"seq", n}}}};
  if (device_ts) j["ts"] = 1764246000000 + n;
  return j.dump();
}

ReportedMessage decode_or_die(const std::string& p) {
  auto m = codec().decode(InboundKind::kReported, p, Encoding::kJson, {});
  if (!m) {
    std::fprintf(stderr, "doppel-microbench: payload rejected: %s\n", m.status().message().c_str());
    std::exit(1);
  }
  return std::get<ReportedMessage>(std::move(*m));
}

Twin warm_twin(const TwinLogic& logic) {
  Outcome out;
  Twin t = logic.create("bench-0000001", 1, out);
  if (!logic.on_reported(t, decode_or_die(payload(0, true)), 2, out)) std::exit(1);
  return t;
}

void decode_reported(benchmark::State& state) {
  const std::string p = payload(42, state.range(0) != 0);
  const Limits limits;
  for (auto _ : state) {
    auto m = codec().decode(InboundKind::kReported, p, Encoding::kJson, limits);
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(decode_reported)->Arg(0)->Arg(1)->ArgName("device_ts");

void apply_reported(benchmark::State& state) {
  const TwinLogic logic{Policy{}};
  Twin t = warm_twin(logic);
  const ReportedMessage msg = decode_or_die(payload(7, state.range(0) != 0));
  Millis now = 10;
  for (auto _ : state) {
    Outcome out;
    (void)logic.on_reported(t, msg, ++now, out);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(apply_reported)->Arg(0)->Arg(1)->ArgName("device_ts");

void to_twin_record(benchmark::State& state) {
  const TwinLogic logic{Policy{}};
  Twin t = warm_twin(logic);
  for (auto _ : state) {
    TwinRecord r = to_record(t, 12345);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(to_twin_record);

// The whole shard-side path of one reported update.
void reported_update(benchmark::State& state) {
  const TwinLogic logic{Policy{}};
  Twin t = warm_twin(logic);
  const Limits limits;
  int64_t n = 0;
  std::vector<std::string> payloads;
  for (int i = 0; i < 64; ++i) payloads.push_back(payload(i, state.range(0) != 0));
  for (auto _ : state) {
    auto m = codec().decode(InboundKind::kReported, payloads[n % 64], Encoding::kJson, limits);
    Outcome out;
    (void)logic.on_reported(t, std::get<ReportedMessage>(*m), ++n, out);
    TwinRecord r = to_record(t, logic.next_deadline(t));
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(reported_update)->Arg(0)->Arg(1)->ArgName("device_ts");

// An AWS-dialect shadow update: apply it and write the answer every one gets (update/accepted),
// as the shard does before handing it to the publisher.
void aws_shadow_update(benchmark::State& state) {
  const TwinLogic logic{Policy{}};
  Twin t = warm_twin(logic);
  t.dialect = Dialect::kAws;
  const Wire wire{Encoding::kJson, Dialect::kAws};
  int64_t n = 0;
  std::vector<ReportedMessage> messages;
  for (int i = 0; i < 64; ++i) {
    ReportedMessage m = decode_or_die(payload(i, false));
    m.token = "token-" + std::to_string(i);
    messages.push_back(std::move(m));
  }
  size_t bytes = 0;
  for (auto _ : state) {
    Outcome out;
    const ReportedMessage& m = messages[static_cast<size_t>(n % 64)];
    ++n;
    (void)logic.on_reported(t, m, n, out);
    for (const auto& o : out.outputs) bytes += codec().encode(o, wire).size();
  }
  benchmark::DoNotOptimize(bytes);
}
BENCHMARK(aws_shadow_update);

}  // namespace

BENCHMARK_MAIN();
