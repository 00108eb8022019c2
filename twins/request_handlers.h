// RequestHandlers: the operator requests a shard runs against one twin (DESIGN §5, §6). Each
// validates, changes the twin through TwinLogic, and replies once the change is committed — or
// at once with an error, having changed nothing (a twin a refused request would have created is
// not kept).
//
// Thread-safety: called only on the shard thread that owns the twin.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "twins/hot_set.h"
#include "twins/ports.h"
#include "twins/requests.h"
#include "twins/runtime_stats.h"
#include "twins/twin_logic.h"

namespace doppel::twins {

// Where a request's answer goes: send() delivers it once (on whatever thread answers: the shard,
// or the store's writer after a commit); a second answer is dropped and send() returns false.
class Reply {
 public:
  explicit Reply(std::function<void(ApiReply)> deliver) : deliver_(std::move(deliver)) {}
  bool send(ApiReply r) {
    if (sent_.exchange(true)) return false;
    deliver_(std::move(r));
    return true;
  }

 private:
  std::function<void(ApiReply)> deliver_;
  std::atomic<bool> sent_{false};
};
using ReplyPromise = std::shared_ptr<Reply>;

// What the handlers need of their shard.
class TwinHost {
 public:
  virtual ~TwinHost() = default;
  virtual Millis now() const = 0;
  // Holds a twin a request just created.
  virtual HotTwin* adopt(Twin twin) = 0;
  // Persists what `out` changed, arms the twin's next deadline, and runs `after` once committed.
  virtual void commit(HotTwin& h, Outcome& out, CommitCallback after) = 0;
  // Deletes the twin (a tombstone until committed), then runs `after`.
  virtual void remove(HotTwin& h, const Cause& cause, CommitCallback after) = 0;
};

class RequestHandlers {
 public:
  RequestHandlers(const TwinLogic& logic, RuntimeStats& stats, bool auto_provision, TwinHost& host);

  // Runs `request` against twin `id` (`h`: in memory, or nullptr when it does not exist) and
  // fulfils `reply` exactly once.
  // `cause` goes on the change events.
  void run(const std::string& id, ApiRequest& request, HotTwin* h, const ReplyPromise& reply,
           const Cause& cause);

 private:
  // Runs `step` on the twin (or, when `may_create`, on a new one that is kept only if the step
  // succeeds); replies with the step's answer once its changes are committed, or with its error
  // at once (nothing changed).
  using Step = std::function<Result<ApiReply>(Twin& twin, Millis now, Outcome& out)>;
  void mutate(const std::string& id, HotTwin* h, bool may_create, const ReplyPromise& reply,
              const Cause& cause, const Step& step);
  void reply_after_commit(HotTwin& h, Outcome& out, const ReplyPromise& reply, ApiReply r);
  void get(const std::string& id, HotTwin* h, const ReplyPromise& reply);
  void remove(const std::string& id, HotTwin* h, const ReplyPromise& reply, const Cause& cause);
  void list_commands(const std::string& id, HotTwin* h, const ListCommands& req,
                     const ReplyPromise& reply);
  void command(const std::string& id, HotTwin* h, const std::string& command_id, bool cancel,
               const ReplyPromise& reply, const Cause& cause);
  json document(const Twin& twin) const;

  const TwinLogic& logic_;
  RuntimeStats& stats_;
  const bool auto_provision_;
  TwinHost& host_;
};

}  // namespace doppel::twins
