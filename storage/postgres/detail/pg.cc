#include "storage/postgres/detail/pg.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>
#include <unordered_map>

namespace doppel::storage::pg {
namespace {

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

// libpq's messages end with a newline and may carry a DETAIL line: the first line only.
std::string first_line(std::string_view message) {
  const size_t end = message.find('\n');
  return std::string(message.substr(0, end));
}

// A statement's outcome: OK, or the Status its failure becomes (exec's rules, pg.h).
Status status_of(const PGresult* r, pg_conn* c) {
  const ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Status::ok();
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const std::string sqlstate = state != nullptr ? state : "";
  const std::string message = PQresultErrorMessage(r);
  if (sqlstate == "57014") {  // statement_timeout: a read's time budget (--query-timeout-s)
    return Status(StatusCode::kTimeout, "stopped at its deadline");
  }
  // Class 42 (syntax, undefined objects) and 22 (data): the statement, not the server.
  const bool refused = sqlstate.substr(0, 2) == "42" || sqlstate.substr(0, 2) == "22";
  return Status(refused ? StatusCode::kInvalidArgument : StatusCode::kUnavailable,
                explain(sqlstate, message.empty() ? PQerrorMessage(c) : message));
}

}  // namespace

std::string explain(std::string_view sqlstate, std::string_view message) {
  const std::string said = first_line(message);
  if (sqlstate == "28P01" || sqlstate == "28000" || contains(message, "password authentication") ||
      contains(message, "no password supplied")) {
    return "PostgreSQL refused the login (" + said +
           "): check the user and password in the --store URI";
  }
  if (sqlstate == "3D000" ||
      (contains(message, "database") && contains(message, "does not exist"))) {
    return "the database does not exist (" + said +
           "): create it (createdb) or fix the database name in the --store URI";
  }
  if (sqlstate.empty() &&
      (contains(message, "Connection refused") || contains(message, "could not connect") ||
       contains(message, "could not translate host name") || contains(message, "timeout expired") ||
       contains(message, "No such file"))) {
    return "cannot reach the PostgreSQL server (" + said +
           "): is it running, and do the host and port in the --store URI point at it?";
  }
  if (sqlstate == "53100") {
    return "the PostgreSQL server's disk is full (" + said +
           "): free space on it; writes fail until then";
  }
  if (sqlstate.substr(0, 2) == "08" || sqlstate == "57P01" || sqlstate == "57P02" ||
      sqlstate == "57P03" ||
      (sqlstate.empty() &&
       (contains(message, "server closed") || contains(message, "shutting down") ||
        contains(message, "starting up")))) {
    return "the connection to PostgreSQL was lost or refused (" + said +
           "); doppeld reconnects when the server is back";
  }
  if (sqlstate.empty()) return "PostgreSQL: " + said;
  return "PostgreSQL failed (SQLSTATE " + std::string(sqlstate) + "): " + said;
}

Params& Params::text(std::string_view value) {
  values_.emplace_back(std::string(value));
  binary_.push_back(0);
  return *this;
}

Params& Params::bytes(std::string_view value) {
  values_.emplace_back(std::string(value));
  binary_.push_back(1);
  return *this;
}

Params& Params::integer(int64_t value) { return text(std::to_string(value)); }

Params& Params::null() {
  values_.emplace_back(std::nullopt);
  binary_.push_back(0);
  return *this;
}

void ArrayLiteral::separate() {
  if (size_++ > 0) body_ += ',';
}

ArrayLiteral& ArrayLiteral::text(std::string_view value) {
  separate();
  body_ += '"';
  for (char c : value) {
    if (c == '"' || c == '\\') body_ += '\\';
    body_ += c;
  }
  body_ += '"';
  return *this;
}

ArrayLiteral& ArrayLiteral::bytes(std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  separate();
  body_ += "\"\\\\x";  // "\\x...": bytea's hex input, its backslash escaped in the array
  for (unsigned char c : value) {
    body_ += kHex[c >> 4];
    body_ += kHex[c & 15];
  }
  body_ += '"';
  return *this;
}

ArrayLiteral& ArrayLiteral::integer(int64_t value) {
  separate();
  body_ += std::to_string(value);
  return *this;
}

ArrayLiteral& ArrayLiteral::null() {
  separate();
  body_ += "NULL";
  return *this;
}

void Rows::Free::operator()(pg_result* r) const { PQclear(r); }

size_t Rows::size() const { return static_cast<size_t>(PQntuples(result_.get())); }

bool Rows::is_null(size_t row, int column) const {
  return PQgetisnull(result_.get(), static_cast<int>(row), column) != 0;
}

std::string Rows::text(size_t row, int column) const {
  const int r = static_cast<int>(row);
  return std::string(PQgetvalue(result_.get(), r, column),
                     static_cast<size_t>(PQgetlength(result_.get(), r, column)));
}

int64_t Rows::integer(size_t row, int column) const {
  return std::strtoll(PQgetvalue(result_.get(), static_cast<int>(row), column), nullptr, 10);
}

std::string Rows::bytes(size_t row, int column) const {
  size_t n = 0;
  unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(
                                           result_.get(), static_cast<int>(row), column)),
                                       &n);
  if (raw == nullptr) return {};
  std::string out(reinterpret_cast<const char*>(raw), n);
  PQfreemem(raw);
  return out;
}

uint64_t Rows::affected() const {
  const char* n = PQcmdTuples(result_.get());
  return n != nullptr && *n != '\0' ? std::strtoull(n, nullptr, 10) : 0;
}

void Connection::Free::operator()(pg_conn* c) const { PQfinish(c); }

Result<Connection> Connection::open(const std::string& uri) {
  // The URI first, then what doppeld insists on: synchronous commits (see pg.h), a bounded
  // connect, and a name in pg_stat_activity.
  const char* keys[] = {"dbname", "options", "connect_timeout", "application_name", nullptr};
  const char* values[] = {uri.c_str(), "-c synchronous_commit=on", "10", "doppeld", nullptr};
  pg_conn* c = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (c == nullptr) return Status(StatusCode::kUnavailable, "PostgreSQL: out of memory");
  Connection conn(c);
  if (PQstatus(c) != CONNECTION_OK) {
    return Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c)));
  }
  // The server's notices ("already exists, skipping") are not doppeld's to print.
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  return conn;
}

bool Connection::ok() const { return PQstatus(conn_.get()) == CONNECTION_OK; }

Result<bool> Connection::wait_notification(int timeout_ms) {
  pg_conn* c = conn_.get();
  auto take = [c] {
    bool any = false;
    while (PGnotify* n = PQnotifies(c)) {
      any = true;
      PQfreemem(n);
    }
    return any;
  };
  auto gone = [c] {
    return Status(StatusCode::kUnavailable,
                  std::string("PostgreSQL connection lost while listening: ") + PQerrorMessage(c));
  };
  if (PQconsumeInput(c) == 0) return gone();
  if (take()) return true;
  pollfd pfd{PQsocket(c), POLLIN, 0};
  if (pfd.fd < 0) return gone();
  const int ready = ::poll(&pfd, 1, timeout_ms);
  if (ready <= 0) return false;  // timed out (or interrupted: the caller asks again)
  if (PQconsumeInput(c) == 0) return gone();
  return take();
}

struct Connection::Prepared {
  std::unordered_map<std::string, std::string> names;  // SQL text -> statement name
  size_t max = 0;
  uint64_t made = 0;  // statement names are never reused on a connection
};

void Connection::FreePrepared::operator()(Prepared* p) const { delete p; }

void Connection::prepare_statements(size_t max) {
  if (!prepared_) prepared_.reset(new Prepared);
  prepared_->max = max;
}

size_t Connection::prepared_statements() const { return prepared_ ? prepared_->names.size() : 0; }

std::string Connection::name_for(const std::string& sql, const Params& params, bool& fresh) {
  fresh = false;
  if (!prepared_ || params.size() == 0) return {};
  auto& names = prepared_->names;
  if (auto it = names.find(sql); it != names.end()) return it->second;
  if (names.size() >= prepared_->max) return {};
  fresh = true;
  std::string name = "doppel_" + std::to_string(++prepared_->made);
  // Taken at once, so that the same text later in one pipeline runs by this name; a prepare
  // that fails gives it back (pipeline, exec).
  names.emplace(sql, name);
  return name;
}

void Connection::forget_if_lost(const pg_result* r) {
  // 26000, invalid_sql_statement_name: the server no longer has a statement this connection
  // prepared (DEALLOCATE ALL, DISCARD ALL, a pooler that switched server connections). Forgotten
  // all, they are prepared again on their next use instead of failing every time.
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  if (prepared_ && state != nullptr && std::string_view(state) == "26000") {
    prepared_->names.clear();
  }
}

Result<Rows> Connection::exec(const std::string& sql, const Params& params) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  for (const auto& v : params.values_) {
    values.push_back(v ? v->data() : nullptr);
    lengths.push_back(v ? static_cast<int>(v->size()) : 0);
  }
  pg_conn* c = conn_.get();
  bool fresh = false;
  const std::string name = name_for(sql, params, fresh);
  Rows rows;
  if (fresh) {
    rows.result_.reset(
        PQprepare(c, name.c_str(), sql.c_str(), static_cast<int>(values.size()), nullptr));
    Status st = rows.result_ == nullptr
                    ? Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c)))
                    : status_of(rows.result_.get(), c);
    if (!st) {
      prepared_->names.erase(sql);
      return st;
    }
  }
  rows.result_.reset(
      name.empty()
          ? PQexecParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                         lengths.data(), params.binary_.data(), /*resultFormat=*/0)
          : PQexecPrepared(c, name.c_str(), static_cast<int>(values.size()), values.data(),
                           lengths.data(), params.binary_.data(), /*resultFormat=*/0));
  if (rows.result_ == nullptr) {
    return Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c)));
  }
  Status st = status_of(rows.result_.get(), c);
  if (!st) {
    forget_if_lost(rows.result_.get());
    return st;
  }
  return rows;
}

std::vector<Rows> Connection::pipeline(const std::vector<Statement>& statements) {
  pg_conn* c = conn_.get();
  if (PQenterPipelineMode(c) != 1) {
    throw Failure(Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c))));
  }
  // Leaves pipeline mode however this ends; on a failure, what is left to read is drained first.
  struct Leave {
    pg_conn* c;
    ~Leave() {
      if (PQexitPipelineMode(c) == 1) return;
      for (int spins = 0; spins < 1000 && PQpipelineStatus(c) != PQ_PIPELINE_OFF; ++spins) {
        PGresult* r = PQgetResult(c);
        if (r == nullptr && PQstatus(c) != CONNECTION_OK) break;
        PQclear(r);
        PQexitPipelineMode(c);
      }
    }
  } leave{c};
  // Statements prepared by this pipeline, until their prepare is seen to succeed: any left when
  // it ends (a failure, a lost connection) are forgotten, to be prepared again next time.
  struct Fresh {
    Prepared* prepared;
    std::vector<const std::string*> unconfirmed;
    ~Fresh() {
      for (const std::string* sql : unconfirmed) {
        if (sql != nullptr) prepared->names.erase(*sql);
      }
    }
  } fresh_ones{prepared_.get(), {}};
  // What the server answers, in order: for each statement, its prepare's result first if it
  // has one (the index into fresh_ones.unconfirmed), then its own.
  std::vector<std::optional<size_t>> prepares(statements.size());
  for (size_t i = 0; i < statements.size(); ++i) {
    const Statement& st = statements[i];
    std::vector<const char*> values;
    std::vector<int> lengths;
    for (const auto& v : st.params.values_) {
      values.push_back(v ? v->data() : nullptr);
      lengths.push_back(v ? static_cast<int>(v->size()) : 0);
    }
    bool fresh = false;
    const std::string name = name_for(st.sql, st.params, fresh);
    if (fresh) {
      prepares[i] = fresh_ones.unconfirmed.size();
      fresh_ones.unconfirmed.push_back(&st.sql);
      if (PQsendPrepare(c, name.c_str(), st.sql.c_str(), static_cast<int>(values.size()),
                        nullptr) != 1) {
        throw Failure(Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c))));
      }
    }
    const int sent =
        name.empty()
            ? PQsendQueryParams(c, st.sql.c_str(), static_cast<int>(values.size()), nullptr,
                                values.data(), lengths.data(), st.params.binary_.data(), 0)
            : PQsendQueryPrepared(c, name.c_str(), static_cast<int>(values.size()), values.data(),
                                  lengths.data(), st.params.binary_.data(), 0);
    if (sent != 1) throw Failure(Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c))));
  }
  if (PQpipelineSync(c) != 1) {
    throw Failure(Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c))));
  }
  std::vector<Rows> out(statements.size());
  std::optional<Status> failed;
  // One result, then the NULL that ends it; a failure is kept (the first one) unless the
  // pipeline was already aborted by an earlier one.
  auto next = [&]() -> PGresult* {
    PGresult* r = PQgetResult(c);
    if (r == nullptr) {
      throw Failure(Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c))));
    }
    while (PGresult* extra = PQgetResult(c)) PQclear(extra);
    if (!failed && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) {
      if (Status st = status_of(r, c); !st) {
        failed = st;
        forget_if_lost(r);
      }
    }
    return r;
  };
  for (size_t i = 0; i < statements.size(); ++i) {
    if (prepares[i]) {
      PGresult* r = next();
      if (PQresultStatus(r) == PGRES_COMMAND_OK) fresh_ones.unconfirmed[*prepares[i]] = nullptr;
      PQclear(r);
    }
    out[i].result_.reset(next());
  }
  // The sync's own result.
  PGresult* sync = PQgetResult(c);
  const bool synced = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
  PQclear(sync);
  if (failed) throw Failure(*failed);
  if (!synced) throw Failure(Status(StatusCode::kUnavailable, explain("", PQerrorMessage(c))));
  return out;
}

Rows Connection::must(const std::string& sql, const Params& params) {
  auto rows = exec(sql, params);
  if (!rows) throw Failure(rows.status());
  return std::move(*rows);
}

Status Connection::exec_script(const std::string& sql) {
  Rows rows;
  rows.result_.reset(PQexec(conn_.get(), sql.c_str()));
  if (rows.result_ == nullptr) {
    return Status(StatusCode::kUnavailable, explain("", PQerrorMessage(conn_.get())));
  }
  const ExecStatusType st = PQresultStatus(rows.result_.get());
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Status::ok();
  const char* state = PQresultErrorField(rows.result_.get(), PG_DIAG_SQLSTATE);
  return Status(StatusCode::kUnavailable,
                explain(state != nullptr ? state : "", PQresultErrorMessage(rows.result_.get())));
}

}  // namespace doppel::storage::pg
