#include "twins/request_handlers.h"

#include <type_traits>
#include <variant>

#include "twins/explain.h"
#include "twins/jobs.h"
#include "twins/overloaded.h"

namespace doppel::twins {
namespace {

std::string etag_of(const Twin& twin) { return "\"" + std::to_string(twin.version) + "\""; }

Status not_found(const std::string& id) {
  return Status(StatusCode::kNotFound, "twin '" + id + "' does not exist");
}

// What a client is told when its change did not commit: retry later (kUnavailable), or, when
// this node no longer owns the twin, kFenced.
Status commit_failure(const Status& s, const std::string& what) {
  const StatusCode code =
      s.code() == StatusCode::kFenced ? StatusCode::kFenced : StatusCode::kUnavailable;
  return Status(code, what + " could not be committed: " + s.message());
}

}  // namespace

RequestHandlers::RequestHandlers(const TwinLogic& logic, RuntimeStats& stats, bool auto_provision,
                                 TwinHost& host)
    : logic_(logic), stats_(stats), auto_provision_(auto_provision), host_(host) {}

json RequestHandlers::document(const Twin& twin) const {
  return twin_document(twin, logic_.stale_after_ms(twin));
}

void RequestHandlers::run(const std::string& id, ApiRequest& request, HotTwin* h,
                          const ReplyPromise& reply, const Cause& cause) {
  std::visit(
      Overloaded{
          [&](GetTwin&) { get(id, h, reply); },
          [&](ExplainTwin&) {
            if (h == nullptr) return (void)reply->send(ApiReply{not_found(id)});
            Outcome none;
            reply_after_commit(
                *h, none, reply,
                ApiReply{Status::ok(), ReplyKind::kOk, explain(h->twin, logic_, host_.now())});
          },
          [&](ProvisionTwin& req) {
            const ReplyKind kind = h == nullptr ? ReplyKind::kCreated : ReplyKind::kOk;
            mutate(id, h, true, reply, cause,
                   [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
                     if (Status s = logic_.apply_settings(twin, req.settings, false, t, out); !s)
                       return s;
                     return ApiReply{Status::ok(), kind, document(twin), etag_of(twin)};
                   });
          },
          [&](PatchTwin& req) {
            mutate(id, h, false, reply, cause,
                   [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
                     if (Status s = logic_.apply_settings(twin, req.settings, true, t, out); !s)
                       return s;
                     return ApiReply{Status::ok(), ReplyKind::kOk, document(twin), etag_of(twin)};
                   });
          },
          [&](DeleteTwin&) { remove(id, h, reply, cause); },
          [&](UpdateDesired& req) {
            mutate(id, h, auto_provision_, reply, cause,
                   [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
                     if (Status s = logic_.update_desired(twin, req, t, out); !s) return s;
                     return ApiReply{Status::ok(), ReplyKind::kOk, document(twin), etag_of(twin)};
                   });
          },
          [&](EnqueueCommand& req) {
            mutate(id, h, auto_provision_, reply, cause,
                   [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
                     auto cmd = logic_.enqueue(twin, req.request, t, out);
                     if (!cmd) return cmd.status();
                     json body = {{"id", (*cmd)->id}, {"status", to_string((*cmd)->status)}};
                     return ApiReply{Status::ok(), ReplyKind::kAccepted, std::move(body)};
                   });
          },
          [&](ListCommands& req) { list_commands(id, h, req, reply); },
          [&](GetCommand& req) { command(id, h, req.command_id, false, reply, cause); },
          [&](CancelCommand& req) { command(id, h, req.command_id, true, reply, cause); },
          [&](RunJob& req) {
            mutate(id, h, false, reply, cause,
                   [&](Twin& twin, Millis t, Outcome& out) -> Result<ApiReply> {
                     logic_.run_job(twin, *req.spec, t, out);
                     return ApiReply{Status::ok(), ReplyKind::kAccepted};
                   });
          },
          [&](RecordCredentials& req) {
            mutate(id, h, false, reply, cause,
                   [&](Twin&, Millis, Outcome& out) -> Result<ApiReply> {
                     logic_.record_credentials(req.changes, out);
                     return ApiReply{Status::ok(), ReplyKind::kNoContent};
                   });
          },
      },
      request);
}

void RequestHandlers::reply_after_commit(HotTwin& h, Outcome& out, const ReplyPromise& reply,
                                         ApiReply r) {
  host_.commit(h, out, [reply, r = std::move(r)](const Status& s) mutable {
    if (s.is_ok()) {
      (void)reply->send(std::move(r));
    } else {
      (void)reply->send(ApiReply{commit_failure(s, "the change")});
    }
  });
}

void RequestHandlers::get(const std::string& id, HotTwin* h, const ReplyPromise& reply) {
  if (h == nullptr) return (void)reply->send(ApiReply{not_found(id)});
  Outcome none;
  reply_after_commit(*h, none, reply,
                     ApiReply{Status::ok(), ReplyKind::kOk, document(h->twin), etag_of(h->twin)});
}

void RequestHandlers::mutate(const std::string& id, HotTwin* h, bool may_create,
                             const ReplyPromise& reply, const Cause& cause, const Step& step) {
  if (h == nullptr && !may_create) return (void)reply->send(ApiReply{not_found(id)});
  const Millis t = host_.now();
  Outcome out;
  Twin fresh;
  Twin& twin = h != nullptr ? h->twin : (fresh = logic_.create(id, t, out));
  out.begin(twin, t, cause);
  auto answer = step(twin, t, out);
  if (!answer) return (void)reply->send(ApiReply{answer.status()});  // nothing changed
  if (h == nullptr) h = host_.adopt(std::move(fresh));
  reply_after_commit(*h, out, reply, std::move(*answer));
}

void RequestHandlers::remove(const std::string& id, HotTwin* h, const ReplyPromise& reply,
                             const Cause& cause) {
  if (h == nullptr) return (void)reply->send(ApiReply{not_found(id)});
  for (const auto& c : h->twin.commands) {
    if (!is_terminal(c.status)) stats_.unfinished[static_cast<size_t>(c.status)]->add(-1);
  }
  stats_.total->add(-1);
  host_.remove(*h, cause, [reply](const Status& s) {
    (void)reply->send(s.is_ok() ? ApiReply{Status::ok(), ReplyKind::kNoContent}
                                : ApiReply{commit_failure(s, "the delete")});
  });
}

void RequestHandlers::list_commands(const std::string& id, HotTwin* h, const ListCommands& req,
                                    const ReplyPromise& reply) {
  if (h == nullptr) return (void)reply->send(ApiReply{not_found(id)});
  json items = json::array();
  std::optional<uint64_t> last;
  bool more = false;
  for (const auto& c : h->twin.commands) {
    if (c.seq <= req.after_seq) continue;
    if (req.status && c.status != *req.status) continue;
    if (items.size() == req.limit) {
      more = true;
      break;
    }
    items.push_back(command_document(c));
    last = c.seq;
  }
  json body = {{"items", std::move(items)},
               {"next_cursor", more && last ? json(std::to_string(*last)) : json()}};
  Outcome none;
  reply_after_commit(*h, none, reply, ApiReply{Status::ok(), ReplyKind::kOk, body});
}

void RequestHandlers::command(const std::string& id, HotTwin* h, const std::string& command_id,
                              bool cancel, const ReplyPromise& reply, const Cause& cause) {
  if (h == nullptr) return (void)reply->send(ApiReply{not_found(id)});
  Outcome out;
  if (cancel) {
    out.begin(h->twin, host_.now(), cause);
    auto cancelled = logic_.cancel(h->twin, command_id, host_.now(), out);
    if (!cancelled) return (void)reply->send(ApiReply{cancelled.status()});
    return reply_after_commit(*h, out, reply,
                              ApiReply{Status::ok(), ReplyKind::kOk, std::move(*cancelled)});
  }
  const Command* c = find_command(h->twin, command_id);
  if (c == nullptr) {
    return (void)reply->send(ApiReply{
        Status(StatusCode::kNotFound, "twin '" + id + "' has no command '" + command_id + "'")});
  }
  reply_after_commit(*h, out, reply, ApiReply{Status::ok(), ReplyKind::kOk, command_document(*c)});
}

}  // namespace doppel::twins
