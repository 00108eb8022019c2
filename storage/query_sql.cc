#include "storage/query_sql.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "twins/fnv1a.h"
#include "twins/query_eval.h"

namespace doppel::storage::sql {
namespace {

using twins::QueryExpr;
using twins::QueryField;
using twins::QueryLiteral;
using Op = QueryExpr::Op;

Family family_of(const QueryLiteral& l) {
  return std::holds_alternative<std::string>(l.value) ? Family::kString
         : std::holds_alternative<double>(l.value)    ? Family::kNumber
                                                      : Family::kBoolean;
}

Value value_of(const QueryLiteral& l) {
  if (const auto* s = std::get_if<std::string>(&l.value)) return *s;
  if (const auto* b = std::get_if<bool>(&l.value)) return int64_t{*b ? 1 : 0};
  const double d = std::get<double>(l.value);
  if (std::trunc(d) == d && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  return d;
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

class Builder {
 public:
  Builder(const Dialect& d, int first) : d_(d), next_(first) {}

  std::string param(Value v, Family family) {
    out_.params.push_back(std::move(v));
    return d_.placeholder(next_++, family);
  }

  // `guard AND term`, simplified where the guard is constant.
  std::string guarded(const std::string& guard, const std::string& term) const {
    return guard == d_.true_sql() ? "(" + term + ")" : "(" + guard + " AND " + term + ")";
  }

  std::string field_vs_literal(const QueryField& f, Op op, const QueryLiteral& lit) {
    const Family fam = family_of(lit);
    const std::string guard = d_.has_family(f, fam);
    if (guard == d_.false_sql()) return d_.false_sql();
    return guarded(guard, d_.value(f, fam) + " " + sql_op(op) + " " + param(value_of(lit), fam));
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
      return twins::matches(e, twins::TwinRecord{}) ? d_.true_sql() : d_.false_sql();
    }
    return d_.compare_fields(*lf, sql_op(e.op), *rf);
  }

  // An engine's parser has a bounded stack (SQLite's about 100 entries) and its expression trees
  // a bounded depth, so the SQL stays shallow: a chain of AND or OR (flattened across nesting of
  // the same operator) is built as a tree of flat groups of up to kGroup terms (one level of
  // parentheses for a short chain, four for a thousand terms), a double NOT cancels out (the logic
  // is two-valued), NOT adds no parentheses, and IN is one SQL IN list per value family. What is
  // left grows with the query's own nesting, which the parser bounds (kMaxQueryDepth).
  std::string build(const QueryExpr& e) {
    switch (e.op) {
      case Op::kTrue:
        return d_.true_sql();
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
        for (const Family fam : {Family::kString, Family::kNumber, Family::kBoolean}) {
          // A family the field cannot hold binds nothing: a parameter bound but never written
          // into the SQL is refused by the engines.
          const std::string guard = d_.has_family(f, fam);
          if (guard == d_.false_sql()) continue;
          std::string values;
          for (const QueryLiteral& l : e.list) {
            if (family_of(l) != fam) continue;
            values += (values.empty() ? "" : ", ") + param(value_of(l), fam);
          }
          if (values.empty()) continue;
          parts.push_back(guarded(guard, d_.value(f, fam) + " IN (" + values + ")"));
        }
        if (parts.empty()) return d_.false_sql();
        std::string s = parts[0];
        for (size_t i = 1; i < parts.size(); ++i) s += " OR " + parts[i];
        return parts.size() == 1 ? s : "(" + s + ")";
      }
      case Op::kLike: {
        const auto& f = std::get<QueryField>(e.left);
        const std::string guard = d_.has_family(f, Family::kString);
        if (guard == d_.false_sql()) return d_.false_sql();
        return guarded(guard, d_.like(f, param(d_.like_pattern(e.pattern), Family::kString)));
      }
      case Op::kExists:
        return d_.exists(std::get<QueryField>(e.left));
      default:
        return comparison(e);
    }
  }

  Filter out_;

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

  const Dialect& d_;
  int next_;
};

}  // namespace

Filter build_filter(const twins::QueryExpr& expr, const Dialect& dialect, int first_param) {
  Builder b(dialect, first_param);
  b.out_.where = b.build(expr);
  return std::move(b.out_);
}

std::string index_name(const twins::QueryField& f) {
  std::string name = "twins_q_";
  for (char c : f.name) {
    name += std::isalnum(static_cast<unsigned char>(c)) != 0 ? c : '_';
  }
  char hash[9];
  std::snprintf(hash, sizeof hash, "%08x", twins::fnv1a32(f.name));
  return name + "_" + hash;
}

Value value_of(const twins::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number()) return v.get<double>();
  return std::monostate{};
}

twins::json json_of(const Value& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  return nullptr;
}

}  // namespace doppel::storage::sql
