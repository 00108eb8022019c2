#include "twins/query.h"

#include <cctype>
#include <charconv>
#include <cmath>

#include "twins/twin_columns.h"

namespace doppel::twins {
namespace {

bool segment_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == ':';
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

enum class Tok { kEnd, kWord, kString, kNumber, kOp, kLParen, kRParen, kComma };

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;  // a word or operator as written; a string's value
  double number = 0;
  size_t column = 0;  // 1-based, in Unicode characters
};

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Result<QueryExprPtr> parse() {
    if (Status s = advance(); !s) return s;
    if (tok_.kind == Tok::kEnd) return std::make_unique<QueryExpr>();
    auto e = parse_or();
    if (!e) return e;
    if (tok_.kind != Tok::kEnd) return expected("AND, OR or the end of the query");
    return e;
  }

 private:
  Status error_at(size_t column, const std::string& what) const {
    return Status(StatusCode::kInvalidArgument,
                  "invalid query at column " + std::to_string(column) + ": " + what);
  }
  Status expected(const std::string& what) const {
    const std::string found = tok_.kind == Tok::kEnd      ? "the end of the query"
                              : tok_.kind == Tok::kString ? "a string"
                                                          : "'" + tok_.text + "'";
    return error_at(tok_.column, "expected " + what + ", found " + found);
  }

  // The 1-based character column of byte offset `at`.
  size_t column_of(size_t at) {
    for (; counted_ < at; ++counted_) {
      if ((static_cast<unsigned char>(text_[counted_]) & 0xC0) != 0x80) ++column_;
    }
    return column_ + 1;
  }

  Status advance() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_])) != 0) {
      ++pos_;
    }
    tok_ = Token{};
    tok_.column = column_of(pos_);
    if (pos_ >= text_.size()) return Status::ok();
    const char c = text_[pos_];
    const size_t start = pos_;
    if (c == '(' || c == ')' || c == ',') {
      tok_.kind = c == '(' ? Tok::kLParen : c == ')' ? Tok::kRParen : Tok::kComma;
      tok_.text = std::string(1, c);
      ++pos_;
      return Status::ok();
    }
    if (c == '\'') {
      tok_.kind = Tok::kString;
      ++pos_;
      while (true) {
        if (pos_ >= text_.size()) return error_at(tok_.column, "unterminated string");
        // No store compares text past a NUL the same way (SQLite's GLOB stops there,
        // PostgreSQL's text cannot hold one): refused rather than answered differently.
        if (text_[pos_] == '\0') {
          return error_at(column_of(pos_), "a string may not contain NUL (U+0000)");
        }
        if (text_[pos_] == '\'') {
          if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '\'') {
            tok_.text += '\'';
            pos_ += 2;
            continue;
          }
          ++pos_;
          return Status::ok();
        }
        tok_.text += text_[pos_++];
      }
    }
    if (c == '=' || c == '<' || c == '>' || c == '!') {
      tok_.kind = Tok::kOp;
      ++pos_;
      if (pos_ < text_.size() && text_[pos_] == '=') ++pos_;
      tok_.text = std::string(text_.substr(start, pos_ - start));
      if (tok_.text == "!") return error_at(tok_.column, "'!' must be followed by '='");
      return Status::ok();
    }
    if (std::isdigit(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.') {
      tok_.kind = Tok::kNumber;
      size_t end = pos_ + 1;
      while (end < text_.size() &&
             (std::isalnum(static_cast<unsigned char>(text_[end])) != 0 || text_[end] == '.' ||
              ((text_[end] == '-' || text_[end] == '+') &&
               (text_[end - 1] == 'e' || text_[end - 1] == 'E')))) {
        ++end;
      }
      tok_.text = std::string(text_.substr(pos_, end - pos_));
      const char* first = text_.data() + pos_;
      const char* last = text_.data() + end;
      auto [ptr, ec] = std::from_chars(first, last, tok_.number);
      if (ec != std::errc() || ptr != last || !std::isfinite(tok_.number)) {
        return error_at(tok_.column, "'" + tok_.text + "' is not a number");
      }
      pos_ = end;
      return Status::ok();
    }
    if (segment_char(c)) {
      tok_.kind = Tok::kWord;
      size_t end = pos_;
      while (end < text_.size() && (segment_char(text_[end]) || text_[end] == '.')) ++end;
      tok_.text = std::string(text_.substr(pos_, end - pos_));
      pos_ = end;
      return Status::ok();
    }
    size_t len = 1;
    while (pos_ + len < text_.size() &&
           (static_cast<unsigned char>(text_[pos_ + len]) & 0xC0) == 0x80) {
      ++len;
    }
    return error_at(tok_.column,
                    "unexpected character '" + std::string(text_.substr(pos_, len)) + "'");
  }

  bool keyword(const char* kw) const { return tok_.kind == Tok::kWord && lower(tok_.text) == kw; }

  Result<QueryExprPtr> parse_or() { return chain("or", QueryExpr::Op::kOr, &Parser::parse_and); }
  Result<QueryExprPtr> parse_and() {
    return chain("and", QueryExpr::Op::kAnd, &Parser::parse_unary);
  }

  // next (kw next)*: one node of `op` over all of them, or the single one.
  Result<QueryExprPtr> chain(const char* kw, QueryExpr::Op op,
                             Result<QueryExprPtr> (Parser::*next)()) {
    auto left = (this->*next)();
    if (!left) return left;
    if (!keyword(kw)) return left;
    auto node = std::make_unique<QueryExpr>();
    node->op = op;
    node->children.push_back(std::move(*left));
    while (keyword(kw)) {
      if (Status s = advance(); !s) return s;
      auto right = (this->*next)();
      if (!right) return right;
      node->children.push_back(std::move(*right));
    }
    return node;
  }

  // Parentheses and NOTs nest at most kMaxQueryDepth deep (the parser recurses on them, and the
  // SQL they become must prepare).
  // The level is left when the guard goes out of scope.
  struct Level {
    explicit Level(int& depth) : depth_(depth) { ++depth_; }
    ~Level() { --depth_; }
    Level(const Level&) = delete;
    Level& operator=(const Level&) = delete;
    int& depth_;
  };
  Status deeper() {
    if (depth_ > kMaxQueryDepth) {
      return error_at(tok_.column, "the query nests deeper than " + std::to_string(kMaxQueryDepth) +
                                       " levels of parentheses and NOT (the limit)");
    }
    return Status::ok();
  }

  Result<QueryExprPtr> parse_unary() {
    if (keyword("not")) {
      const Level level(depth_);
      if (Status s = deeper(); !s) return s;
      if (Status s = advance(); !s) return s;
      auto inner = parse_unary();
      if (!inner) return inner;
      auto node = std::make_unique<QueryExpr>();
      node->op = QueryExpr::Op::kNot;
      node->children.push_back(std::move(*inner));
      return node;
    }
    return parse_primary();
  }

  Result<QueryField> field_here() {
    if (tok_.kind != Tok::kWord) return expected("a field");
    auto f = parse_query_field(tok_.text);
    if (!f) return error_at(tok_.column, f.status().message());
    if (Status s = advance(); !s) return s;
    return f;
  }

  Result<QueryLiteral> literal_here(const char* what) {
    QueryLiteral lit;
    if (tok_.kind == Tok::kString) {
      lit.value = tok_.text;
    } else if (tok_.kind == Tok::kNumber) {
      lit.value = tok_.number;
    } else if (keyword("true") || keyword("false")) {
      lit.value = keyword("true");
    } else {
      return expected(what);
    }
    if (Status s = advance(); !s) return s;
    return lit;
  }

  Result<std::variant<QueryField, QueryLiteral>> operand(const char* what) {
    if (tok_.kind == Tok::kWord && !keyword("true") && !keyword("false")) {
      auto f = field_here();
      if (!f) return f.status();
      return std::variant<QueryField, QueryLiteral>(std::move(*f));
    }
    auto l = literal_here(what);
    if (!l) return l.status();
    return std::variant<QueryField, QueryLiteral>(std::move(*l));
  }

  Result<QueryExprPtr> parse_primary() {
    auto node = std::make_unique<QueryExpr>();
    if (tok_.kind == Tok::kLParen) {
      const Level level(depth_);
      if (Status s = deeper(); !s) return s;
      if (Status s = advance(); !s) return s;
      auto inner = parse_or();
      if (!inner) return inner;
      if (tok_.kind != Tok::kRParen) return expected("')'");
      if (Status s = advance(); !s) return s;
      return inner;
    }
    if (keyword("exists")) {
      if (Status s = advance(); !s) return s;
      if (tok_.kind != Tok::kLParen) return expected("'(' after EXISTS");
      if (Status s = advance(); !s) return s;
      auto f = field_here();
      if (!f) return f.status();
      if (tok_.kind != Tok::kRParen) return expected("')'");
      if (Status s = advance(); !s) return s;
      node->op = QueryExpr::Op::kExists;
      node->left = std::move(*f);
      return node;
    }
    auto left = operand("a field, a string, a number, TRUE, FALSE, NOT, EXISTS or '('");
    if (!left) return left.status();
    node->left = std::move(*left);
    const bool left_is_field = std::holds_alternative<QueryField>(node->left);
    bool negate = false;
    if (keyword("not")) {
      if (Status s = advance(); !s) return s;
      if (!keyword("in")) return expected("IN after NOT");
      negate = true;
    }
    if (keyword("in")) {
      if (!left_is_field) return expected("a field before IN");
      if (Status s = advance(); !s) return s;
      if (tok_.kind != Tok::kLParen) return expected("'(' after IN");
      do {
        if (Status s = advance(); !s) return s;
        auto lit = literal_here("a string, a number, TRUE or FALSE");
        if (!lit) return lit.status();
        node->list.push_back(std::move(*lit));
      } while (tok_.kind == Tok::kComma);
      if (tok_.kind != Tok::kRParen) return expected("',' or ')'");
      if (Status s = advance(); !s) return s;
      node->op = QueryExpr::Op::kIn;
      if (!negate) return node;
      auto outer = std::make_unique<QueryExpr>();
      outer->op = QueryExpr::Op::kNot;
      outer->children.push_back(std::move(node));
      return outer;
    }
    if (keyword("like")) {
      if (!left_is_field) return expected("a field before LIKE");
      if (Status s = advance(); !s) return s;
      if (tok_.kind != Tok::kString) return expected("a quoted pattern after LIKE");
      node->op = QueryExpr::Op::kLike;
      node->pattern = tok_.text;
      if (Status s = advance(); !s) return s;
      return node;
    }
    if (tok_.kind != Tok::kOp) {
      return expected("a comparison (=, !=, <, <=, >, >=, IN, NOT IN or LIKE)");
    }
    const std::string op = tok_.text;
    node->op = op == "="    ? QueryExpr::Op::kEq
               : op == "!=" ? QueryExpr::Op::kNe
               : op == "<"  ? QueryExpr::Op::kLt
               : op == "<=" ? QueryExpr::Op::kLe
               : op == ">"  ? QueryExpr::Op::kGt
               : op == ">=" ? QueryExpr::Op::kGe
                            : QueryExpr::Op::kTrue;
    if (node->op == QueryExpr::Op::kTrue) return expected("a comparison operator");
    if (Status s = advance(); !s) return s;
    auto right = operand("a field, a string, a number, TRUE or FALSE");
    if (!right) return right.status();
    node->right = std::move(*right);
    return node;
  }

  std::string_view text_;
  size_t pos_ = 0;
  size_t counted_ = 0;
  size_t column_ = 0;
  int depth_ = 0;
  Token tok_;
};

}  // namespace

Result<QueryField> parse_query_field(std::string_view name) {
  if (const TwinColumn* c = find_twin_column(name)) {
    QueryField q;
    q.name = std::string(c->field);
    q.type = c->type;
    return q;
  }
  QueryField q;
  q.name = std::string(name);
  const size_t dot = name.find('.');
  const std::string_view doc = name.substr(0, dot);
  q.doc = doc == "tags"       ? QueryField::Doc::kTags
          : doc == "desired"  ? QueryField::Doc::kDesired
          : doc == "reported" ? QueryField::Doc::kReported
                              : QueryField::Doc::kNone;
  if (q.doc == QueryField::Doc::kNone) {
    return Status(
        StatusCode::kInvalidArgument,
        "unknown field '" + std::string(name) +
            "' (fields: id, version, desired_version, reported_version, created_at, "
            "updated_at, liveness.state, liveness.last_seen, connection.state, "
            "reconcile.state, reconcile.attempts, commands.queued, commands.sent, "
            "device.encoding, device.dialect, tags.<path>, desired.<path>, reported.<path>)");
  }
  if (dot == std::string_view::npos || dot + 1 == name.size()) {
    return Status(StatusCode::kInvalidArgument,
                  "'" + std::string(name) + "' needs a path: " + std::string(doc) + ".<key>");
  }
  std::string_view rest = name.substr(dot + 1);
  while (true) {
    const size_t next = rest.find('.');
    const std::string_view seg = rest.substr(0, next);
    if (seg.empty()) {
      return Status(StatusCode::kInvalidArgument,
                    "'" + std::string(name) + "' has an empty path segment");
    }
    for (char c : seg) {
      if (!segment_char(c)) {
        return Status(
            StatusCode::kInvalidArgument,
            "'" + std::string(name) + "': path segments are letters, digits, '_', '-' and ':'");
      }
    }
    q.path.emplace_back(seg);
    if (next == std::string_view::npos) break;
    rest = rest.substr(next + 1);
  }
  if (q.path.size() > 16) {
    return Status(StatusCode::kInvalidArgument,
                  "'" + std::string(name) + "' is deeper than 16 levels");
  }
  return q;
}

Result<QueryExprPtr> parse_query(std::string_view text) {
  if (text.size() > kMaxQueryBytes) {
    return Status(StatusCode::kInvalidArgument, "the query is " + std::to_string(text.size()) +
                                                    " bytes; queries are limited to " +
                                                    std::to_string(kMaxQueryBytes) + " bytes");
  }
  return Parser(text).parse();
}

Result<QueryOrder> parse_query_order(std::string_view text) {
  QueryOrder order;
  const size_t space = text.find(' ');
  const std::string_view name = text.substr(0, space);
  if (space != std::string_view::npos) {
    const std::string dir = lower(text.substr(space + 1));
    if (dir == "desc") {
      order.descending = true;
    } else if (dir != "asc") {
      return Status(StatusCode::kInvalidArgument, "order_by is '<field> [asc|desc]'; '" +
                                                      std::string(text.substr(space + 1)) +
                                                      "' is neither asc nor desc");
    }
  }
  if (name.empty()) {
    order.field = *parse_query_field("id");
    return order;
  }
  auto f = parse_query_field(name);
  if (!f) return f.status();
  order.field = std::move(*f);
  return order;
}

std::string cursor_text(const QueryCursor& cursor) {
  // Hex of the JSON [key, id]: opaque, URL-safe, and checked on the way back.
  static const char kHex[] = "0123456789abcdef";
  const std::string text = to_text(json::array({cursor.key, cursor.id}));
  std::string out;
  out.reserve(text.size() * 2);
  for (unsigned char c : text) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

Result<QueryCursor> parse_cursor(std::string_view text) {
  const Status bad(StatusCode::kInvalidArgument,
                   "cursor must be the next_cursor of a previous page of the same query");
  if (text.size() % 2 != 0 || text.size() > 4 * kMaxQueryBytes) return bad;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string raw;
  for (size_t i = 0; i < text.size(); i += 2) {
    const int hi = nibble(text[i]);
    const int lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return bad;
    raw += static_cast<char>(hi * 16 + lo);
  }
  const json j = json::parse(raw, nullptr, false);
  if (!j.is_array() || j.size() != 2 || !j[1].is_string() ||
      !(j[0].is_null() || j[0].is_number() || j[0].is_string())) {
    return bad;
  }
  return QueryCursor{j[0], j[1].get<std::string>()};
}

}  // namespace doppel::twins
