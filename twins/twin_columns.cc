#include "twins/twin_columns.h"

namespace doppel::twins {
namespace {

using Type = QueryField::Type;

std::optional<json> number(uint64_t v) { return json(v); }
std::optional<json> number(int64_t v) { return json(v); }

constexpr TwinColumn kColumns[] = {
    {"id", "id", Type::kText, false, [](const TwinRecord& r) { return std::optional(json(r.id)); }},
    {"version", "version", Type::kNumber, false,
     [](const TwinRecord& r) { return number(r.version); }},
    {"desired_version", "desired_version", Type::kNumber, false,
     [](const TwinRecord& r) { return number(r.desired_version); }},
    {"reported_version", "reported_version", Type::kNumber, false,
     [](const TwinRecord& r) { return number(r.reported_version); }},
    {"created_at", "created_at", Type::kNumber, false,
     [](const TwinRecord& r) { return number(r.created_at); }},
    {"updated_at", "updated_at", Type::kNumber, false,
     [](const TwinRecord& r) { return number(r.updated_at); }},
    {"liveness.state", "liveness", Type::kText, false,
     [](const TwinRecord& r) { return std::optional(json(r.liveness)); }},
    {"liveness.last_seen", "last_seen", Type::kNumber, true,
     [](const TwinRecord& r) {
       return r.last_seen ? number(*r.last_seen) : std::optional<json>();
     }},
    {"connection.state", "connection", Type::kText, false,
     [](const TwinRecord& r) { return std::optional(json(r.connection)); }},
    {"reconcile.state", "reconcile", Type::kText, false,
     [](const TwinRecord& r) { return std::optional(json(r.reconcile)); }},
    {"reconcile.attempts", "reconcile_attempts", Type::kNumber, false,
     [](const TwinRecord& r) { return number(uint64_t{r.reconcile_attempts}); }},
    {"commands.queued", "commands_queued", Type::kNumber, false,
     [](const TwinRecord& r) { return number(r.commands_queued); }},
    {"commands.sent", "commands_sent", Type::kNumber, false,
     [](const TwinRecord& r) { return number(r.commands_sent); }},
    {"device.encoding", "encoding", Type::kText, false,
     [](const TwinRecord& r) { return std::optional(json(r.encoding)); }},
    {"device.dialect", "dialect", Type::kText, false,
     [](const TwinRecord& r) { return std::optional(json(r.dialect)); }},
};

}  // namespace

std::span<const TwinColumn> twin_columns() { return kColumns; }

const TwinColumn* find_twin_column(std::string_view field) {
  for (const TwinColumn& c : kColumns) {
    if (c.field == field) return &c;
  }
  return nullptr;
}

std::string_view field_column(const QueryField& f) {
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
  const TwinColumn* c = find_twin_column(f.name);
  return c != nullptr ? c->column : "NULL";
}

bool field_nullable(const QueryField& f) {
  const TwinColumn* c = find_twin_column(f.name);
  return f.doc != QueryField::Doc::kNone || c == nullptr || c->nullable;
}

}  // namespace doppel::twins
