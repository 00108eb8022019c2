// StreamState: one streaming response's shared state, between the producer (an HttpStream,
// any thread) and its connection (the Session's strand). Its members that act on the connection
// are defined beside Session (detail/http_session.cc).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gateway/detail/http_server_impl.h"

namespace doppel::gateway {

// The shared state of one streaming response: what the producer queued and has not been sent,
// and its callbacks. The producer's side (HttpStream) locks `mu_`; the connection's side runs on
// the connection's strand.
class StreamState final : public HttpStream {
 public:
  StreamState(std::weak_ptr<Session> session, std::weak_ptr<HttpServer::Impl> server, size_t bound)
      : session_(std::move(session)), server_(std::move(server)), bound_(bound) {}

  bool write(std::string data) override;
  size_t room() const override {
    std::lock_guard lock(mu_);
    return over_ || ending_ ? 0 : bound_ - std::min(unsent_, bound_);
  }
  void on_drain(std::function<void()> then) override;
  void after(std::chrono::milliseconds delay, std::function<void()> then) override;
  void on_close(std::function<void(StreamEnd)> then) override {
    std::unique_lock lock(mu_);
    if (!finished_) {
      on_close_ = std::move(then);
      return;
    }
    const StreamEnd why = why_;
    lock.unlock();
    then(why);
  }
  void end() override { begin_end(StreamEnd::kEnded); }
  bool closed() const override {
    std::lock_guard lock(mu_);
    return over_ || ending_;
  }

  // ---- the connection's side (its strand) ----

  // Stops accepting writes; the connection sends what is queued, then the final chunk.
  void begin_end(StreamEnd why);
  // What to send next: the queued chunks, framed (empty: nothing queued). `last` is set when
  // the stream is ending and everything has been sent; `drained` gets the drain callbacks when
  // nothing is left to send.
  std::string take(size_t& data_bytes, bool& last, std::vector<std::function<void()>>& drained) {
    std::lock_guard lock(mu_);
    std::string out;
    data_bytes = 0;
    for (auto& piece : pending_) {
      if (piece.empty()) continue;  // an empty chunk would end the stream
      char size[24];
      std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
      out += size;
      out += piece;
      out += "\r\n";
      data_bytes += piece.size();
    }
    pending_.clear();
    if (out.empty() && unsent_ == 0) {
      if (ending_ && !over_) last = true;
      drained.swap(drain_);
    }
    return out;
  }
  void sent(size_t data_bytes) {
    std::lock_guard lock(mu_);
    unsent_ -= std::min(unsent_, data_bytes);
  }
  StreamEnd ending_reason() const {
    std::lock_guard lock(mu_);
    return ending_why_;
  }
  // Ends the stream: refuses further writes, drops pending callbacks and runs on_close once.
  // true the first time.
  bool finish(StreamEnd why, bool cancel_timers = true) {
    std::function<void(StreamEnd)> on_close;
    std::vector<std::function<void()>> drop;
    {
      std::lock_guard lock(mu_);
      if (finished_) return false;
      finished_ = true;
      over_ = true;
      why_ = why;
      on_close.swap(on_close_);
      drop.swap(drain_);
      pending_.clear();
    }
    if (cancel_timers) {
      for (auto& weak : timers_) {
        if (auto t = weak.lock()) t->cancel();
      }
    }
    timers_.clear();
    if (on_close) on_close(why);
    return true;
  }
  // The producer's pending after() timers (owned by their waits in the io_context).
  std::vector<std::weak_ptr<asio::steady_timer>>& timers() { return timers_; }

 private:
  // Runs `f` on the connection's strand, if the connection (and server) still exist.
  template <class F>
  void on_strand(F f);

  const std::weak_ptr<Session> session_;
  const std::weak_ptr<HttpServer::Impl> server_;
  const size_t bound_;
  mutable std::mutex mu_;
  std::vector<std::string> pending_;          // under mu_
  size_t unsent_ = 0;                         // under mu_: queued and not yet written, bytes
  bool ending_ = false;                       // under mu_: end() called, or shutdown
  StreamEnd ending_why_ = StreamEnd::kEnded;  // under mu_
  bool over_ = false;                         // under mu_: no more writes, ever
  bool finished_ = false;                     // under mu_: on_close has run (or is running)
  StreamEnd why_ = StreamEnd::kEnded;         // under mu_
  std::vector<std::function<void()>> drain_;  // under mu_
  std::function<void(StreamEnd)> on_close_;   // under mu_
  std::vector<std::weak_ptr<asio::steady_timer>> timers_;  // strand only
};

}  // namespace doppel::gateway
