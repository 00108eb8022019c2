#include "storage/sqlite/detail/query_sql.h"

#include <cctype>
#include <cmath>
#include <cstdio>

#include "twins/fnv1a.h"
#include "twins/query_eval.h"
#include "twins/twin_columns.h"

namespace doppel::storage::detail {
namespace {

using twins::find_twin_column;
using twins::QueryExpr;
using twins::QueryField;
using twins::QueryLiteral;
using Op = QueryExpr::Op;

// The value families a comparison needs on both sides: 'n'umber, 's'tring, 'b'oolean.
char family_of(const QueryLiteral& l) {
  return std::holds_alternative<std::string>(l.value) ? 's'
         : std::holds_alternative<double>(l.value)    ? 'n'
                                                      : 'b';
}

SqlValue value_of(const QueryLiteral& l) {
  if (const auto* s = std::get_if<std::string>(&l.value)) return *s;
  if (const auto* b = std::get_if<bool>(&l.value)) return int64_t{*b ? 1 : 0};
  const double d = std::get<double>(l.value);
  if (std::trunc(d) == d && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  return d;
}

const char* column_of(const QueryField& f) {
  switch (f.doc) {
    case QueryField::Doc::kTags:
      return "tags";
    case QueryField::Doc::kDesired:
      return "desired";
    case QueryField::Doc::kReported:
      return "reported";
    case QueryField::Doc::kNone:
      break;
  }
  // A fixed field: its column, from the one table of them (a literal, so NUL-terminated). Only
  // the parser makes fields; a name it would refuse reads as no value.
  const twins::TwinColumn* c = find_twin_column(f.name);
  return c != nullptr ? c->column.data() : "NULL";
}

std::string path_literal(const QueryField& f) {
  std::string p = "'$";
  for (const auto& seg : f.path) p += ".\"" + seg + "\"";  // segments never hold quotes
  return p + "'";
}

bool is_json(const QueryField& f) { return f.doc != QueryField::Doc::kNone; }
bool nullable(const QueryField& f) {
  const twins::TwinColumn* c = find_twin_column(f.name);
  return is_json(f) || c == nullptr || c->nullable;
}
char fixed_family(const QueryField& f) { return f.type == QueryField::Type::kText ? 's' : 'n'; }

// A condition (never NULL) that the field holds a value of `family`.
std::string has_family(const QueryField& f, char family) {
  if (is_json(f)) {
    const std::string t = "json_type(" + std::string(column_of(f)) + ", " + path_literal(f) + ")";
    switch (family) {
      case 's':
        return t + " IS 'text'";
      case 'n':
        return "coalesce(" + t + ", '') IN ('integer', 'real')";
      default:
        return "coalesce(" + t + ", '') IN ('true', 'false')";
    }
  }
  if (fixed_family(f) != family) return "0";
  return nullable(f) ? std::string(column_of(f)) + " IS NOT NULL" : "1";
}

// The family of a field's value as SQL ('n', 's', 'b' or NULL when missing or not a scalar).
std::string family_sql(const QueryField& f) {
  if (is_json(f)) {
    return "(CASE json_type(" + std::string(column_of(f)) + ", " + path_literal(f) +
           ") WHEN 'integer' THEN 'n' WHEN 'real' THEN 'n' WHEN 'text' THEN 's' WHEN 'true' THEN "
           "'b' WHEN 'false' THEN 'b' END)";
  }
  const std::string fam = fixed_family(f) == 's' ? "'s'" : "'n'";
  if (!nullable(f)) return fam;
  return "(CASE WHEN " + std::string(column_of(f)) + " IS NULL THEN NULL ELSE " + fam + " END)";
}

const char* sql_op(Op op) {
  switch (op) {
    case Op::kEq:
      return "=";
    case Op::kNe:
      return "!=";
    case Op::kLt:
      return "<";
    case Op::kLe:
      return "<=";
    case Op::kGt:
      return ">";
    default:
      return ">=";
  }
}

Op mirrored(Op op) {
  switch (op) {
    case Op::kLt:
      return Op::kGt;
    case Op::kLe:
      return Op::kGe;
    case Op::kGt:
      return Op::kLt;
    case Op::kGe:
      return Op::kLe;
    default:
      return op;
  }
}

// '%' -> '*'; GLOB's own wildcards match only themselves.
std::string like_to_glob(const std::string& pattern) {
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

class Builder {
 public:
  explicit Builder(int first) : next_(first) {}

  std::string param(SqlValue v) {
    out_.params.push_back(std::move(v));
    return "?" + std::to_string(next_++);
  }

  std::string field_vs_literal(const QueryField& f, Op op, const QueryLiteral& lit) {
    const char fam = family_of(lit);
    const std::string guard = has_family(f, fam);
    if (guard == "0") return "0";
    const std::string cmp = field_value_sql(f) + " " + sql_op(op) + " " + param(value_of(lit));
    return guard == "1" ? "(" + cmp + ")" : "(" + guard + " AND " + cmp + ")";
  }

  std::string comparison(const QueryExpr& e) {
    const auto* lf = std::get_if<QueryField>(&e.left);
    const auto* rf = std::get_if<QueryField>(&e.right);
    if (lf != nullptr && rf == nullptr) {
      return field_vs_literal(*lf, e.op, std::get<QueryLiteral>(e.right));
    }
    if (lf == nullptr && rf != nullptr) {
      return field_vs_literal(*rf, mirrored(e.op), std::get<QueryLiteral>(e.left));
    }
    if (lf == nullptr) {  // two literals: no twin involved, so the reference evaluator decides
      return twins::matches(e, twins::TwinRecord{}) ? "1" : "0";
    }
    const std::string fa = family_sql(*lf);
    return "(" + fa + " IS " + family_sql(*rf) + " AND " + fa + " IS NOT NULL AND " +
           field_value_sql(*lf) + " " + sql_op(e.op) + " " + field_value_sql(*rf) + ")";
  }

  // SQLite's parser has a bounded stack (about 100 entries) and its expression trees a bounded
  // depth (1000), so the SQL stays shallow: a chain of AND or OR (flattened across nesting of the
  // same operator) is built as a tree of flat groups of up to kGroup terms (one level of
  // parentheses for a short chain, four for a thousand terms), a double NOT cancels out (the logic
  // is two-valued), NOT adds no parentheses, and IN is one SQL IN list per value family. What is
  // left grows with the query's own nesting, which the parser bounds (kMaxQueryDepth).
  std::string build(const QueryExpr& e) {
    switch (e.op) {
      case Op::kTrue:
        return "1";
      case Op::kAnd:
      case Op::kOr: {
        std::vector<const QueryExpr*> terms;
        flatten(e, e.op, terms);
        return balanced(terms, 0, terms.size(), e.op == Op::kAnd ? " AND " : " OR ");
      }
      case Op::kNot: {
        const QueryExpr* inner = e.children[0].get();
        if (inner->op == Op::kNot) return build(*inner->children[0]);
        return "NOT " + build(*inner);
      }
      case Op::kIn: {
        const auto& f = std::get<QueryField>(e.left);
        std::vector<std::string> parts;
        for (const char fam : {'s', 'n', 'b'}) {
          // A family the field cannot hold binds nothing: a parameter bound but never written
          // into the SQL is out of range for SQLite.
          const std::string guard = has_family(f, fam);
          if (guard == "0") continue;
          std::string values;
          for (const QueryLiteral& l : e.list) {
            if (family_of(l) != fam) continue;
            values += (values.empty() ? "" : ", ") + param(value_of(l));
          }
          if (values.empty()) continue;
          const std::string in = field_value_sql(f) + " IN (" + values + ")";
          parts.push_back(guard == "1" ? "(" + in + ")" : "(" + guard + " AND " + in + ")");
        }
        if (parts.empty()) return "0";
        std::string s = parts[0];
        for (size_t i = 1; i < parts.size(); ++i) s += " OR " + parts[i];
        return parts.size() == 1 ? s : "(" + s + ")";
      }
      case Op::kLike: {
        const auto& f = std::get<QueryField>(e.left);
        const std::string guard = has_family(f, 's');
        if (guard == "0") return "0";
        const std::string cmp = field_value_sql(f) + " GLOB " + param(like_to_glob(e.pattern));
        return guard == "1" ? "(" + cmp + ")" : "(" + guard + " AND " + cmp + ")";
      }
      case Op::kExists: {
        const auto& f = std::get<QueryField>(e.left);
        if (is_json(f)) return "(" + field_type_sql(f) + " IS NOT NULL)";
        return nullable(f) ? "(" + std::string(column_of(f)) + " IS NOT NULL)" : "1";
      }
      default:
        return comparison(e);
    }
  }

  SqlFilter out_;

 private:
  static void flatten(const QueryExpr& e, Op op, std::vector<const QueryExpr*>& out) {
    for (const auto& c : e.children) {
      if (c->op == op) {
        flatten(*c, op, out);
      } else {
        out.push_back(c.get());
      }
    }
  }
  // Terms [from, to) joined by `joiner`: flat when they are at most kGroup, otherwise groups of
  // them, each as wide as the tree below it allows.
  static constexpr size_t kGroup = 8;
  std::string balanced(const std::vector<const QueryExpr*>& terms, size_t from, size_t to,
                       const char* joiner) {
    const size_t n = to - from;
    if (n == 1) return build(*terms[from]);
    size_t span = 1;  // terms per child group
    while (span * kGroup < n) span *= kGroup;
    std::string s = "(";
    for (size_t i = from; i < to; i += span) {
      if (i > from) s += joiner;
      s += balanced(terms, i, std::min(to, i + span), joiner);
    }
    return s + ")";
  }

  int next_;
};

}  // namespace

SqlFilter query_filter(const twins::QueryExpr& expr, int first_param) {
  Builder b(first_param);
  b.out_.where = b.build(expr);
  return std::move(b.out_);
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
  // Readable, and unique: "reported.fw_x" and "reported.fw.x" differ in their hash.
  std::string name = "twins_q_";
  for (char c : f.name) {
    name += std::isalnum(static_cast<unsigned char>(c)) != 0 ? c : '_';
  }
  char hash[9];
  std::snprintf(hash, sizeof hash, "%08x", twins::fnv1a32(f.name));
  name += "_";
  name += hash;
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

SqlValue sql_value_of(const twins::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number()) return v.get<double>();
  return std::monostate{};
}

twins::json json_of(const SqlValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  return nullptr;
}

}  // namespace doppel::storage::detail
