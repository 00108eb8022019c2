// PostgresTwinStore's job reads: job rows, counts, executions and the twins a job targets
// (postgres_store.h). The writes are the writer's (store_writer.cc).
#include <algorithm>

#include "storage/postgres/detail/connections.h"
#include "storage/postgres/detail/query_sql.h"

namespace doppel::storage {
namespace {

twins::JobRecord job_row(const pg::Rows& rows, size_t r) {
  twins::JobRecord j;
  j.id = rows.text(r, 0);
  j.status = twins::parse_job_status(rows.text(r, 1)).value_or(twins::JobStatus::kRunning);
  j.created_at = rows.integer(r, 2);
  j.updated_at = rows.integer(r, 3);
  j.spec = rows.text(r, 4);
  return j;
}

}  // namespace

Result<std::optional<twins::JobRecord>> PostgresTwinStore::job(const std::string& id) {
  return with_reader("reading job '" + id + "'",
                     [&](pg::Connection& db) -> Result<std::optional<twins::JobRecord>> {
                       pg::Rows rows = db.must(
                           "SELECT id, status, created_at, updated_at, spec FROM jobs "
                           "WHERE id = $1",
                           pg::Params().text(id));
                       if (rows.size() == 0) return std::optional<twins::JobRecord>();
                       return std::optional<twins::JobRecord>(job_row(rows, 0));
                     });
}

Result<std::vector<twins::JobRecord>> PostgresTwinStore::jobs(
    std::optional<twins::JobStatus> status, const std::string& after_id, size_t limit) {
  return with_reader("listing jobs",
                     [&](pg::Connection& db) -> Result<std::vector<twins::JobRecord>> {
                       pg::Params p;
                       p.text(after_id);
                       if (status) {
                         p.text(twins::to_string(*status));
                       } else {
                         p.null();
                       }
                       p.integer(static_cast<int64_t>(limit));
                       pg::Rows rows = db.must(
                           "SELECT id, status, created_at, updated_at, spec FROM jobs WHERE id > "
                           "$1 AND ($2::text IS NULL OR status = $2) ORDER BY id LIMIT $3",
                           p);
                       std::vector<twins::JobRecord> out;
                       for (size_t r = 0; r < rows.size(); ++r) out.push_back(job_row(rows, r));
                       return out;
                     });
}

Result<twins::JobCounts> PostgresTwinStore::job_counts(const std::string& id) {
  return with_reader("counting the executions of job '" + id + "'",
                     [&](pg::Connection& db) -> Result<twins::JobCounts> {
                       pg::Rows rows = db.must("SELECT status, n FROM job_counts WHERE job = $1",
                                               pg::Params().text(id));
                       twins::JobCounts out;
                       for (size_t r = 0; r < rows.size(); ++r) {
                         if (auto s = twins::parse_exec_status(rows.text(r, 0))) {
                           out.of(*s) =
                               static_cast<uint64_t>(std::max<int64_t>(0, rows.integer(r, 1)));
                         }
                       }
                       return out;
                     });
}

Result<std::vector<twins::ExecutionRecord>> PostgresTwinStore::executions(
    const std::string& id, std::optional<twins::ExecStatus> status, const std::string& after_twin,
    size_t limit) {
  return with_reader(
      "listing the executions of job '" + id + "'",
      [&](pg::Connection& db) -> Result<std::vector<twins::ExecutionRecord>> {
        pg::Params p;
        p.text(id);
        if (status) {
          p.text(twins::to_string(*status));
        } else {
          p.null();
        }
        p.text(after_twin).integer(static_cast<int64_t>(limit));
        pg::Rows rows = db.must(
            "SELECT twin, status, attempts, updated_at, detail FROM job_executions WHERE job = $1 "
            "AND ($2::text IS NULL OR status = $2) AND twin > $3 ORDER BY twin LIMIT $4",
            p);
        std::vector<twins::ExecutionRecord> out;
        for (size_t r = 0; r < rows.size(); ++r) {
          twins::ExecutionRecord e;
          e.job = id;
          e.twin = rows.text(r, 0);
          e.status =
              twins::parse_exec_status(rows.text(r, 1)).value_or(twins::ExecStatus::kPending);
          e.attempts = static_cast<uint32_t>(rows.integer(r, 2));
          e.updated_at = rows.integer(r, 3);
          e.detail = rows.text(r, 4);
          out.push_back(std::move(e));
        }
        return out;
      });
}

Result<std::vector<std::string>> PostgresTwinStore::matching_ids(const twins::QueryExpr& where,
                                                                 const std::string& not_in_job,
                                                                 const std::string& after_id,
                                                                 size_t limit) {
  return with_reader(
      "finding the twins a job targets",
      [&](pg::Connection& db) -> Result<std::vector<std::string>> {
        const sql::Filter f = postgres::query_filter(where, 4);
        pg::Params p;
        p.text(after_id).text(not_in_job).integer(static_cast<int64_t>(limit));
        for (const auto& v : f.params) postgres::add_param(p, v);
        pg::Rows rows = db.must(
            "SELECT id FROM twins WHERE id > $1::text AND ($2::text = '' OR NOT EXISTS (SELECT 1 "
            "FROM job_executions WHERE job = $2::text AND twin = twins.id)) AND " +
                f.where + " ORDER BY id LIMIT $3",
            p);
        std::vector<std::string> out;
        for (size_t r = 0; r < rows.size(); ++r) out.push_back(rows.text(r, 0));
        return out;
      });
}

}  // namespace doppel::storage
