// PostgresTwinStore's fleet reads: listing, query pages, counts (postgres_store.h). The filter is
// the shared builder's (storage/query_sql.h) in PostgreSQL's dialect (detail/query_sql.h).
#include <algorithm>
#include <chrono>
#include <map>
#include <utility>

#include "storage/postgres/detail/connections.h"
#include "storage/postgres/detail/query_sql.h"
#include "twins/log.h"

namespace doppel::storage {
namespace {

constexpr const char* kReadOnly = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

pg::Params params_of(const std::vector<sql::Value>& values) {
  pg::Params p;
  for (const auto& v : values) postgres::add_param(p, v);
  return p;
}

// Inside a read transaction: a read past `deadline` is cancelled by the server (kTimeout).
void limit_time(pg::Connection& db, std::chrono::steady_clock::time_point deadline) {
  if (deadline == std::chrono::steady_clock::time_point::max()) return;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
  db.must("SELECT set_config('statement_timeout', $1, true)",
          pg::Params().text(std::to_string(std::max<int64_t>(1, left))));
}

// The stored twins `ids` (in that order; those gone meanwhile left out), with their commands, in
// the caller's transaction.
std::vector<twins::StoredTwin> load_many(pg::Connection& db, const std::vector<std::string>& ids) {
  std::vector<twins::StoredTwin> out;
  if (ids.empty()) return out;
  pg::ArrayLiteral list;
  for (const auto& id : ids) list.text(id);
  const pg::Params p = pg::Params().array(list);
  pg::Rows rows = db.must(
      "SELECT id, version, desired, reported, desired_meta, reported_meta, body, next_deadline, "
      "updated_at FROM twins WHERE id = ANY($1::text[])",
      p);
  std::map<std::string, twins::StoredTwin> by_id;
  for (size_t r = 0; r < rows.size(); ++r) {
    twins::StoredTwin st;
    st.twin.id = rows.text(r, 0);
    st.twin.version = static_cast<uint64_t>(rows.integer(r, 1));
    st.twin.desired = rows.text(r, 2);
    st.twin.reported = rows.text(r, 3);
    st.twin.desired_meta = rows.bytes(r, 4);
    st.twin.reported_meta = rows.bytes(r, 5);
    st.twin.body = rows.bytes(r, 6);
    if (!rows.is_null(r, 7)) st.twin.next_deadline = rows.integer(r, 7);
    st.twin.updated_at = rows.integer(r, 8);
    by_id.emplace(st.twin.id, std::move(st));
  }
  pg::Rows commands = db.must(
      "SELECT twin_id, seq, id, status, body FROM commands WHERE twin_id = ANY($1::text[]) "
      "ORDER BY twin_id, seq",
      p);
  for (size_t r = 0; r < commands.size(); ++r) {
    auto it = by_id.find(commands.text(r, 0));
    if (it == by_id.end()) continue;
    it->second.commands.push_back({static_cast<uint64_t>(commands.integer(r, 1)),
                                   commands.text(r, 2), commands.text(r, 3), commands.bytes(r, 4)});
  }
  for (const auto& id : ids) {
    auto it = by_id.find(id);
    if (it != by_id.end()) out.push_back(std::move(it->second));
  }
  return out;
}

// A cursor's key (null, a number or a string) as the three sort-key columns, and back.
void add_key(pg::Params& p, const twins::json& key) {
  if (key.is_number()) {
    p.integer(1).text(key.dump()).text("");
  } else if (key.is_string()) {
    p.integer(2).text("0").text(key.get<std::string>());
  } else {
    p.integer(0).text("0").text("");
  }
}
twins::json key_of(const pg::Rows& rows, size_t r) {
  switch (rows.integer(r, 1)) {
    case 0:
      return nullptr;
    case 1:
      return twins::json::parse(rows.text(r, 2), nullptr, false);
    default:
      return rows.text(r, 3);
  }
}

}  // namespace

Result<std::vector<twins::StoredTwin>> PostgresTwinStore::list(const std::string& after_id,
                                                               size_t limit) {
  return with_reader(
      "listing twins", [&](pg::Connection& db) -> Result<std::vector<twins::StoredTwin>> {
        db.must(kReadOnly);
        pg::Rows rows = db.must("SELECT id FROM twins WHERE id > $1 ORDER BY id LIMIT $2",
                                pg::Params().text(after_id).integer(static_cast<int64_t>(limit)));
        std::vector<std::string> ids;
        for (size_t r = 0; r < rows.size(); ++r) ids.push_back(rows.text(r, 0));
        auto out = load_many(db, ids);
        db.must("COMMIT");
        return out;
      });
}

Result<twins::FleetStore::TwinPage> PostgresTwinStore::query(const twins::TwinQuery& q) {
  return with_reader("querying twins", [&](pg::Connection& db) -> Result<TwinPage> {
    static const twins::QueryExpr kEverything;
    sql::Filter f = postgres::query_filter(q.where != nullptr ? *q.where : kEverything);
    pg::Params p = params_of(f.params);
    int next = static_cast<int>(f.params.size()) + 1;
    auto placeholder = [&](const char* type) { return "$" + std::to_string(next++) + type; };
    const char* dir = q.order.descending ? " DESC" : "";
    const bool by_id =
        q.order.field.doc == twins::QueryField::Doc::kNone && q.order.field.name == "id";
    std::string sql;
    if (by_id) {
      sql = "SELECT id, 0, '0', '' FROM twins WHERE " + f.where;
      if (q.after) {
        sql += (q.order.descending ? " AND id < " : " AND id > ") + placeholder("::text");
        p.text(q.after->id);
      }
      sql += std::string(" ORDER BY id") + dir;
    } else {
      // Keyset: after (rank, number, text, id) in the page's order, as one row value.
      const auto key = postgres::sort_key_sql(q.order.field);
      sql = "SELECT id, " + key[0] + ", " + key[1] + "::text, " + key[2] + " FROM twins WHERE " +
            f.where;
      if (q.after) {
        // Numbered one by one: the operands of one + have no order of evaluation.
        const std::string rank = placeholder("::int");
        const std::string number = placeholder("::numeric");
        const std::string text = placeholder("::text");
        const std::string id = placeholder("::text");
        sql += " AND (" + key[0] + ", " + key[1] + ", " + key[2] + ", id) " +
               (q.order.descending ? "<" : ">") + " (" + rank + ", " + number + ", " + text + ", " +
               id + ")";
        add_key(p, q.after->key);
        p.text(q.after->id);
      }
      sql += " ORDER BY " + key[0] + dir + ", " + key[1] + dir + ", " + key[2] + dir + ", id" + dir;
    }
    sql += " LIMIT " + std::to_string(q.limit + 1);
    db.must(kReadOnly);
    limit_time(db, q.budget.deadline);
    pg::Rows rows = db.must(sql, p);
    std::vector<std::string> ids;
    for (size_t r = 0; r < rows.size() && r < q.limit; ++r) ids.push_back(rows.text(r, 0));
    std::vector<twins::StoredTwin> out = load_many(db, ids);
    db.must("COMMIT");
    std::optional<twins::QueryCursor> next_page;
    if (rows.size() > q.limit) {
      const size_t last = q.limit - 1;
      next_page =
          twins::QueryCursor{by_id ? twins::json(nullptr) : key_of(rows, last), rows.text(last, 0)};
    }
    return std::make_pair(std::move(out), std::move(next_page));
  });
}

Result<twins::FleetCount> PostgresTwinStore::count_where(
    const twins::QueryExpr& where, const std::optional<twins::QueryField>& group_by,
    const twins::ReadBudget& budget) {
  return with_reader("counting twins", [&](pg::Connection& db) -> Result<twins::FleetCount> {
    const sql::Filter f = postgres::query_filter(where);
    twins::FleetCount out;
    db.must(kReadOnly);
    limit_time(db, budget.deadline);
    if (!group_by) {
      out.count = static_cast<uint64_t>(
          db.must("SELECT count(*) FROM twins WHERE " + f.where, params_of(f.params))
              .integer(0, 0));
      db.must("COMMIT");
      return out;
    }
    // Largest groups first, ties in the sort order of their values (as SQLite's GROUP BY
    // yields them); at most budget.max_groups are kept, and the server sorts and cuts them.
    const bool json_field = group_by->doc != twins::QueryField::Doc::kNone;
    const std::string v = postgres::group_value_sql(*group_by);
    std::string order_key;
    if (json_field) {
      order_key = "doppel_rank(v), doppel_sort_number(v), doppel_sort_text(v) COLLATE \"C\"";
    } else {
      order_key = "v NULLS FIRST";
    }
    std::string sql = "SELECT v" + std::string(json_field ? "::text" : "") +
                      ", n, v IS NULL FROM (SELECT v, count(*) AS n FROM (SELECT " + v +
                      " AS v FROM twins WHERE " + f.where + ") s GROUP BY v) g ORDER BY n DESC, " +
                      order_key;
    const size_t keep = std::min<size_t>(budget.max_groups, SIZE_MAX / 2);
    if (keep != SIZE_MAX / 2) sql += " LIMIT " + std::to_string(keep + 1);
    pg::Rows rows = db.must(sql, params_of(f.params));
    uint64_t total = 0;
    if (rows.size() > keep) {
      total = static_cast<uint64_t>(
          db.must("SELECT count(*) FROM twins WHERE " + f.where, params_of(f.params))
              .integer(0, 0));
      out.truncated = true;
    }
    db.must("COMMIT");
    for (size_t r = 0; r < rows.size() && r < keep; ++r) {
      twins::CountGroup g;
      if (rows.text(r, 2) == "t") {
        g.value = nullptr;
      } else if (json_field) {
        g.value = twins::json::parse(rows.text(r, 0), nullptr, false);
      } else if (group_by->type == twins::QueryField::Type::kNumber) {
        g.value = rows.integer(r, 0);
      } else {
        g.value = rows.text(r, 0);
      }
      g.count = static_cast<uint64_t>(rows.integer(r, 1));
      out.count += g.count;
      out.groups.push_back(std::move(g));
    }
    if (out.truncated) out.count = total;
    return out;
  });
}

}  // namespace doppel::storage
