// The change feed and a twin's history (README, "Change feed"):
//   GET /v1/events                 a JSON page, or with Accept: text/event-stream a stream of
//                                  Server-Sent Events that resumes after Last-Event-ID
//   GET /v1/twins/{id}/history     one twin's events, oldest first, paged
// A stream subscriber reads the events table at its own pace: the next page once the client has
// drained the previous one, parked on the FeedHub when it has everything. Store reads run on the
// blocking pool, never on a network thread.
#include <atomic>

#include "gateway/api_handlers.h"
#include "gateway/feed.h"
#include "twins/log.h"

namespace doppel::gateway {
namespace {

constexpr size_t kStreamPage = 256;
constexpr std::chrono::seconds kHeartbeat{15};

std::string sse_frame(const twins::EventRecord& e) {
  return "id: " + std::to_string(e.seq) + "\nevent: " + e.kind +
         "\ndata: " + twins::to_text(twins::event_json(e)) + "\n\n";
}

// Events the cap on reported events removed from inside the retained range (README, "Change
// feed"): a JSON page lists them under "gaps", a stream sends each as an `event: gap` frame
// (without an id, so a reconnect resumes after the last real event).
twins::json gap_json(const twins::EventGap& g) {
  return {{"from_seq", g.from_seq},
          {"to_seq", g.to_seq},
          {"removed", g.count},
          {"kind", g.kind},
          {"reason", "history_max_reported_events"}};
}

// The filters of a feed request (twin=, kind=, repeatable); false: a 400 was sent.
bool parse_filters(const ApiContext& ctx, Exchange& x, twins::EventQuery& q) {
  q.filter.twins = x.req.params("twin");
  for (const auto& t : q.filter.twins) {
    if (!twins::valid_device_id(t, ctx.limits())) {
      x.problem(400, "invalid_argument", "twin='" + t + "' is not a valid twin id");
      return false;
    }
  }
  q.filter.kinds = x.req.params("kind");
  for (const auto& k : q.filter.kinds) {
    if (k.empty() || k.size() > 64) {
      x.problem(400, "invalid_argument",
                "kind must be an event kind (desired.updated) or a prefix ending in .* "
                "(command.*)");
      return false;
    }
  }
  if (q.filter.twins.size() > 100 || q.filter.kinds.size() > 20) {
    x.problem(400, "invalid_argument", "at most 100 twin= and 20 kind= filters");
    return false;
  }
  return true;
}

// Whether resuming after `after_seq` misses events that retention removed; if so, the oldest
// retained seq (or the next to be assigned, when none is retained).
std::optional<uint64_t> pruned_past(const twins::EventBounds& b, uint64_t after_seq) {
  const uint64_t oldest = b.oldest != 0 ? b.oldest : b.last_assigned + 1;
  if (after_seq + 1 < oldest) return oldest;
  return std::nullopt;
}

void gone(Exchange& x, uint64_t oldest) {
  x.problem(410, "gone",
            "events up to seq " + std::to_string(oldest - 1) +
                " were removed by retention (--history-retention-s); the feed starts after seq " +
                std::to_string(oldest - 1) + ": resume with after_seq=" +
                std::to_string(oldest - 1) + " or less often than the retention");
}

// One stream subscriber.
class Subscription : public std::enable_shared_from_this<Subscription> {
 public:
  Subscription(const ApiContext& ctx, std::shared_ptr<HttpStream> stream, twins::EventQuery q)
      : ctx_(ctx), stream_(std::move(stream)), q_(std::move(q)) {
    q_.limit = kStreamPage;
  }

  void start() {
    std::weak_ptr<Subscription> weak = weak_from_this();
    wake_ = std::make_shared<std::function<void()>>([weak] {
      if (auto self = weak.lock()) {
        self->woken_at_.store(Clock::now().time_since_epoch().count());
        self->pull();
      }
    });
    // Alive while its heartbeat timer or a pending read holds it; parked, the hub holds only a
    // weak reference to `wake_`, so a stream that ends frees its subscription.
    heartbeat();
    pull();
  }

 private:
  void heartbeat() {
    stream_->after(kHeartbeat, [self = shared_from_this()] {
      self->stream_->write(": heartbeat\n\n");
      self->heartbeat();
    });
  }

  void pull() {
    if (fetching_.exchange(true)) {
      again_ = true;  // the running fetch looks once more
      return;
    }
    ctx_.server->run_blocking([self = shared_from_this()] { self->fetch(); });
  }

  // On the blocking pool: one page, written to the stream; then wait for the client to drain it,
  // or park until the next commit.
  void fetch() {
    again_ = false;
    // A read that a commit woke: how long the wake took, and then the write (feed_wake,
    // feed_write). Reads that follow a drain or start the stream are not a commit's.
    const Clock::time_point started = Clock::now();
    const bool woken = observe_since(ctx_.feed->wake_stage(), woken_at_.exchange(0), started);
    if (stream_->closed()) return done();
    if (stream_->room() < ctx_.stream_buffer_bytes / 2) {
      done();
      return stream_->on_drain([self = shared_from_this()] { self->pull(); });
    }
    auto page = ctx_.store->events(q_);
    // Read from the table (not the recent tail): the position may have been pruned.
    auto bounds = page && page->from_tail ? Result<twins::EventBounds>(twins::EventBounds{})
                                          : ctx_.store->event_bounds();
    if (bounds && page && !page->from_tail) {
      if (auto oldest = pruned_past(*bounds, q_.after_seq)) {
        // Fell behind retention: say where the feed starts now, and end.
        stream_->write(
            "event: overflow\ndata: " +
            twins::to_text(twins::json{{"oldest_seq", *oldest}, {"after_seq", q_.after_seq}}) +
            "\n\n");
        stream_->end();
        return done();
      }
    }
    if (!bounds || !page) {
      const Status& s = !bounds ? bounds.status() : page.status();
      log_warn("feed: reading events failed: " + s.to_string() + "; ending a stream");
      stream_->write("event: error\ndata: " + twins::to_text(twins::json{{"detail", s.message()}}) +
                     "\n\n");
      stream_->end();
      return done();
    }
    // Gaps first: the reader learns that events after its position were removed before it
    // reads past them.
    for (const auto& g : page->gaps) {
      if (!stream_->write("event: gap\ndata: " + twins::to_text(gap_json(g)) + "\n\n")) {
        return done();
      }
    }
    // As much of the page as the client has room for; the rest is read again after it drains
    // (the stream bound is never passed by the feed itself).
    bool full = false;
    for (const auto& e : page->events) {
      std::string frame = sse_frame(e);
      // (An event larger than the whole bound goes out alone, once nothing else is unsent.)
      const size_t room = stream_->room();
      if (frame.size() > room && room < ctx_.stream_buffer_bytes) {
        full = true;
        break;
      }
      if (!stream_->write(std::move(frame))) return done();
      q_.after_seq = e.seq;
    }
    if (!full) q_.after_seq = std::max(q_.after_seq, page->scanned_to);
    if (full || !page->events.empty() || page->scanned_to < ctx_.store->last_event_seq()) {
      done();
      // The next page once this one is on its way: the client sets the pace.
      const int64_t write_from =
          woken && !page->events.empty() ? started.time_since_epoch().count() : 0;
      return stream_->on_drain([self = shared_from_this(), write_from] {
        observe_since(self->ctx_.feed->write_stage(), write_from, Clock::now());
        self->pull();
      });
    }
    // Caught up: park first, then look again, so a commit in between is not missed. (After
    // done() another fetch may run: only locals from here on.)
    ctx_.feed->park(wake_, q_.filter);
    const uint64_t position = q_.after_seq;
    done();
    if (again_.load() || ctx_.store->last_event_seq() > position) pull();
  }

  void done() { fetching_ = false; }

  using Clock = std::chrono::steady_clock;
  // Observes `now` - `from` (a Clock count; 0: nothing to observe) in `stage`, if any; whether
  // there was something to observe.
  static bool observe_since(Histogram* stage, int64_t from, Clock::time_point now) {
    if (from == 0) return false;
    if (stage != nullptr) {
      stage->observe(
          std::chrono::duration<double>(now - Clock::time_point(Clock::duration(from))).count());
    }
    return true;
  }

  const ApiContext& ctx_;
  std::shared_ptr<HttpStream> stream_;
  twins::EventQuery q_;  // the position (after_seq) and filters; fetch() only
  std::shared_ptr<std::function<void()>> wake_;  // set by start(), then only read
  std::atomic<bool> fetching_{false};
  std::atomic<bool> again_{false};
  std::atomic<int64_t> woken_at_{0};  // when a commit woke it (a Clock count); 0: not since
};

void feed(const ApiContext& ctx, const ExchangePtr& x) {
  twins::EventQuery q;
  if (!parse_filters(ctx, *x, q)) return;
  const bool stream =
      x->req.header("Accept").value_or("").find("text/event-stream") != std::string::npos;
  std::optional<uint64_t> after;
  if (auto v = x->req.param("after_seq")) {
    after = parse_u64(*v);
    if (!after) {
      return x->problem(400, "invalid_argument",
                        "after_seq must be a seq (0 to 9223372036854775807)");
    }
  }
  if (auto id = x->req.header("Last-Event-ID"); id && stream) {
    auto v = parse_u64(*id);
    if (!v) return x->problem(400, "invalid_argument", "Last-Event-ID must be an event's seq");
    after = v;
  }
  // A position this feed never gave out (another gateway's, or a database restored from an older
  // backup) would silently skip whatever comes until the log reaches it.
  if (const uint64_t newest = ctx.store->last_event_seq(); after && *after > newest) {
    return x->problem(400, "invalid_argument",
                      "seq " + std::to_string(*after) + " is past the newest event (seq " +
                          std::to_string(newest) +
                          "); resume after a seq this feed returned, or omit it to start now");
  }
  if (!stream) {
    q.limit = 100;
    if (auto l = x->req.param("limit")) {
      auto v = parse_size(*l, 1, 1000);
      if (!v) return x->problem(400, "invalid_argument", "limit must be 1 to 1000");
      q.limit = *v;
    }
    q.after_seq = after.value_or(0);
    return ctx.server->run_blocking([&ctx, x, q, explicit_after = after.has_value()] {
      auto bounds = ctx.store->event_bounds();
      if (!bounds) return x->status(bounds.status());
      if (explicit_after) {
        if (auto oldest = pruned_past(*bounds, q.after_seq)) return gone(*x, *oldest);
      }
      auto page = ctx.store->events(q);
      if (!page) return x->status(page.status());
      twins::json events = twins::json::array();
      for (const auto& e : page->events) events.push_back(twins::event_json(e));
      twins::json body = {{"events", std::move(events)},
                          {"next_after_seq", std::max(q.after_seq, page->scanned_to)}};
      if (!page->gaps.empty()) {
        twins::json gaps = twins::json::array();
        for (const auto& g : page->gaps) gaps.push_back(gap_json(g));
        body["gaps"] = std::move(gaps);
      }
      x->json_body(200, body);
    });
  }
  // Without a position the stream starts at the next new event.
  q.after_seq = after.value_or(ctx.store->last_event_seq());
  HttpResponse r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("X-Accel-Buffering", "no");
  // Where the stream starts: a client that resumes from here after a drop misses nothing, even
  // if no event came before the drop (the console does).
  r.headers.emplace_back("Feed-Position", std::to_string(q.after_seq));
  r.stream = [&ctx, q](std::shared_ptr<HttpStream> s) {
    std::make_shared<Subscription>(ctx, std::move(s), q)->start();
  };
  x->send(std::move(r));
}

void history(const ApiContext& ctx, const ExchangePtr& x) {
  twins::EventQuery q;
  q.filter.twins = {x->segments[2]};
  q.limit = 100;
  uint64_t from = 0, to = UINT64_MAX;
  if (auto v = x->req.param("from_version")) {
    auto n = parse_size(*v, 0, 999'999'999);
    if (!n) return x->problem(400, "invalid_argument", "from_version must be a version");
    from = *n;
  }
  if (auto v = x->req.param("to_version")) {
    auto n = parse_size(*v, 0, 999'999'999);
    if (!n) return x->problem(400, "invalid_argument", "to_version must be a version");
    to = *n;
  }
  if (auto l = x->req.param("limit")) {
    auto v = parse_size(*l, 1, 1000);
    if (!v) return x->problem(400, "invalid_argument", "limit must be 1 to 1000");
    q.limit = *v;
  }
  if (auto c = x->req.param("cursor")) {
    auto v = parse_u64(*c);
    if (!v) {
      return x->problem(400, "invalid_argument",
                        "cursor must be the next_cursor of a previous page");
    }
    q.after_seq = *v;
  }
  ctx.server->run_blocking([&ctx, x, q, from, to]() mutable {
    twins::json events = twins::json::array();
    const size_t want = q.limit;
    q.limit = 1000;
    bool more = true;
    // Pages of the twin's events (every incarnation), keeping those in the version range; at
    // most ten pages per request, then the cursor says where to go on.
    for (int pages = 0; pages < 10 && more && events.size() < want; ++pages) {
      auto page = ctx.store->events(q);
      if (!page) return x->status(page.status());
      more = page->events.size() == q.limit;
      for (const auto& e : page->events) {
        q.after_seq = e.seq;
        if (e.version >= from && e.version <= to) events.push_back(twins::event_json(e));
        if (events.size() == want) {
          more = more || &e != &page->events.back();
          break;
        }
      }
    }
    x->json_body(
        200, {{"events", std::move(events)},
              {"next_cursor", more ? twins::json(std::to_string(q.after_seq)) : twins::json()}});
  });
}

}  // namespace

void add_event_routes(Router& router, const ApiContext* ctx) {
  router.add("GET", "/v1/events", [ctx](const ExchangePtr& x) { feed(*ctx, x); });
  router.add("GET", "/v1/twins/{id}/history", twin_route(ctx, history, /*store_read=*/true));
}

}  // namespace doppel::gateway
