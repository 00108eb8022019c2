#include "storage/sqlite/detail/twin_rows.h"

#include "storage/twin_row.h"

namespace doppel::storage::detail {

namespace {

std::string upsert_sql(bool rewrite_states) {
  std::string names, values, updates;
  int i = 0;
  for (const RowColumn& c : twin_row_columns()) {
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
  const auto values = twin_row_values(r);
  for (size_t i = 0; i < kTwinRowColumns; ++i) {
    const int index = static_cast<int>(i + 1);
    const RowValue& v = values[i];
    switch (twin_row_columns()[i].type) {
      case RowColumn::Type::kInteger:
        if (v.null) {
          st.bind_null(index);
        } else {
          st.bind(index, v.integer);
        }
        break;
      case RowColumn::Type::kText:
        st.bind(index, v.text);
        break;
      case RowColumn::Type::kBytes:
        st.bind_blob(index, v.text);
        break;
    }
  }
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
