#include "twins/deadline_scanner.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "twins/log.h"

namespace doppel::twins {
namespace {

constexpr size_t kDueScanPage = 10000;

}  // namespace

DeadlineScanner::DeadlineScanner(ShardStore& store, const Clock& clock, Millis horizon_ms,
                                 Millis interval_ms, Sink sink)
    : store_(store),
      clock_(clock),
      horizon_ms_(horizon_ms),
      interval_ms_(interval_ms),
      sink_(std::move(sink)),
      horizon_(std::numeric_limits<Millis>::min()),
      scanned_up_to_(std::numeric_limits<Millis>::min()) {}

DeadlineScanner::~DeadlineScanner() { stop(); }

void DeadlineScanner::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] { loop(); });
}

void DeadlineScanner::stop() {
  if (!running_.exchange(false)) return;
  {
    std::lock_guard lock(wait_mu_);
    wait_cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void DeadlineScanner::loop() {
  while (running_.load()) {
    {
      std::unique_lock lock(wait_mu_);
      wait_cv_.wait_for(lock, std::chrono::milliseconds(interval_ms_),
                        [this] { return !running_.load(); });
    }
    if (running_.load()) scan();
  }
}

void DeadlineScanner::scan() {
  std::lock_guard lock(scan_mu_);
  const Millis up_to = clock_.now_ms() + horizon_ms_;
  // Publish the horizon before reading: a write committed after this point sees it and posts
  // its own wake-up; one committed before is in the query. Nothing falls between.
  horizon_.store(std::max(horizon_.load(), up_to));
  Millis after_due = scanned_up_to_;
  std::string after_id = "\x7f";  // above every valid id: strictly after `after_due`
  while (true) {
    // Every partition: this node holds them all (a cluster node scans those it owns).
    auto page = store_.due(std::nullopt, after_due, after_id, up_to, kDueScanPage);
    if (!page) {
      log_warn("deadline scan failed, retrying: " + page.status().to_string());
      return;
    }
    for (auto& d : *page) {
      after_due = d.due;
      after_id = d.id;
      sink_(std::move(d));
    }
    if (page->size() < kDueScanPage) break;
  }
  scanned_up_to_ = std::max(scanned_up_to_, up_to);
}

}  // namespace doppel::twins
