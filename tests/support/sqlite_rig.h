// The twin runtime (one shard, inline: every call and clock advance has been processed when it
// returns) over a real store, with a recording channel and a fake clock: RuntimeRig<Store>, and
// SqliteRig on a SQLite file (PostgresRuntimeRig, on a private PostgreSQL server, is in
// postgres_rig.h). For tests of what the store answers about state the runtime made: as-of reads,
// fleet queries.
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

template <typename Store>
struct RuntimeRig {
  RuntimeRig() = default;
  RuntimeRig(const RuntimeRig&) = delete;
  RuntimeRig& operator=(const RuntimeRig&) = delete;
  ~RuntimeRig() {
    if (runtime) runtime->stop();
    if (store) store->close();
  }
  // Starts the runtime over `opened` (what Store::open returned).
  void start(Result<std::unique_ptr<Store>> opened) {
    REQUIRE_MESSAGE(opened, opened.status().to_string());
    store = std::move(*opened);
    twins::RuntimeOptions o;
    o.shards = 1;
    o.inline_shards = true;
    runtime = std::make_unique<twins::Runtime>(o, *store, channel, codec, clock, metrics);
    REQUIRE(runtime->start());
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
  std::unique_ptr<Store> store;
  std::unique_ptr<twins::Runtime> runtime;
};

struct SqliteRig : RuntimeRig<storage::SqliteTwinStore> {
  explicit SqliteRig(const std::string& file, std::vector<std::string> indexes = {}) {
    storage::StoreOptions so;
    so.path = file;
    so.indexes = std::move(indexes);
    start(storage::SqliteTwinStore::open(so, metrics));
  }
};

}  // namespace doppel::testing
