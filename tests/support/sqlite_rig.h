// SqliteRig: the twin runtime (one shard, inline: every call and clock advance has been
// processed when it returns) over a real SQLite file, with a recording channel and a fake clock.
// For tests of what the store answers about state the runtime made: as-of reads, fleet queries.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "mqtt/codec.h"
#include "storage/sqlite/sqlite_store.h"
#include "tests/support/fake_channel.h"
#include "tests/support/fake_clock.h"
#include "twins/runtime.h"

namespace doppel::testing {

struct SqliteRig {
  explicit SqliteRig(const std::string& file, std::vector<std::string> indexes = {}) {
    storage::StoreOptions so;
    so.path = file;
    so.indexes = std::move(indexes);
    auto s = storage::SqliteTwinStore::open(so, metrics);
    REQUIRE_MESSAGE(s, s.status().to_string());
    store = std::move(*s);
    twins::RuntimeOptions o;
    o.shards = 1;
    o.inline_shards = true;
    runtime = std::make_unique<twins::Runtime>(o, *store, channel, codec, clock, metrics);
    REQUIRE(runtime->start());
  }
  ~SqliteRig() {
    runtime->stop();
    store->close();
  }
  twins::ApiReply call(const std::string& id, twins::ApiRequest request) {
    auto f = runtime->call(id, std::move(request));
    REQUIRE(f.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
    return f.get();
  }
  void device(const std::string& id, twins::InboundKind kind, const std::string& payload,
              const std::string& command_id = {}) {
    runtime->deliver(doppel::testing::device_input(id, kind, payload, command_id));
  }

  Metrics metrics;
  FakeClock clock;
  FakeChannel channel;
  mqtt::WireCodec codec;
  std::unique_ptr<storage::SqliteTwinStore> store;
  std::unique_ptr<twins::Runtime> runtime;
};

}  // namespace doppel::testing
