#include "storage/group_commit.h"

#include <algorithm>
#include <future>
#include <iterator>
#include <string>
#include <utility>

namespace doppel::storage {

bool GroupCommitter::Poisoned::refuses(const std::string& id, uint64_t seq) {
  if (until_.empty()) return false;
  auto it = until_.find(id);
  if (it == until_.end()) return false;
  if (seq <= it->second) return true;
  until_.erase(it);  // past the discard: this twin writes normally again
  return false;
}

void GroupCommitter::Poisoned::processed_up_to(uint64_t seq) {
  for (auto it = until_.begin(); it != until_.end();) {
    it = it->second != kUntilDiscarded && it->second <= seq ? until_.erase(it) : std::next(it);
  }
}

uint64_t GroupCommitter::enqueue(Write write, twins::CommitCallback on_commit) {
  std::unique_lock lock(mu_);
  room_cv_.wait(lock, [&] { return queue_.size() < max_queued_ || closing_; });
  const uint64_t seq = next_seq_++;
  if (closed_) {
    lock.unlock();
    if (on_commit) on_commit(Status(StatusCode::kUnavailable, "the store is closed"));
    return seq;
  }
  const auto* twin = std::get_if<twins::TwinWrite>(&write);
  const bool urgent = twin != nullptr && twin->urgent;
  queue_.push_back({seq, std::move(write), std::move(on_commit), std::chrono::steady_clock::now()});
  if (queue_.size() == wake_at_ || (urgent && wake_at_ > 1)) work_cv_.notify_one();
  if (urgent) ++urgent_queued_;
  return seq;
}

void GroupCommitter::discard(const std::string& id) {
  std::lock_guard lock(mu_);
  poisoned_.discard(id, next_seq_ - 1);
}

void GroupCommitter::when_committed(uint64_t seq, twins::CommitCallback callback) {
  {
    std::lock_guard lock(mu_);
    if (seq > committed_.load()) {
      waiters_.emplace(seq, std::move(callback));
      return;
    }
  }
  callback(Status::ok());
}

uint64_t GroupCommitter::last_seq() const {
  std::lock_guard lock(mu_);
  return next_seq_ - 1;
}

void GroupCommitter::flush() {
  const uint64_t last = last_seq();
  if (last <= committed_.load()) return;
  std::promise<void> done;
  when_committed(last, [&done](const Status&) { done.set_value(); });
  done.get_future().wait();
}

size_t GroupCommitter::gathering_for() const {
  std::lock_guard lock(mu_);
  return wake_at_ > 1 ? wake_at_ : 0;
}

size_t GroupCommitter::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void GroupCommitter::close() {
  {
    std::lock_guard lock(mu_);
    closing_ = true;
  }
  work_cv_.notify_all();
  room_cv_.notify_all();
}

size_t GroupCommitter::gather_target(size_t max, std::chrono::steady_clock::time_point now) {
  // The rate since the last take, averaged (a quarter weight for the newest interval).
  const double interval = std::chrono::duration<double>(now - last_take_).count();
  if (interval > 0 && last_take_ != std::chrono::steady_clock::time_point{}) {
    const double rate = static_cast<double>(next_seq_ - seq_at_last_take_) / interval;
    arrival_rate_ = arrival_rate_ == 0 ? rate : 0.75 * arrival_rate_ + 0.25 * rate;
  }
  last_take_ = now;
  seq_at_last_take_ = next_seq_;
  if (gather_.count() == 0) return 1;
  const double expected = arrival_rate_ * std::chrono::duration<double>(gather_).count();
  return expected < 2 ? 1 : std::min(max, static_cast<size_t>(expected));
}

bool GroupCommitter::take(Batch& batch, size_t max, bool wait) {
  batch.clear();
  {
    std::unique_lock lock(mu_);
    if (wait) work_cv_.wait(lock, [&] { return !queue_.empty() || closing_; });
    if (wait && gather_.count() > 0 && !queue_.empty()) {
      const size_t target = gather_target(max, std::chrono::steady_clock::now());
      if (queue_.size() < target && urgent_queued_ == 0) {
        // Until the writes expected within a window of the first one's arrival are here, or
        // one that someone waits for.
        wake_at_ = target;
        work_cv_.wait_until(lock, queue_.front().queued_at + gather_, [&] {
          return queue_.size() >= target || urgent_queued_ > 0 || closing_;
        });
        wake_at_ = 1;
      }
    }
    if (queue_.empty()) {
      // Writes that arrive from now on fail at once: nobody will commit them.
      if (closing_) closed_ = true;
      return false;
    }
    const size_t n = std::min(queue_.size(), max);
    const auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < n; ++i) {
      if (queued_stage_ != nullptr) {
        queued_stage_->observe(
            std::chrono::duration<double>(now - queue_.front().queued_at).count());
      }
      batch.ops.push_back(std::move(queue_.front()));
      queue_.pop_front();
      // A write made on top of a change that failed to commit must not be applied.
      const Op& op = batch.ops.back();
      const twins::TwinWrite* twin = op.twin();
      if (twin != nullptr && twin->urgent) --urgent_queued_;
      batch.statuses.push_back(
          twin != nullptr && poisoned_.refuses(twin->id, op.seq)
              ? Status(StatusCode::kUnavailable,
                       "an earlier change of twin '" + twin->id + "' failed to commit")
              : Status::ok());
    }
  }
  room_cv_.notify_all();
  return true;
}

void GroupCommitter::fail(Batch& batch, const Status& status) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    if (batch.statuses[i]) batch.statuses[i] = status;
    if (const twins::TwinWrite* twin = batch.ops[i].twin()) poisoned_.poison(twin->id);
  }
}

void GroupCommitter::fail_one(Batch& batch, size_t i, const Status& status) {
  std::lock_guard lock(mu_);
  batch.statuses[i] = status;
  if (const twins::TwinWrite* twin = batch.ops[i].twin()) poisoned_.poison(twin->id);
}

std::optional<uint32_t> GroupCommitter::Op::fenced_partition() const {
  if (const twins::TwinWrite* tw = twin()) return tw->partition;
  return std::get<twins::JobWrite>(write).partition;
}

size_t GroupCommitter::fence(Batch& batch,
                             const std::function<uint64_t(uint32_t partition)>& current) {
  size_t fenced = 0;
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    const Op& op = batch.ops[i];
    const std::optional<uint32_t> partition = op.fenced_partition();
    if (!partition || !batch.statuses[i]) continue;
    const uint64_t now = current(*partition);
    const twins::TwinWrite* tw = op.twin();
    const uint64_t epoch = tw != nullptr ? tw->epoch : std::get<twins::JobWrite>(op.write).epoch;
    if (epoch == now) continue;
    const std::string what = tw != nullptr ? "twin '" + tw->id + "'" : "a write of a job";
    fail_one(batch, i,
             Status(StatusCode::kFenced,
                    what + " was made under ownership epoch " + std::to_string(epoch) +
                        " of partition " + std::to_string(*partition) + ", which is at epoch " +
                        std::to_string(now) +
                        " now: the partition changed owner since, so this copy may be stale "
                        "and was not written"));
    ++fenced;
  }
  return fenced;
}

void GroupCommitter::complete(Batch& batch, const std::function<void()>& before_publish) {
  if (batch.ops.empty()) return;
  // Callbacks before committed_seq() moves, so whoever sees it moved has been told of failures.
  const auto committed_at = std::chrono::steady_clock::now();
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    if (batch.ops[i].callback) batch.ops[i].callback(batch.statuses[i]);
    if (released_stage_ != nullptr) {
      released_stage_->observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - committed_at).count());
    }
  }
  if (before_publish) before_publish();
  auto status_of = [&](uint64_t seq) {  // the batch is in sequence order
    auto it = std::lower_bound(batch.ops.begin(), batch.ops.end(), seq,
                               [](const Op& op, uint64_t s) { return op.seq < s; });
    return it != batch.ops.end() && it->seq == seq ? batch.statuses[it - batch.ops.begin()]
                                                   : Status::ok();
  };
  std::vector<std::pair<twins::CommitCallback, Status>> ready;
  {
    std::lock_guard lock(mu_);
    // max: a callback may commit a later batch itself (the in-memory double commits inline).
    const uint64_t last = std::max(committed_.load(), batch.ops.back().seq);
    committed_.store(last);
    poisoned_.processed_up_to(last);
    for (auto it = waiters_.begin(); it != waiters_.end() && it->first <= last;) {
      ready.emplace_back(std::move(it->second), status_of(it->first));
      it = waiters_.erase(it);
    }
  }
  for (auto& [callback, status] : ready) callback(status);
}

}  // namespace doppel::storage
