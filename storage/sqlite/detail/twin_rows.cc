#include "storage/sqlite/detail/twin_rows.h"

namespace doppel::storage::detail {

namespace {

// A twin row's columns in bind_record's order (?1, ?2, ...); `state`: an indexed state column,
// which an upsert with unchanged states leaves as it is.
struct RowColumn {
  const char* name;
  bool state;
};
constexpr RowColumn kRowColumns[] = {
    {"id", false},
    {"version", false},
    {"desired", false},
    {"reported", false},
    {"desired_meta", false},
    {"reported_meta", false},
    {"body", false},
    {"next_deadline", false},
    {"updated_at", false},
    {"tags", false},
    {"desired_version", false},
    {"reported_version", false},
    {"created_at", false},
    {"liveness", true},
    {"last_seen", false},
    {"connection", true},
    {"reconcile", true},
    {"reconcile_attempts", false},
    {"commands_queued", false},
    {"commands_sent", false},
    {"encoding", false},
};

std::string upsert_sql(bool rewrite_states) {
  std::string names, values, updates;
  int i = 0;
  for (const RowColumn& c : kRowColumns) {
    names += std::string(i > 0 ? ", " : "") + c.name;
    values += std::string(i > 0 ? ", " : "") + "?" + std::to_string(i + 1);
    if (i > 0 && (rewrite_states || !c.state)) {
      updates += std::string(updates.empty() ? "" : ", ") + c.name + " = excluded." + c.name;
    }
    ++i;
  }
  return "INSERT INTO twins (" + names + ") VALUES (" + values +
         ") ON CONFLICT (id) DO UPDATE SET " + updates;
}

}  // namespace

const std::string& upsert_twin_sql() {
  static const std::string kSql = upsert_sql(true);
  return kSql;
}

const std::string& upsert_twin_same_states_sql() {
  static const std::string kSql = upsert_sql(false);
  return kSql;
}

void bind_record(Statement& st, const twins::TwinRecord& r) {
  st.bind(1, r.id)
      .bind(2, static_cast<int64_t>(r.version))
      .bind(3, std::string_view(r.desired))
      .bind(4, std::string_view(r.reported))
      .bind_blob(5, r.desired_meta)
      .bind_blob(6, r.reported_meta)
      .bind_blob(7, r.body)
      .bind(8, r.next_deadline)
      .bind(9, r.updated_at)
      .bind(10, std::string_view(r.tags))
      .bind(11, static_cast<int64_t>(r.desired_version))
      .bind(12, static_cast<int64_t>(r.reported_version))
      .bind(13, r.created_at)
      .bind(14, std::string_view(r.liveness))
      .bind(15, r.last_seen)
      .bind(16, std::string_view(r.connection))
      .bind(17, std::string_view(r.reconcile))
      .bind(18, static_cast<int64_t>(r.reconcile_attempts))
      .bind(19, static_cast<int64_t>(r.commands_queued))
      .bind(20, static_cast<int64_t>(r.commands_sent))
      .bind(21, std::string_view(r.encoding));
}

std::optional<twins::StoredTwin> load_stored(Statement& load_twin, Statement& load_commands,
                                             const std::string& id) {
  load_twin.bind(1, id);
  if (!load_twin.step()) {
    load_twin.reset();
    return std::nullopt;
  }
  twins::StoredTwin st;
  st.twin.id = id;
  st.twin.version = static_cast<uint64_t>(load_twin.column_int(0));
  st.twin.desired = load_twin.column_text(1);
  st.twin.reported = load_twin.column_text(2);
  st.twin.desired_meta = load_twin.column_text(3);
  st.twin.reported_meta = load_twin.column_text(4);
  st.twin.body = load_twin.column_text(5);
  if (!load_twin.column_null(6)) st.twin.next_deadline = load_twin.column_int(6);
  st.twin.updated_at = load_twin.column_int(7);
  load_twin.reset();
  load_commands.bind(1, id);
  while (load_commands.step()) {
    st.commands.push_back({static_cast<uint64_t>(load_commands.column_int(0)),
                           load_commands.column_text(1), load_commands.column_text(2),
                           load_commands.column_text(3)});
  }
  load_commands.reset();
  return st;
}

const char* const kLoadTwinSql =
    "SELECT version, desired, reported, desired_meta, reported_meta, body, next_deadline, "
    "updated_at FROM twins WHERE id = ?1";
const char* const kLoadCommandsSql =
    "SELECT seq, id, status, body FROM commands WHERE twin_id = ?1 ORDER BY seq";

}  // namespace doppel::storage::detail
