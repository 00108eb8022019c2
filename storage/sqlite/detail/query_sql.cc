#include "storage/sqlite/detail/query_sql.h"

#include "twins/twin_columns.h"

namespace doppel::storage::detail {
namespace {

using sql::Family;
using twins::QueryField;

// A column name (NUL-terminated: the table's are literals).
const char* column_of(const QueryField& f) { return twins::field_column(f).data(); }

std::string path_literal(const QueryField& f) {
  std::string p = "'$";
  for (const auto& seg : f.path) p += ".\"" + seg + "\"";  // segments never hold quotes
  return p + "'";
}

bool is_json(const QueryField& f) { return f.doc != QueryField::Doc::kNone; }
bool nullable(const QueryField& f) { return twins::field_nullable(f); }
Family fixed_family(const QueryField& f) {
  return f.type == QueryField::Type::kText ? Family::kString : Family::kNumber;
}

// The family of a field's value as SQL ('n', 's', 'b' or NULL when missing or not a scalar).
std::string family_sql(const QueryField& f) {
  if (is_json(f)) {
    return "(CASE json_type(" + std::string(column_of(f)) + ", " + path_literal(f) +
           ") WHEN 'integer' THEN 'n' WHEN 'real' THEN 'n' WHEN 'text' THEN 's' WHEN 'true' THEN "
           "'b' WHEN 'false' THEN 'b' END)";
  }
  const std::string fam = fixed_family(f) == Family::kString ? "'s'" : "'n'";
  if (!nullable(f)) return fam;
  return "(CASE WHEN " + std::string(column_of(f)) + " IS NULL THEN NULL ELSE " + fam + " END)";
}

// SQLite: json_extract gives a JSON field's value as SQL (booleans as 0/1), and GLOB matches
// case-sensitively.
class SqliteDialect final : public sql::Dialect {
 public:
  std::string placeholder(int n, Family) const override { return "?" + std::to_string(n); }
  std::string true_sql() const override { return "1"; }
  std::string false_sql() const override { return "0"; }
  std::string has_family(const QueryField& f, Family family) const override {
    if (is_json(f)) {
      const std::string t = "json_type(" + std::string(column_of(f)) + ", " + path_literal(f) + ")";
      switch (family) {
        case Family::kString:
          return t + " IS 'text'";
        case Family::kNumber:
          return "coalesce(" + t + ", '') IN ('integer', 'real')";
        case Family::kBoolean:
          return "coalesce(" + t + ", '') IN ('true', 'false')";
      }
    }
    if (fixed_family(f) != family) return "0";
    return nullable(f) ? std::string(column_of(f)) + " IS NOT NULL" : "1";
  }
  std::string value(const QueryField& f, Family) const override { return field_value_sql(f); }
  std::string compare_fields(const QueryField& a, const std::string& op,
                             const QueryField& b) const override {
    const std::string fa = family_sql(a);
    return "(" + fa + " IS " + family_sql(b) + " AND " + fa + " IS NOT NULL AND " +
           field_value_sql(a) + " " + op + " " + field_value_sql(b) + ")";
  }
  std::string like(const QueryField& f, const std::string& placeholder) const override {
    return field_value_sql(f) + " GLOB " + placeholder;
  }
  // '%' -> '*'; GLOB's own wildcards match only themselves.
  std::string like_pattern(const std::string& pattern) const override {
    std::string out;
    for (char c : pattern) {
      if (c == '%') {
        out += '*';
      } else if (c == '*' || c == '?' || c == '[') {
        out += '[';
        out += c;
        out += ']';
      } else {
        out += c;
      }
    }
    return out;
  }
  std::string exists(const QueryField& f) const override {
    if (is_json(f)) return "(" + field_type_sql(f) + " IS NOT NULL)";
    return nullable(f) ? "(" + std::string(column_of(f)) + " IS NOT NULL)" : "1";
  }
};

}  // namespace

const sql::Dialect& sqlite_dialect() {
  static const SqliteDialect kDialect;
  return kDialect;
}

std::string field_value_sql(const twins::QueryField& f) {
  if (!is_json(f)) return column_of(f);
  return "json_extract(" + std::string(column_of(f)) + ", " + path_literal(f) + ")";
}

std::string field_type_sql(const twins::QueryField& f) {
  if (!is_json(f)) return "NULL";
  return "json_type(" + std::string(column_of(f)) + ", " + path_literal(f) + ")";
}

std::string index_sql(const twins::QueryField& f) {
  const std::string name = sql::index_name(f);
  return "CREATE INDEX IF NOT EXISTS \"" + name + "\" ON twins(" + field_value_sql(f) + ", id)";
}

void bind_value(Statement& st, int index, const SqlValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) {
    st.bind(index, *i);
  } else if (const auto* d = std::get_if<double>(&v)) {
    st.bind_double(index, *d);
  } else if (const auto* s = std::get_if<std::string>(&v)) {
    st.bind(index, std::string_view(*s));
  } else {
    st.bind_null(index);
  }
}

SqlValue column_value(const Statement& st, int i) {
  switch (st.column_type(i)) {
    case SQLITE_INTEGER:
      return st.column_int(i);
    case SQLITE_FLOAT:
      return st.column_double(i);
    case SQLITE_NULL:
      return std::monostate{};
    default:
      return st.column_text(i);
  }
}

}  // namespace doppel::storage::detail
