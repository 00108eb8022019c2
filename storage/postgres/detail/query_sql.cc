#include "storage/postgres/detail/query_sql.h"

#include "twins/twin_columns.h"

namespace doppel::storage::postgres {
namespace {

using sql::Family;
using twins::QueryField;

bool is_json(const QueryField& f) { return f.doc != QueryField::Doc::kNone; }

// A SQL string literal.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string column_of(const QueryField& f) { return std::string(twins::field_column(f)); }

bool nullable(const QueryField& f) { return twins::field_nullable(f); }
Family fixed_family(const QueryField& f) {
  return f.type == QueryField::Type::kText ? Family::kString : Family::kNumber;
}

// The jsonb value of a document's field (SQL NULL when missing; -> on an array with a text key
// is NULL too, as SQLite's '$."0"' path is).
std::string jsonb_of(const QueryField& f) {
  std::string v = "doppel_doc(" + column_of(f) + ")";
  for (const auto& seg : f.path) v += " -> " + quoted(seg);
  return "(" + v + ")";
}

std::string type_of(const QueryField& f) { return "jsonb_typeof(" + jsonb_of(f) + ")"; }

// A field's value as text, number and 0/1, where it holds a value of that family (else NULL, or
// anything: callers guard with has_family or the family).
std::string text_of(const QueryField& f) {
  if (!is_json(f)) return fixed_family(f) == Family::kString ? column_of(f) : "NULL::text";
  if (f.path.empty()) return "(" + jsonb_of(f) + " #>> '{}')";
  std::string v = "doppel_doc(" + column_of(f) + ")";
  for (size_t i = 0; i + 1 < f.path.size(); ++i) v += " -> " + quoted(f.path[i]);
  return "((" + v + " ->> " + quoted(f.path.back()) + ") COLLATE \"C\")";
}
std::string number_of(const QueryField& f) {
  if (!is_json(f)) return fixed_family(f) == Family::kNumber ? column_of(f) : "NULL::numeric";
  return "doppel_number(" + jsonb_of(f) + ")";
}
std::string boolean_of(const QueryField& f) {
  if (!is_json(f)) return "NULL::int";
  return "(CASE WHEN " + jsonb_of(f) + " = 'true'::jsonb THEN 1 ELSE 0 END)";
}

// 'n', 's', 'b' or NULL (missing, or not a scalar).
std::string family_sql(const QueryField& f) {
  if (is_json(f)) {
    return "(CASE " + type_of(f) +
           " WHEN 'number' THEN 'n' WHEN 'string' THEN 's' WHEN 'boolean' THEN 'b' END)";
  }
  const std::string fam = fixed_family(f) == Family::kString ? "'s'" : "'n'";
  if (!nullable(f)) return fam;
  return "(CASE WHEN " + column_of(f) + " IS NULL THEN NULL ELSE " + fam + " END)";
}

class PostgresDialect final : public sql::Dialect {
 public:
  std::string placeholder(int n, Family family) const override {
    const char* type = family == Family::kString   ? "::text"
                       : family == Family::kNumber ? "::numeric"
                                                   : "::int";
    return "$" + std::to_string(n) + type;
  }
  std::string true_sql() const override { return "true"; }
  std::string false_sql() const override { return "false"; }
  std::string has_family(const QueryField& f, Family family) const override {
    if (is_json(f)) {
      const char* name = family == Family::kString   ? "'string'"
                         : family == Family::kNumber ? "'number'"
                                                     : "'boolean'";
      return "coalesce(" + type_of(f) + ", '') = " + name;
    }
    if (fixed_family(f) != family) return "false";
    return nullable(f) ? column_of(f) + " IS NOT NULL" : "true";
  }
  std::string value(const QueryField& f, Family family) const override {
    switch (family) {
      case Family::kString:
        return text_of(f);
      case Family::kNumber:
        return number_of(f);
      case Family::kBoolean:
        break;
    }
    return boolean_of(f);
  }
  std::string compare_fields(const QueryField& a, const std::string& op,
                             const QueryField& b) const override {
    const std::string fa = family_sql(a);
    return "coalesce(" + fa + " = " + family_sql(b) + " AND CASE " + fa + " WHEN 'n' THEN " +
           number_of(a) + " " + op + " " + number_of(b) + " WHEN 's' THEN " + text_of(a) + " " +
           op + " " + text_of(b) + " WHEN 'b' THEN " + boolean_of(a) + " " + op + " " +
           boolean_of(b) + " END, false)";
  }
  std::string like(const QueryField& f, const std::string& placeholder) const override {
    return text_of(f) + " LIKE " + placeholder;
  }
  // '%' stays; '_' and the escape character match themselves.
  std::string like_pattern(const std::string& pattern) const override {
    std::string out;
    for (char c : pattern) {
      if (c == '_' || c == '\\') out += '\\';
      out += c;
    }
    return out;
  }
  std::string exists(const QueryField& f) const override {
    if (is_json(f)) return "(" + jsonb_of(f) + " IS NOT NULL)";
    return nullable(f) ? "(" + column_of(f) + " IS NOT NULL)" : "true";
  }
};

}  // namespace

const sql::Dialect& postgres_dialect() {
  static const PostgresDialect kDialect;
  return kDialect;
}

void add_param(pg::Params& p, const sql::Value& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) {
    p.integer(*i);
  } else if (const auto* d = std::get_if<double>(&v)) {
    p.text(twins::json(*d).dump());
  } else if (const auto* s = std::get_if<std::string>(&v)) {
    p.text(*s);
  } else {
    p.null();
  }
}

std::string group_value_sql(const QueryField& f) {
  // JSON null groups with missing, as in SQLite (json_extract gives NULL for both).
  return is_json(f) ? "nullif(" + jsonb_of(f) + ", 'null'::jsonb)" : column_of(f);
}

std::vector<std::string> sort_key_sql(const QueryField& f) {
  if (is_json(f)) {
    const std::string v = jsonb_of(f);
    return {"doppel_rank(" + v + ")", "doppel_sort_number(" + v + ")",
            "(doppel_sort_text(" + v + ") COLLATE \"C\")"};
  }
  const std::string c = column_of(f);
  if (fixed_family(f) == Family::kNumber) {
    return {"(CASE WHEN " + c + " IS NULL THEN 0 ELSE 1 END)", "coalesce(" + c + ", 0)::numeric",
            "''::text COLLATE \"C\""};
  }
  return {"(CASE WHEN " + c + " IS NULL THEN 0 ELSE 2 END)", "0::numeric",
          "coalesce(" + c + ", '')"};
}

std::vector<std::string> index_sql(const QueryField& f) {
  const std::string name = sql::index_name(f);
  const auto key = sort_key_sql(f);
  // Comparisons with strings and numbers read the first two; ordered pages the third.
  return {"CREATE INDEX IF NOT EXISTS \"" + name + "_s\" ON twins ((" + text_of(f) + "))",
          "CREATE INDEX IF NOT EXISTS \"" + name + "_n\" ON twins ((" + number_of(f) + "))",
          "CREATE INDEX IF NOT EXISTS \"" + name + "_o\" ON twins ((" + key[0] + "), (" + key[1] +
              "), (" + key[2] + "), id)"};
}

}  // namespace doppel::storage::postgres
