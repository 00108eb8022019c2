// GET /v1/debug/ticks: a small event stream (Server-Sent Events) that exercises the streaming
// primitive end to end — both ways a producer can meet a client: at the client's pace (the next
// tick once the previous one has drained) or at a fixed rate (a slow client is then cut off at
// --http-stream-buffer-bytes). The tests use it; an operator can use it to check that a proxy
// passes streams through unbuffered.
#include <chrono>

#include "gateway/api_handlers.h"

namespace doppel::gateway {
namespace {

struct TickOptions {
  std::chrono::milliseconds interval{1000};
  size_t count = 0;  // 0: until the client goes away
  size_t pad_bytes = 0;
  bool fixed_pace = false;
};

class Ticker : public std::enable_shared_from_this<Ticker> {
 public:
  Ticker(std::shared_ptr<HttpStream> stream, TickOptions o)
      : stream_(std::move(stream)), o_(o), pad_(o.pad_bytes, 'x') {}

  void tick() {
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    const std::string data = "{\"n\":" + std::to_string(n_) + ",\"at_ms\":" + std::to_string(now) +
                             (pad_.empty() ? std::string() : ",\"pad\":\"" + pad_ + "\"") + "}";
    if (!stream_->write("id: " + std::to_string(n_) + "\nevent: tick\ndata: " + data + "\n\n")) {
      return;  // over (or this write passed the bound: the client is being cut off)
    }
    if (++n_ == o_.count) return stream_->end();
    auto self = shared_from_this();
    if (o_.fixed_pace) {
      stream_->after(o_.interval, [self] { self->tick(); });
    } else {
      stream_->on_drain(
          [self] { self->stream_->after(self->o_.interval, [self] { self->tick(); }); });
    }
  }

 private:
  std::shared_ptr<HttpStream> stream_;
  const TickOptions o_;
  const std::string pad_;
  size_t n_ = 0;
};

void ticks(const ExchangePtr& x) {
  TickOptions o;
  if (auto v = x->req.param("interval_ms")) {
    auto ms = parse_size(*v, 0, 60'000);
    if (!ms) return x->problem(400, "invalid_argument", "interval_ms must be 0 to 60000");
    o.interval = std::chrono::milliseconds(*ms);
  }
  if (auto v = x->req.param("count")) {
    auto n = parse_size(*v, 0, 1'000'000);
    if (!n) return x->problem(400, "invalid_argument", "count must be 0 (unbounded) to 1000000");
    o.count = *n;
  }
  if (auto v = x->req.param("bytes")) {
    auto n = parse_size(*v, 0, 65'536);
    if (!n) return x->problem(400, "invalid_argument", "bytes (padding) must be 0 to 65536");
    o.pad_bytes = *n;
  }
  if (auto v = x->req.param("pace")) {
    if (*v != "client" && *v != "fixed") {
      return x->problem(400, "invalid_argument", "pace must be client or fixed");
    }
    o.fixed_pace = *v == "fixed";
  }
  if (o.fixed_pace && o.interval.count() == 0) {
    return x->problem(400, "invalid_argument", "pace=fixed needs interval_ms of at least 1");
  }
  HttpResponse r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("X-Accel-Buffering", "no");  // proxies: do not buffer the stream
  r.stream = [o](std::shared_ptr<HttpStream> stream) {
    std::make_shared<Ticker>(std::move(stream), o)->tick();
  };
  x->send(std::move(r));
}

}  // namespace

void add_debug_routes(Router& router, const ApiContext* /*ctx*/) {
  router.add("GET", "/v1/debug/ticks", ticks);
}

}  // namespace doppel::gateway
