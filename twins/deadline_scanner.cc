#include "twins/deadline_scanner.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "twins/log.h"
#include "twins/thread_name.h"

namespace doppel::twins {
namespace {

constexpr size_t kDueScanPage = 10000;

}  // namespace

DeadlineScanner::DeadlineScanner(ShardStore& store, const Clock& clock, Millis horizon_ms,
                                 Millis interval_ms, Sink sink, Ownership* ownership)
    : store_(store),
      clock_(clock),
      horizon_ms_(horizon_ms),
      interval_ms_(interval_ms),
      sink_(std::move(sink)),
      ownership_(ownership),
      horizon_(std::numeric_limits<Millis>::min()),
      scanned_up_to_(std::numeric_limits<Millis>::min()) {}

DeadlineScanner::~DeadlineScanner() { stop(); }

void DeadlineScanner::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] {
    name_this_thread("alarms");
    loop();
  });
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
  PartitionFilter partitions;  // a node on its own: every partition
  if (ownership_ != nullptr) {
    // Partitions gained since the last scan: what fell due in them up to where the scans had got
    // was skipped while another node held them (or handed to it); read it now.
    std::vector<uint32_t> gained = ownership_->take_gained();
    if (!gained.empty() &&
        !scan_range(gained, std::numeric_limits<Millis>::min(), scanned_up_to_)) {
      return;
    }
    partitions = ownership_->serving();
    if (partitions->empty()) {
      scanned_up_to_ = std::max(scanned_up_to_, up_to);
      return;
    }
  }
  if (scan_range(partitions, scanned_up_to_, up_to)) {
    scanned_up_to_ = std::max(scanned_up_to_, up_to);
  }
}

bool DeadlineScanner::scan_range(const PartitionFilter& partitions, Millis after, Millis up_to) {
  Millis after_due = after;
  std::string after_id = "\x7f";  // above every valid id: strictly after `after`
  while (true) {
    auto page = store_.due(partitions, after_due, after_id, up_to, kDueScanPage);
    if (!page) {
      log_warn("deadline scan failed, retrying: " + page.status().to_string());
      return false;
    }
    for (auto& d : *page) {
      after_due = d.due;
      after_id = d.id;
      sink_(std::move(d));
    }
    if (page->size() < kDueScanPage) return true;
  }
}

}  // namespace doppel::twins
