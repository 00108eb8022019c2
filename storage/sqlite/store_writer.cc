// SqliteTwinStore's writer thread: the batch plan and the group commit (sqlite_store.h).
#include <chrono>
#include <stdexcept>
#include <string_view>

#include "storage/batch_plan.h"
#include "storage/sqlite/detail/connections.h"
#include "storage/sqlite/sqlite_store.h"
#include "twins/log.h"

namespace doppel::storage {

void SqliteTwinStore::writer_loop() {
  GroupCommitter::Batch batch;
  BatchPlan plan;
  std::vector<twins::EventRecord> committed_events;  // of the current batch, with their seqs
  std::vector<std::string> counted_jobs;  // jobs whose execution counts the batch changed
  Writer& w = *writer_;
  while (true) {
    if (!committer_.take(batch, options_.max_batch, /*wait=*/true)) break;
    std::vector<Status>& statuses = batch.statuses;
    const size_t n = batch.ops.size();

    const auto started = std::chrono::steady_clock::now();
    try {
      committer_.fence(batch, [this](uint32_t p) { return epoch(p); });
      plan.make(batch);
      Transaction tx(w.db, true);
      struct EventTally {
        int64_t reported = 0;  // reported.updated events written
        uint64_t last = 0;     // the newest seq written
        size_t count = 0;
      } tally;
      committed_events.clear();
      // Every event, in order: group commit coalesces a twin's rows, never its events. Returns
      // the first one's seq (0: none).
      auto insert_events = [&](const std::vector<twins::EventRecord>& events) {
        uint64_t step_first = 0;
        for (const twins::EventRecord& e : events) {
          w.insert_event->bind(1, e.ts)
              .bind(2, std::string_view(e.twin))
              .bind(3, std::string_view(e.kind))
              .bind(4, static_cast<int64_t>(e.version))
              .bind(5, std::string_view(e.body))
              .bind(6, step_first == 0 ? std::nullopt
                                       : std::optional<int64_t>(static_cast<int64_t>(step_first)))
              .run();
          tally.reported += e.kind == "reported.updated" ? 1 : 0;
          tally.last = static_cast<uint64_t>(sqlite3_last_insert_rowid(w.db.get()));
          ++tally.count;
          committed_events.push_back(e);
          committed_events.back().seq = tally.last;
          if (step_first == 0) step_first = tally.last;
        }
        return step_first;
      };
      for (size_t i = 0; i < n; ++i) {
        if (!statuses[i]) continue;
        if (const auto* job = std::get_if<twins::JobWrite>(&batch.ops[i].write)) {
          // In a savepoint with its events, so that it fails alone, events and all.
          const EventTally before = tally;
          const size_t events_before = committed_events.size();
          Status s =
              w.apply_alone(*job, fail_next_job_writes_, [&] { insert_events(job->events); });
          if (!s) {
            tally = before;
            committed_events.resize(events_before);
            statuses[i] = s;
            log_warn("store: " + s.to_string() + " (the rest of the batch commits)");
          }
          continue;
        }
        const twins::TwinWrite& tw = std::get<twins::TwinWrite>(batch.ops[i].write);
        const uint64_t step_first = insert_events(tw.events);
        if (!tw.snapshot.empty() && !tw.events.empty()) {
          w.insert_snapshot->bind(1, tw.id)
              .bind(2, static_cast<int64_t>(tally.last))
              .bind(3, static_cast<int64_t>(step_first))
              .bind(4, tw.events.back().ts)
              .bind(5, static_cast<int64_t>(tw.events.back().version))
              .bind(6, std::string_view(tw.snapshot))
              .run();
        }
        w.apply_executions(tw.executions);
        if (tw.delete_twin) {
          w.delete_twin->bind(1, tw.id).run();
          w.delete_commands->bind(1, tw.id).run();
          w.delete_snapshots->bind(1, tw.id).run();
          continue;
        }
        if (tw.twin && plan.carries_row(i, tw.id)) {
          Statement& upsert =
              plan.states_changed(tw.id) ? *w.upsert_twin : *w.upsert_twin_same_states;
          bind_record(upsert, *tw.twin);
          upsert.run();
        }
        for (const auto& c : tw.upsert_commands) {
          w.upsert_command->bind(1, tw.id)
              .bind(2, static_cast<int64_t>(c.seq))
              .bind(3, std::string_view(c.id))
              .bind(4, std::string_view(c.status))
              .bind_blob(5, c.body)
              .run();
        }
        for (uint64_t seq : tw.delete_commands) {
          w.delete_command->bind(1, tw.id).bind(2, static_cast<int64_t>(seq)).run();
        }
      }
      if (tally.reported > 0) w.count_reported->bind(1, tally.reported).run();
      counted_jobs.clear();
      w.flush_counts(counted_jobs);
      if (fail_next_commits_.load() > 0) {
        fail_next_commits_.fetch_sub(1);
        throw std::runtime_error("injected commit failure (test hook)");
      }
      tx.commit();
      if (!committed_events.empty()) {
        // The newest seq first: a reader that has seen an event in the tail may resume after
        // it at once, and the feed refuses positions past last_event_seq().
        last_event_seq_.store(tally.last);
        tail_.append(committed_events);
      }
      commit_metrics_.committed(n, tally.count);
    } catch (const std::exception& e) {
      committed_events.clear();  // rolled back: nobody hears of them
      counted_jobs.clear();
      w.count_changes.clear();
      const Status failed = to_status(e, "group commit of " + std::to_string(n) + " writes");
      commit_metrics_.failed();
      log_error("store: " + failed.to_string() +
                "; the twins it carried reload their committed state");
      committer_.fail(batch, failed);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    commit_metrics_.batch(n, seconds);

    // Open the gate: callbacks in sequence order, then the listeners, then committed_seq().
    committer_.complete(batch, [&] {
      if (events_listener_ && !committed_events.empty()) {
        events_listener_(last_event_seq_.load(), committed_events);
      }
      if (!counted_jobs.empty()) {
        std::lock_guard listener_lock(listener_mu_);
        if (job_counts_listener_) job_counts_listener_(counted_jobs);
      }
    });
  }
}

}  // namespace doppel::storage
