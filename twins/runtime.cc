#include "twins/runtime.h"

#include <algorithm>

#include "twins/detail/shard.h"
#include "twins/fnv1a.h"
#include "twins/partition.h"

namespace doppel::twins {

Runtime::Runtime(RuntimeOptions options, ShardStore& store, DeviceChannel& channel,
                 const DeviceCodec& codec, Clock& clock, Metrics& metrics)
    : options_(std::move(options)),
      logic_(options_.policy, options_.command_ids ? options_.command_ids : random_command_ids()),
      store_(store),
      clock_(clock),
      stats_(metrics),
      scanner_(
          store, clock, options_.scan_horizon_ms, options_.scan_interval_ms,
          [this](DueTwin d) {
            // Outside producers wait for room; inline, nobody would make any.
            shards_[shard_of(d.id)]->post(detail::WakeDue{std::move(d.id), d.due},
                                          !options_.inline_shards);
          },
          options_.ownership) {
  options_.shards = std::max<size_t>(1, options_.shards);
  const detail::ShardDeps deps{logic_,
                               store,
                               channel,
                               codec,
                               clock,
                               stats_,
                               scanner_,
                               options_.inbox_capacity,
                               std::max<size_t>(1, options_.max_hot_twins / options_.shards),
                               seconds_to_ms(options_.hibernate_after_s),
                               options_.auto_provision,
                               options_.ownership};
  for (size_t i = 0; i < options_.shards; ++i) {
    shards_.push_back(std::make_unique<detail::Shard>(i, deps));
  }
  metrics.gauge_fn("doppel_twins_hot", "Twins held in memory",
                   [this] { return static_cast<double>(hot_twins()); });
}

Runtime::~Runtime() {
  stop();
  alive_->store(false);
}

Status Runtime::start() {
  auto total = store_.count();
  if (!total) return total.status();
  stats_.total->set(static_cast<int64_t>(*total));
  auto commands = store_.command_counts();
  if (!commands) return commands.status();
  for (const auto& [status, n] : *commands) {
    auto st = parse_command_status(status);
    if (st && !is_terminal(*st))
      stats_.unfinished[static_cast<size_t>(*st)]->set(static_cast<int64_t>(n));
  }
  if (!options_.inline_shards) {
    for (auto& s : shards_) s->start();
  }
  running_.store(true);
  scan_deadlines();  // overdue alarms fire now, at start-up
  clock_.on_advance([this, alive = alive_] {
    if (!alive->load() || !running_.load()) return;
    scan_deadlines();
    for (auto& s : shards_) s->post(detail::Tick{}, false);
    run_inline();
  });
  if (!options_.inline_shards) scanner_.start();
  run_inline();
  return Status::ok();
}

void Runtime::stop() {
  if (!running_.exchange(false)) return;
  scanner_.stop();
  run_inline();
  for (auto& s : shards_) s->stop();
}

void Runtime::run_inline() {
  if (!options_.inline_shards || running_inline_) return;  // the outer call picks new work up
  running_inline_ = true;
  bool busy = true;
  while (busy) {
    busy = false;
    for (auto& s : shards_) busy |= s->run_pending();
  }
  running_inline_ = false;
}

void Runtime::scan_deadlines() { scanner_.scan(); }

void Runtime::deliver(DeviceInput input) {
  if (options_.ownership != nullptr && !options_.ownership->serves(partition_of(input.device_id))) {
    stats_.foreign->inc();
    return;
  }
  const size_t shard = shard_of(input.device_id);
  shards_[shard]->post(std::move(input), !options_.inline_shards);
  run_inline();
}

void Runtime::call(const std::string& id, ApiRequest request, std::function<void(ApiReply)> done,
                   Cause cause) {
  if (Status s = check_device_id(id, logic_.policy().limits); !s) return done(ApiReply{s});
  auto reply = std::make_shared<Reply>(std::move(done));
  // Never waits for room: callers are network threads, and requests are bounded by connections.
  shards_[shard_of(id)]->post(
      detail::ApiCall{id, std::move(request), std::move(reply), std::move(cause)}, false);
  run_inline();
}

std::future<ApiReply> Runtime::call(const std::string& id, ApiRequest request) {
  auto promise = std::make_shared<std::promise<ApiReply>>();
  auto future = promise->get_future();
  call(id, std::move(request), [promise](ApiReply r) { promise->set_value(std::move(r)); });
  return future;
}

void Runtime::barrier() {
  if (options_.inline_shards) return run_inline();
  std::vector<std::future<void>> waits;
  for (auto& s : shards_) {
    auto p = std::make_shared<std::promise<void>>();
    waits.push_back(p->get_future());
    s->post(detail::Barrier{p}, false);
  }
  for (auto& w : waits) w.wait();
}

size_t Runtime::shard_of(std::string_view id) const { return fnv1a32(id) % shards_.size(); }

size_t Runtime::hot_twins() const {
  size_t n = 0;
  for (const auto& s : shards_) n += s->hot();
  return n;
}

}  // namespace doppel::twins
