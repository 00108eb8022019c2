#include "twins/query_eval.h"

#include <string>
#include <variant>

#include "twins/twin_columns.h"

namespace doppel::twins {
namespace {

using Op = QueryExpr::Op;

// The family of a value that comparisons see: 'n'umber, 's'tring, 'b'oolean, or 0 for none
// (JSON null, an object, an array).
char family(const json& v) {
  if (v.is_number()) return 'n';
  if (v.is_string()) return 's';
  if (v.is_boolean()) return 'b';
  return 0;
}

json literal_value(const QueryLiteral& l) {
  return std::visit([](const auto& v) { return json(v); }, l.value);
}

// -1, 0 or 1; both of one family (not 0). Numbers compare by value across integers and reals
// (long double holds every int64 and every double exactly), strings bytewise, false < true.
int compare(const json& a, const json& b) {
  if (a.is_string()) {
    const int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  auto num = [](const json& v) -> long double {
    if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
    if (v.is_number_unsigned()) return static_cast<long double>(v.get<uint64_t>());
    if (v.is_number_integer()) return static_cast<long double>(v.get<int64_t>());
    return static_cast<long double>(v.get<double>());
  };
  const long double x = num(a);
  const long double y = num(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

bool holds(Op op, int c) {
  switch (op) {
    case Op::kEq:
      return c == 0;
    case Op::kNe:
      return c != 0;
    case Op::kLt:
      return c < 0;
    case Op::kLe:
      return c <= 0;
    case Op::kGt:
      return c > 0;
    default:
      return c >= 0;
  }
}

// A comparison is true only between two present values of one family.
bool compare_values(const std::optional<json>& a, Op op, const std::optional<json>& b) {
  if (!a || !b) return false;
  const char fa = family(*a);
  if (fa == 0 || fa != family(*b)) return false;
  return holds(op, compare(*a, *b));
}

// LIKE: '%' is any run of characters (bytes: UTF-8 keeps a character's bytes together), every
// other character itself; case-sensitive.
bool like(std::string_view text, std::string_view pattern) {
  size_t t = 0, p = 0;
  size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '%') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '%') ++p;
  return p == pattern.size();
}

class Evaluator {
 public:
  explicit Evaluator(const TwinRecord& twin) : twin_(twin) {}

  bool eval(const QueryExpr& e) {
    switch (e.op) {
      case Op::kTrue:
        return true;
      case Op::kAnd:
        for (const auto& c : e.children) {
          if (!eval(*c)) return false;
        }
        return true;
      case Op::kOr:
        for (const auto& c : e.children) {
          if (eval(*c)) return true;
        }
        return false;
      case Op::kNot:
        return !eval(*e.children[0]);
      case Op::kExists:
        return value(e.left).has_value();
      case Op::kLike: {
        const auto v = value(e.left);
        return v && v->is_string() && like(v->get_ref<const std::string&>(), e.pattern);
      }
      case Op::kIn: {
        const auto v = value(e.left);
        for (const QueryLiteral& l : e.list) {
          if (compare_values(v, Op::kEq, literal_value(l))) return true;
        }
        return false;
      }
      default:
        return compare_values(value(e.left), e.op, value(e.right));
    }
  }

  std::optional<json> field_value(const QueryField& f) {
    if (f.doc == QueryField::Doc::kNone) {
      const TwinColumn* c = find_twin_column(f.name);
      return c != nullptr ? c->value(twin_) : std::nullopt;
    }
    const json& doc = parsed(f.doc);
    const json* at = &doc;
    for (const std::string& segment : f.path) {
      if (!at->is_object()) return std::nullopt;
      auto it = at->find(segment);
      if (it == at->end()) return std::nullopt;
      at = &*it;
    }
    return *at;
  }

 private:
  std::optional<json> value(const std::variant<QueryField, QueryLiteral>& operand) {
    if (const auto* l = std::get_if<QueryLiteral>(&operand)) return literal_value(*l);
    return field_value(std::get<QueryField>(operand));
  }

  // The twin's JSON documents, parsed once each.
  const json& parsed(QueryField::Doc doc) {
    const int i = doc == QueryField::Doc::kTags ? 0 : doc == QueryField::Doc::kDesired ? 1 : 2;
    if (!parsed_[i]) {
      const std::string& text = i == 0 ? twin_.tags : i == 1 ? twin_.desired : twin_.reported;
      parsed_[i] = json::parse(text, nullptr, /*allow_exceptions=*/false);
    }
    return *parsed_[i];
  }

  const TwinRecord& twin_;
  std::optional<json> parsed_[3];
};

}  // namespace

std::optional<json> query_value(const TwinRecord& twin, const QueryField& field) {
  return Evaluator(twin).field_value(field);
}

bool matches(const QueryExpr& where, const TwinRecord& twin) { return Evaluator(twin).eval(where); }

}  // namespace doppel::twins
