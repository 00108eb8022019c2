// SqliteTwinStore's fleet reads and jobs: query pages, counts, job targets, and job rows and
// executions (sqlite_store.h).
#include <algorithm>

#include "storage/sqlite/detail/connections.h"
#include "storage/sqlite/detail/query_sql.h"
#include "storage/sqlite/sqlite_store.h"
#include "twins/log.h"

namespace doppel::storage {

namespace {

// The SELECT of a page of `q`: ids and sort keys, one row more than the page (is there more?).
detail::SqlStatement page_sql(const twins::TwinQuery& q) {
  static const twins::QueryExpr kEverything;
  detail::SqlFilter f = detail::query_filter(q.where != nullptr ? *q.where : kEverything);
  const std::string key = detail::field_value_sql(q.order.field);
  std::string sql = "SELECT id, " + key + " FROM twins WHERE " + f.where;
  if (q.after) {
    // Keyset: after (key, id) in the page's order, as a row-value range that the index on
    // (key, id) serves. SQLite orders NULL first, then numbers, then text, and compares across
    // those types the same way.
    const int k = static_cast<int>(f.params.size()) + 1;
    const std::string pk = "?" + std::to_string(k);
    const std::string pi = "?" + std::to_string(k + 1);
    const bool null_key = q.after->key.is_null();
    if (key == "id") {
      sql += q.order.descending ? " AND id < " + pi : " AND id > " + pi;
    } else if (!q.order.descending) {
      sql +=
          null_key
              ? " AND ((" + key + " IS NULL AND id > " + pi + ") OR " + key + " IS NOT NULL)"
              // The first term lets SQLite start inside an expression index.
              : " AND " + key + " >= " + pk + " AND (" + key + ", id) > (" + pk + ", " + pi + ")";
    } else {
      sql += null_key
                 ? " AND " + key + " IS NULL AND id < " + pi
                 : " AND ((" + key + ", id) < (" + pk + ", " + pi + ") OR " + key + " IS NULL)";
    }
    f.params.push_back(detail::sql_value_of(q.after->key));
    f.params.push_back(q.after->id);
  }
  const char* dir = q.order.descending ? " DESC" : "";
  sql += " ORDER BY " + key + dir;
  if (key != "id") sql += std::string(", id") + dir;
  sql += " LIMIT " + std::to_string(q.limit + 1);

  return detail::SqlStatement{std::move(sql), std::move(f.params)};
}

}  // namespace

Result<std::string> SqliteTwinStore::query_plan(const twins::TwinQuery& q) {
  return with_reader("explaining a query", [&](Reader& reader) -> Result<std::string> {
    const detail::SqlStatement f = page_sql(q);
    std::string plan;
    {
      Statement st(reader.db, ("EXPLAIN QUERY PLAN " + f.sql).c_str());
      for (size_t i = 0; i < f.params.size(); ++i) {
        detail::bind_value(st, static_cast<int>(i + 1), f.params[i]);
      }
      while (st.step()) plan += st.column_text(3) + "\n";
    }
    return plan;
  });
}

Result<twins::FleetStore::TwinPage> SqliteTwinStore::query(const twins::TwinQuery& q) {
  return with_reader("querying twins", [&](Reader& reader) -> Result<TwinPage> {
    const detail::SqlStatement f = page_sql(q);
    const std::string& sql = f.sql;
    std::vector<twins::StoredTwin> out;
    std::optional<twins::QueryCursor> next;
    {
      const detail::ReadDeadline budget(reader.db, q.budget.deadline);
      Transaction tx(reader.db, false);
      std::vector<std::pair<std::string, detail::SqlValue>> rows;
      {
        Statement st(reader.db, sql.c_str());
        for (size_t i = 0; i < f.params.size(); ++i) {
          detail::bind_value(st, static_cast<int>(i + 1), f.params[i]);
        }
        while (st.step()) rows.emplace_back(st.column_text(0), detail::column_value(st, 1));
      }
      for (size_t i = 0; i < rows.size() && i < q.limit; ++i) {
        if (auto stored = reader.load(rows[i].first)) out.push_back(std::move(*stored));
      }
      if (rows.size() > q.limit) {
        const auto& [id, v] = rows[q.limit - 1];
        next = twins::QueryCursor{detail::json_of(v), id};
      }
      tx.commit();
    }
    return std::make_pair(std::move(out), std::move(next));
  });
}

Result<twins::FleetCount> SqliteTwinStore::count_where(
    const twins::QueryExpr& where, const std::optional<twins::QueryField>& group_by,
    const twins::ReadBudget& budget) {
  return with_reader("counting twins", [&](Reader& reader) -> Result<twins::FleetCount> {
    const detail::SqlFilter f = detail::query_filter(where);
    std::string sql;
    if (group_by) {
      // A fixed field's groups stream from its index (when it has one); a JSON field's need its
      // type too, to tell 1 from true.
      const std::string value = detail::field_value_sql(*group_by);
      const bool json_field = group_by->doc != twins::QueryField::Doc::kNone;
      sql = json_field ? "SELECT " + value + ", " + detail::field_type_sql(*group_by) +
                             ", count(*) FROM twins WHERE " + f.where + " GROUP BY 1, 2"
                       : "SELECT " + value + ", NULL, count(*) FROM twins WHERE " + f.where +
                             " GROUP BY 1";
    } else {
      sql = "SELECT count(*) FROM twins WHERE " + f.where;
    }
    twins::FleetCount out;
    {
      const detail::ReadDeadline deadline(reader.db, budget.deadline);
      Transaction tx(reader.db, false);
      Statement st(reader.db, sql.c_str());
      // Largest groups first, ties in the store's value order (the order rows arrive in); at
      // most budget.max_groups of them are kept, so memory stays bounded by the budget, not by
      // how many values the field has.
      std::vector<uint64_t> arrival;
      auto larger = [&](size_t a, size_t b) {
        return out.groups[a].count != out.groups[b].count
                   ? out.groups[a].count > out.groups[b].count
                   : arrival[a] < arrival[b];
      };
      auto keep_largest = [&](size_t n) {
        std::vector<size_t> order(out.groups.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::sort(order.begin(), order.end(), larger);
        if (order.size() > n) {
          order.resize(n);
          out.truncated = true;
        }
        std::vector<twins::CountGroup> groups;
        std::vector<uint64_t> arrived;
        for (size_t i : order) {
          groups.push_back(std::move(out.groups[i]));
          arrived.push_back(arrival[i]);
        }
        out.groups = std::move(groups);
        arrival = std::move(arrived);
      };
      uint64_t rows = 0;
      for (size_t i = 0; i < f.params.size(); ++i) {
        detail::bind_value(st, static_cast<int>(i + 1), f.params[i]);
      }
      while (st.step()) {
        if (!group_by) {
          out.count = static_cast<uint64_t>(st.column_int(0));
          break;
        }
        twins::CountGroup g;
        const std::string type = st.column_null(1) ? "" : st.column_text(1);
        if (type == "true" || type == "false") {
          g.value = type == "true";
        } else if (type == "object" || type == "array") {
          g.value = twins::json::parse(st.column_text(0), nullptr, false);
        } else {
          g.value = detail::json_of(detail::column_value(st, 0));
        }
        g.count = static_cast<uint64_t>(st.column_int(2));
        out.count += g.count;
        out.groups.push_back(std::move(g));
        arrival.push_back(rows++);
        if (out.groups.size() >= 2 * std::min<size_t>(budget.max_groups, SIZE_MAX / 2) + 1024) {
          keep_largest(budget.max_groups);
        }
      }
      st.reset();
      tx.commit();
      keep_largest(budget.max_groups);
    }
    return out;
  });
}

Result<std::vector<std::string>> SqliteTwinStore::matching_ids(const twins::QueryExpr& where,
                                                               const std::string& not_in_job,
                                                               const std::string& after_id,
                                                               size_t limit) {
  return with_reader(
      "finding the twins a job targets", [&](Reader& reader) -> Result<std::vector<std::string>> {
        const detail::SqlFilter f = detail::query_filter(where, 4);
        const std::string sql =
            "SELECT id FROM twins WHERE id > ?1 AND (?2 = '' OR NOT EXISTS (SELECT 1 FROM "
            "job_executions WHERE job = ?2 AND twin = twins.id)) AND " +
            f.where + " ORDER BY id LIMIT ?3";
        std::vector<std::string> out;
        {
          Statement st(reader.db, sql.c_str());
          st.bind(1, std::string_view(after_id))
              .bind(2, std::string_view(not_in_job))
              .bind(3, static_cast<int64_t>(limit));
          for (size_t i = 0; i < f.params.size(); ++i) {
            detail::bind_value(st, static_cast<int>(i + 4), f.params[i]);
          }
          while (st.step()) out.push_back(st.column_text(0));
        }
        return out;
      });
}

namespace {

twins::JobRecord job_row(const Statement& st) {
  twins::JobRecord j;
  j.id = st.column_text(0);
  j.status = twins::parse_job_status(st.column_text(1)).value_or(twins::JobStatus::kRunning);
  j.created_at = st.column_int(2);
  j.updated_at = st.column_int(3);
  j.spec = st.column_text(4);
  return j;
}

}  // namespace

Result<std::optional<twins::JobRecord>> SqliteTwinStore::job(const std::string& id) {
  return with_reader([&] { return "reading job '" + id + "'"; },
                     [&](Reader& reader) -> Result<std::optional<twins::JobRecord>> {
                       std::optional<twins::JobRecord> out;
                       {
                         Statement st(reader.db,
                                      "SELECT id, status, created_at, updated_at, spec FROM jobs "
                                      "WHERE id = ?1");
                         st.bind(1, std::string_view(id));
                         if (st.step()) out = job_row(st);
                       }
                       return out;
                     });
}

Result<std::vector<twins::JobRecord>> SqliteTwinStore::jobs(std::optional<twins::JobStatus> status,
                                                            const std::string& after_id,
                                                            size_t limit) {
  return with_reader("listing jobs", [&](Reader& reader) -> Result<std::vector<twins::JobRecord>> {
    std::vector<twins::JobRecord> out;
    {
      Statement st(reader.db,
                   "SELECT id, status, created_at, updated_at, spec FROM jobs WHERE id > ?1 AND "
                   "(?2 IS NULL OR status = ?2) ORDER BY id LIMIT ?3");
      st.bind(1, std::string_view(after_id));
      if (status) {
        st.bind(2, twins::to_string(*status));
      } else {
        st.bind_null(2);
      }
      st.bind(3, static_cast<int64_t>(limit));
      while (st.step()) out.push_back(job_row(st));
    }
    return out;
  });
}

Result<twins::JobCounts> SqliteTwinStore::job_counts(const std::string& id) {
  return with_reader([&] { return "counting the executions of job '" + id + "'"; },
                     [&](Reader& reader) -> Result<twins::JobCounts> {
                       twins::JobCounts out;
                       {
                         Statement st(reader.db, "SELECT status, n FROM job_counts WHERE job = ?1");
                         st.bind(1, std::string_view(id));
                         while (st.step()) {
                           if (auto s = twins::parse_exec_status(st.column_text(0))) {
                             out.of(*s) =
                                 static_cast<uint64_t>(std::max<int64_t>(0, st.column_int(1)));
                           }
                         }
                       }
                       return out;
                     });
}

Result<std::vector<twins::ExecutionRecord>> SqliteTwinStore::executions(
    const std::string& id, std::optional<twins::ExecStatus> status, const std::string& after_twin,
    size_t limit) {
  return with_reader(
      [&] { return "listing the executions of job '" + id + "'"; },
      [&](Reader& reader) -> Result<std::vector<twins::ExecutionRecord>> {
        std::vector<twins::ExecutionRecord> out;
        {
          Statement st(reader.db, status ? "SELECT twin, status, attempts, updated_at, detail FROM "
                                           "job_executions WHERE job = ?1 AND status = ?2 AND "
                                           "twin > ?3 ORDER BY twin LIMIT ?4"
                                         : "SELECT twin, status, attempts, updated_at, detail FROM "
                                           "job_executions WHERE job = ?1 AND ?2 IS NULL AND "
                                           "twin > ?3 ORDER BY twin LIMIT ?4");
          st.bind(1, std::string_view(id));
          if (status) {
            st.bind(2, twins::to_string(*status));
          } else {
            st.bind_null(2);
          }
          st.bind(3, std::string_view(after_twin)).bind(4, static_cast<int64_t>(limit));
          while (st.step()) {
            twins::ExecutionRecord e;
            e.job = id;
            e.twin = st.column_text(0);
            e.status =
                twins::parse_exec_status(st.column_text(1)).value_or(twins::ExecStatus::kPending);
            e.attempts = static_cast<uint32_t>(st.column_int(2));
            e.updated_at = st.column_int(3);
            e.detail = st.column_text(4);
            out.push_back(std::move(e));
          }
        }
        return out;
      });
}

}  // namespace doppel::storage
