#include "gateway/cluster_jobs.h"

#include <map>

#include "gateway/cluster.h"
#include "twins/log.h"
#include "twins/partition.h"
#include "twins/thread_name.h"

namespace doppel::gateway {

ClusterJobs::ClusterJobs(ClusterNode& cluster, size_t threads) : cluster_(cluster) {
  for (size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this] {
      name_this_thread("cluster-jobs");
      loop();
    });
}

ClusterJobs::~ClusterJobs() { stop(); }

void ClusterJobs::stop() {
  std::deque<Batch> left;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    left.swap(queue_);
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  for (Batch& b : left) {
    for (const auto& twin : b.twins) {
      b.reply(twin, Status(StatusCode::kUnavailable, "this node is stopping"));
    }
  }
}

void ClusterJobs::run(const twins::JobRecord& job, std::vector<std::string> twins, Reply reply) {
  std::map<std::string, Batch> by_owner;
  for (std::string& twin : twins) {
    const uint32_t partition = twins::partition_of(twin);
    Batch& b = by_owner[cluster_.owner_of(partition)];
    if (b.twins.empty()) {
      b.job = job.id;
      b.created_at = job.created_at;
      b.partition = partition;
      b.reply = reply;
    }
    b.twins.push_back(std::move(twin));
  }
  bool stopped = false;
  {
    std::lock_guard lock(mu_);
    stopped = stopping_;
    if (!stopped) {
      for (auto& [owner, b] : by_owner) queue_.push_back(std::move(b));
    }
  }
  if (stopped) {
    for (auto& [owner, b] : by_owner) {
      for (const auto& twin : b.twins) {
        reply(twin, Status(StatusCode::kUnavailable, "this node is stopping"));
      }
    }
    return;
  }
  cv_.notify_all();
}

void ClusterJobs::loop() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Batch b = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    send(b);
    lock.lock();
  }
}

void ClusterJobs::send(Batch& b) {
  HttpRequest req;
  req.method = "POST";
  req.path = "/v1/cluster/jobs/" + b.job + "/run";
  req.target = req.path;
  req.headers.emplace_back("Content-Type", "application/json");
  req.body = twins::to_text(twins::json{{"created_at", b.created_at}, {"twins", b.twins}});
  std::optional<HttpResponse> answer = cluster_.forward(req, "job:" + b.job, b.partition);
  auto retry_all = [&b](const std::string& why) {
    for (const auto& twin : b.twins) b.reply(twin, Status(StatusCode::kUnavailable, why));
  };
  if (!answer) return retry_all("the twins' owner is changing");
  if (answer->status != 200) {
    return retry_all("the twins' owner answered " + std::to_string(answer->status));
  }
  const twins::json doc = twins::json::parse(answer->body, nullptr, false);
  if (!doc.is_object() || !doc.contains("results") || !doc["results"].is_array()) {
    log_warn("jobs: a node answered a dispatch of job " + b.job + " without results");
    return retry_all("no results in the owner's answer");
  }
  std::map<std::string, Status> outcome;
  for (const auto& r : doc["results"]) {
    if (!r.is_object() || !r.contains("twin") || !r["twin"].is_string()) continue;
    const std::string code = r.value("code", "");
    const auto parsed = parse_code_name(code);
    outcome[r["twin"].get<std::string>()] =
        parsed && *parsed == StatusCode::kOk
            ? Status::ok()
            : Status(parsed.value_or(StatusCode::kUnavailable), r.value("message", code));
  }
  for (const auto& twin : b.twins) {
    auto it = outcome.find(twin);
    b.reply(twin, it != outcome.end() ? it->second
                                      : Status(StatusCode::kUnavailable, "not in the answer"));
  }
}

twins::json peer_results_json(const twins::JobEngine::PeerResults& results) {
  twins::json items = twins::json::array();
  for (const auto& [twin, status] : results) {
    items.push_back({{"twin", twin},
                     {"code", std::string(code_name(status.code()))},
                     {"message", status.message()}});
  }
  return twins::json{{"results", std::move(items)}};
}

}  // namespace doppel::gateway
